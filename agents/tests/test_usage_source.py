"""The Source filter (shared gateway / VPC agent) on the usage and logs pages and the REST
usage API: agent rows land in the same table, told apart by source."""

import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing.models import UsageRecord
from conftest import SETUP
from gateway.services import api_key_create


@pytest.fixture
def mixed(org_a, agent_a):
    key, _ = api_key_create(actor=SETUP, org=org_a, name="backend")
    for hours in (0, 30):  # one recent pair, one old enough for the rollups
        UsageRecord.objects.create(
            id=uuid.uuid4(),
            org=org_a,
            key=key,
            model_requested="shared-model",
            status="success",
            cost=Decimal("1"),
            created_at=datetime.now(UTC) - timedelta(hours=hours, minutes=1),
        )
        r = agent_a.ingest(
            [
                {
                    "id": str(uuid.uuid4()),
                    "key_id": key.id,
                    "model_requested": "agent-model",
                    "status": "success",
                    "cost": 2,
                    "created_at": time.time() - hours * 3600 - 60,
                }
            ]
        )
        assert r.status_code == 200
    from billing.services import rollup_recent

    rollup_recent(now=datetime.now(UTC))


@pytest.mark.parametrize(
    ("source", "cost"), [("", "6"), ("vpc_agent", "4"), ("shared_gateway", "2")]
)
def test_rest_usage_filters_by_source(alice_client, mixed, source, cost):
    r = alice_client.get(f"/api/gateway/usage?org=acme&range=7d&source={source}")
    assert r.status_code == 200, r.content
    assert Decimal(str(r.json()["cost_usd"])) == Decimal(cost)


def test_rest_logs_filter_by_source(alice_client, mixed):
    rows = alice_client.get("/api/gateway/logs?org=acme&range=7d&source=vpc_agent").json()
    assert {r["source"] for r in rows["results"]} == {"vpc_agent"}
    assert {r["model_requested"] for r in rows["results"]} == {"agent-model"}


def test_the_logs_page_filters_by_source(bob_client, mixed):
    html = bob_client.get("/o/acme/logs/?range=7d&source=vpc_agent").content.decode()
    assert "agent-model" in html and "shared-model" not in html
    assert 'value="vpc_agent" selected' in html


def test_the_usage_page_offers_and_applies_the_filter(bob_client, mixed):
    r = bob_client.get("/o/acme/usage/?range=7d&source=shared_gateway")
    assert r.status_code == 200
    assert 'name="source"' in r.content.decode()


def test_an_unknown_source_is_a_clear_400(alice_client, mixed):
    r = alice_client.get("/api/gateway/usage?org=acme&source=moon")
    assert r.status_code == 400 and "vpc_agent" in r.content.decode()
