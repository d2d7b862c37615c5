"""Smart-routed requests with no top-tier price (their policy's top tier had no active
deployment: cost_top_tier is None) are in none of the savings figures; the Usage page,
the analytics API (``unpriced_requests``) and the digest say how many, where "on N
smart-routed requests" silently left them out."""

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core import mail

from billing.digest import weekly_digest_send
from billing.models import UsageRecord
from billing.selectors import smart_savings

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # a Monday
AT = NOW - timedelta(days=2)
PARAMS = {"since": (NOW - timedelta(days=7)).isoformat(), "until": NOW.isoformat()}


def _row(org, *, top, cost="0.00010000", status="success", endpoint="chat"):
    UsageRecord.objects.create(
        id=uuid.uuid4(),
        org=org,
        created_at=AT,
        endpoint=endpoint,
        model_requested="auto",
        model_used="lite",
        status=status,
        input_tokens=100,
        output_tokens=50,
        cost=Decimal(cost),
        cost_top_tier=None if top is None else Decimal(top),
        route_tier="lite",
        routing_policy="saver",
        route_classifier="rules",
        route_score=0.1,
    )


@pytest.fixture
def rows(org_a, org_b):
    _row(org_a, top="0.00200000")
    _row(org_a, top="0.00200000")
    for _ in range(3):
        _row(org_a, top=None)  # the top tier had no active deployment
    _row(org_a, top=None, cost="0", endpoint="count_tokens")  # costs nothing on any tier
    _row(org_a, top=None, cost="0", status="error")  # failed unbilled: costs nothing
    _row(org_b, top=None)  # another org's


def test_requests_without_a_top_tier_price_are_counted_apart(rows, org_a):
    s = smart_savings(org_a, NOW - timedelta(days=7), NOW)
    assert (s["requests"], s["unpriced_requests"]) == (2, 3)
    assert (s["cost_usd"], s["top_tier_cost_usd"], s["saved_usd"]) == (0.0002, 0.004, 0.0038)


def test_the_api_adds_the_count_and_keeps_its_fields(rows, alice_client):
    data = alice_client.get("/api/gateway/analytics", PARAMS).json()["smart_routing"]
    assert data["unpriced_requests"] == 3
    assert {"requests", "cost_usd", "top_tier_cost_usd", "saved_usd", "saved_pct"} <= set(data)
    assert {"by_day", "by_model", "by_policy", "by_classifier", "by_tier"} <= set(data)
    assert data["requests"] == 2


def test_the_usage_page_and_the_digest_say_how_many_are_left_out(rows, org_a, alice, alice_client):
    page = alice_client.get(f"/o/{org_a.slug}/usage/", PARAMS).content.decode()
    assert "on 2 smart-routed requests: they cost" in page
    assert "3 smart-routed requests have no top-tier price and are not in this figure" in page
    weekly_digest_send(org=org_a, now=NOW, base_url="https://bonito.example")
    [message] = [m for m in mail.outbox if alice.email in m.to]
    for text in (message.body, message.alternatives[0][0]):
        assert "3 smart-routed requests have no top-tier price and are not in this figure" in text


def test_only_unpriced_requests_still_show_the_section(org_a, alice_client):
    _row(org_a, top=None)
    page = alice_client.get(f"/o/{org_a.slug}/usage/", PARAMS).content.decode()
    assert 'id="smart-savings"' in page and "You saved" not in page
    assert "1 smart-routed request has no top-tier price and is not in any savings figure" in page
