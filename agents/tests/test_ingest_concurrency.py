"""The same batch sent twice at once (an agent's retry racing its first try) is written
once: both answers are the first answer."""

import gzip
import json
import threading
import uuid

import pytest
from django.db import connections

from agents import services
from agents.tests.conftest import AgentClient
from agents.tests.test_ingest import record
from billing.models import UsageRecord
from conftest import SETUP
from gateway.services import api_key_create

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_batch_raced_against_itself_is_written_once(org_a, settings):
    settings.KEY_HASH_SECRET = "agent-tests-key-hash-secret-0123456789"
    token = services.vpc_enable(actor=SETUP, org=org_a)
    key, _ = api_key_create(actor=SETUP, org=org_a, name="backend")
    records = [record(key) for _ in range(200)]
    body = gzip.compress(json.dumps({"batch_id": str(uuid.uuid4()), "records": records}).encode())
    answers, start = [], threading.Barrier(4)

    def send():
        agent = AgentClient(token)
        start.wait()
        try:
            r = agent.ingest_raw(body)
            answers.append((r.status_code, r.json()))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [status for status, _ in answers] == [200] * 4, answers
    assert {json.dumps(a, sort_keys=True) for _, a in answers} == {
        json.dumps(answers[0][1], sort_keys=True)
    }
    assert answers[0][1]["accepted"] == 200
    assert UsageRecord.objects.filter(org=org_a).count() == 200
