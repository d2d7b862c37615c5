"""The invitation sends limits count the audit log's invitation rows of the last hour, in the
database: a restart (the embedded default keeps its cache in process memory) or another
worker process, with or without Redis, starts from the same count, and two processes racing
for the last send cannot both have it. Each process here is a fresh Python, as after a
restart, sending through the REST API with Django's test client."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from orgs.models import AuditLog
from orgs.tests.invitations import rest_invite

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]
PER_USER = 3

# Sends each email as `user` in `org`, once the file `go` exists (so that several processes
# send at the same moment), and prints the answers' statuses.
SENDER = """
import json, os, sys, time
import django
django.setup()
from django.test.utils import setup_test_environment
setup_test_environment()  # the test host name, mail kept in memory
from bonito.celery import app
app.conf.task_always_eager = True  # the email task runs here: nothing left in a broker
from django.test import Client
from orgs.models import User
user, org, go, *emails = sys.argv[1:]
client = Client()
client.force_login(User.objects.get(email=user))
while not os.path.exists(go):
    time.sleep(0.01)
statuses = []
for email in emails:
    response = client.post(
        "/api/gateway/invitations", {"email": email, "role": "viewer"},
        content_type="application/json", headers={"x-bonito-org": org}, secure=True,
    )
    statuses.append(response.status_code)
print(json.dumps(statuses))
"""


def _database_url() -> str:
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    password = s["PASSWORD"] or ""
    host, port = s["HOST"] or "127.0.0.1", s["PORT"] or 5432
    return f"postgres://{s['USER']}:{password}@{host}:{port}/{s['NAME']}"


def _start(tmp_path, go, user, org, *emails):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bonito.settings",
        "DATABASE_URL": _database_url(),
        "INVITATION_SENDS_PER_USER_PER_HOUR": str(PER_USER),
        "INVITATION_SENDS_PER_ORG_PER_HOUR": "100",
    }
    return subprocess.Popen(
        [sys.executable, "-c", SENDER, user.email, org.slug, str(go), *emails],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _statuses(process) -> list[int]:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(autouse=True)
def _limits(settings):
    settings.INVITATION_SENDS_PER_USER_PER_HOUR = PER_USER
    settings.INVITATION_SENDS_PER_ORG_PER_HOUR = 100


def test_a_new_process_counts_what_the_others_sent(tmp_path, alice, alice_client, org_a):
    assert rest_invite(alice_client, org_a, "p0@acme.test").status_code == 201
    assert rest_invite(alice_client, org_a, "p1@acme.test").status_code == 201
    go = tmp_path / "go"
    go.touch()
    # A fresh process (a restart, another worker): alice's third send, then a refusal.
    statuses = _statuses(_start(tmp_path, go, alice, org_a, "p2@acme.test", "p3@acme.test"))
    assert statuses == [201, 429]
    # And this process counts the other's send.
    before = time.time()
    response = rest_invite(alice_client, org_a, "p4@acme.test")
    after = time.time()
    assert response.status_code == 429
    # The hour slides from the oldest send counted: it leaves the window first.
    oldest = AuditLog.objects.filter(action="invitation.create").order_by("created_at").first()
    free_at = oldest.created_at.timestamp() + 3600
    assert free_at - after <= int(response["Retry-After"]) <= free_at - before + 1
    sent = AuditLog.objects.filter(action="invitation.create", actor=alice).count()
    assert sent == PER_USER


def test_processes_racing_for_the_last_send_get_it_once(tmp_path, alice, alice_client, org_a):
    for n in range(PER_USER - 1):
        assert rest_invite(alice_client, org_a, f"p{n}@acme.test").status_code == 201
    go = tmp_path / "go"
    racers = [_start(tmp_path, go, alice, org_a, f"r{n}@acme.test") for n in range(3)]
    time.sleep(8)  # every racer has started Django and waits for the signal
    go.touch()
    statuses = sorted(s for racer in racers for s in _statuses(racer))
    assert statuses == [201, 429, 429], statuses
    assert AuditLog.objects.filter(action="invitation.create", actor=alice).count() == PER_USER
