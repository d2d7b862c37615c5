"""POST /v1/feedback calls are usage rows (one per request with a valid key) but not model
calls: the Usage page, /api/gateway/usage and /api/gateway/analytics, the overview and the
weekly digest count them apart (``feedback_calls``), not among the requests, errors or
latency, whether the rows are read raw or from rollups. A tier's request allowance still
counts them, as the RPM limits do (docs/smart-routing.md)."""

import importlib
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing.digest import digest_context
from billing.models import RollupDirtyHour, UsageRecord, UsageRollup
from billing.selectors import usage_query
from billing.services import rollup_recent
from billing.spend import requests_grouped

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # a Monday
AT = NOW - timedelta(days=2, hours=5)


def _row(org, *, endpoint="chat", status="success", latency=800, model="lite", cost="0.001"):
    return UsageRecord.objects.create(
        id=uuid.uuid4(),
        org=org,
        created_at=AT,
        endpoint=endpoint,
        model_requested="" if endpoint == "feedback" else model,
        model_used="" if endpoint == "feedback" else model,
        status=status,
        http_status=200 if status == "success" else 404,
        latency_ms=latency,
        cost=Decimal(cost if endpoint != "feedback" else "0"),
    )


@pytest.fixture
def rows(org_a, org_b):
    for _ in range(3):
        _row(org_a)
    _row(org_a, status="error", latency=30_000)
    for _ in range(5):  # fast, and some of them 404s: not the model calls' latency or errors
        _row(org_a, endpoint="feedback", latency=2)
    _row(org_a, endpoint="feedback", status="rejected", latency=2)
    _row(org_b, endpoint="feedback", latency=2)


def _params():
    return {"since": (NOW - timedelta(days=7)).isoformat(), "until": NOW.isoformat()}


def _check(totals, latency):
    assert (totals["requests"], totals["errors"], totals["feedback_calls"]) == (4, 1, 6)
    assert totals["error_rate"] == 0.25
    assert latency["p50_ms"] > 250  # the model calls' (800 ms), not the feedback calls'


@pytest.mark.django_db
def test_feedback_calls_are_counted_apart_from_requests(rows, org_a):
    query = usage_query(org_a, _params())
    _check(query.totals(), query.latency())
    assert sum(b["requests"] for b in query.series()) == 4
    assert sum(m["requests"] for m in query.breakdown("model")) == 4


@pytest.mark.django_db
def test_they_are_counted_apart_in_rollups_too(rows, org_a):
    rollup_recent(now=NOW)
    query = usage_query(org_a, _params())
    assert query.rollup_parts and not any(qs.exists() for qs in query.raw_parts)
    _check(query.totals(), query.latency())
    assert UsageRollup.objects.filter(org=org_a, feedback=True, period="hour").count() == 1


@pytest.mark.django_db
def test_the_api_and_the_usage_page_say_so_and_outsiders_see_none(
    rows, org_a, org_b, alice_client, charlie_client
):
    for path in ("/api/gateway/usage", "/api/gateway/analytics"):
        data = alice_client.get(path, _params()).json()
        body = data.get("totals", data)
        assert (body["requests"], body["feedback_calls"]) == (4, 6)
        theirs = charlie_client.get(path, _params()).json()
        theirs = theirs.get("totals", theirs)
        assert (theirs["requests"], theirs["feedback_calls"]) == (0, 1)
    page = alice_client.get(f"/o/{org_a.slug}/usage/", _params()).content.decode()
    assert "6 feedback calls" in page
    assert charlie_client.get(f"/o/{org_a.slug}/usage/").status_code == 404


@pytest.mark.django_db
def test_the_digest_counts_requests_without_feedback_calls(rows, org_a):
    assert digest_context(org_a, NOW)["week"]["requests"] == 4
    rollup_recent(now=NOW)
    assert digest_context(org_a, NOW)["week"]["requests"] == 4


@pytest.mark.django_db
def test_a_tiers_request_allowance_still_counts_them(rows, org_a):
    since = NOW - timedelta(days=7)
    assert requests_grouped(since, NOW, org_ids=[org_a.id])[(org_a.id,)] == 9
    rollup_recent(now=NOW)
    assert requests_grouped(since, NOW, org_ids=[org_a.id])[(org_a.id,)] == 9


@pytest.mark.django_db
def test_the_migration_has_rollups_made_before_it_recomputed(rows, org_a):
    """Rollups made before the column mixed feedback calls into the requests: the
    migration marks the hours that had feedback rows, and the next rollup run splits them."""
    from django.apps import apps

    migration = importlib.import_module("billing.migrations.0019_rollup_feedback")
    rollup_recent(now=NOW)
    UsageRollup.objects.filter(feedback=True).update(feedback=False)  # as made before
    RollupDirtyHour.objects.all().delete()
    assert usage_query(org_a, _params()).totals()["requests"] == 10
    migration.mark_hours_with_feedback(apps, None)
    rollup_recent(now=NOW)
    _check(usage_query(org_a, _params()).totals(), usage_query(org_a, _params()).latency())


@pytest.mark.django_db
def test_the_digest_s_smart_line_reads_right_for_one_request(org_a, alice):
    from django.core import mail

    from billing.digest import weekly_digest_send

    UsageRecord.objects.create(
        id=uuid.uuid4(),
        org=org_a,
        created_at=AT,
        endpoint="chat",
        model_requested="auto",
        model_used="lite",
        status="success",
        cost=Decimal("0.001"),
        cost_top_tier=Decimal("0.02"),
        route_tier="lite",
        route_classifier="rules",
        route_score=0.1,
    )
    weekly_digest_send(org=org_a, now=NOW, base_url="https://bonito.example")
    [message] = [m for m in mail.outbox if alice.email in m.to]
    assert "this week: 1 request cost $0.001;" in message.body
    assert "this week: 1 request cost $0.001;" in message.alternatives[0][0]
