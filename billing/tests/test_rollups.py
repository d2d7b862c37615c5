"""Usage rollups: exact, idempotent, rebuilt by the backfill command and the Celery task."""

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Sum

from billing.models import UsageRecord, UsageRollup
from billing.services import rollup_window
from gateway import services as gateway_services
from gateway.tests.conftest import ACTOR

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def _row(org, at, key=None, model="chat", status="success", latency=100, cost="0.01"):
    return UsageRecord.objects.create(
        id=uuid.uuid4(),
        org=org,
        key=key,
        created_at=at,
        model_requested=model,
        model_used=model,
        provider="fake",
        status=status,
        input_tokens=10,
        output_tokens=5,
        cost=Decimal(cost),
        latency_ms=latency,
    )


@pytest.fixture
def traffic(org_a, org_b):
    key, _raw = gateway_services.api_key_create(actor=ACTOR, org=org_a, name="app")
    for minute in range(0, 120, 10):  # two hours of Acme traffic
        _row(org_a, T0 + timedelta(minutes=minute), key=key, latency=40 + minute)
    _row(org_a, T0 + timedelta(minutes=5), key=key, status="error", latency=3000)
    _row(org_a, T0 + timedelta(minutes=7), model="embed", cost="0.001")
    _row(org_b, T0 + timedelta(minutes=15))
    return key


def test_hourly_rollups_are_exact(traffic, org_a):
    rollup_window(period="hour", start=T0, end=T0 + timedelta(hours=2))
    rows = UsageRollup.objects.for_org(org_a).filter(period="hour", model="chat")
    first = rows.get(bucket_start=T0)
    assert (first.requests, first.errors) == (7, 1)  # 6 successes + 1 error in the first hour
    assert first.input_tokens == 70 and first.cost == Decimal("0.07")
    assert sum(first.latency_hist) == 6  # histogram counts successes only
    assert (
        first.latency_hist[2] == 2 and first.latency_hist[3] == 4
    )  # 40, 50 ms <= 50; 60..90 ms <= 100
    totals = (
        UsageRollup.objects.for_org(org_a)
        .filter(period="hour")
        .aggregate(n=Sum("requests"), cost=Sum("cost"))
    )
    raw = UsageRecord.objects.for_org(org_a).aggregate(n=Sum("input_tokens"), cost=Sum("cost"))
    assert totals["n"] == 14 and totals["cost"] == raw["cost"]


def test_running_a_window_twice_gives_the_same_rows(traffic, org_a):
    rollup_window(period="day", start=T0, end=T0 + timedelta(days=1))
    first = list(
        UsageRollup.objects.order_by("org_id", "model").values(
            "org_id", "model", "requests", "cost"
        )
    )
    rollup_window(period="day", start=T0, end=T0 + timedelta(days=1))
    again = list(
        UsageRollup.objects.order_by("org_id", "model").values(
            "org_id", "model", "requests", "cost"
        )
    )
    assert first == again and len(first) == 3  # acme chat, acme embed, globex chat


def test_late_rows_are_picked_up_when_the_window_is_run_again(traffic, org_a):
    rollup_window(period="hour", start=T0, end=T0 + timedelta(hours=1))
    _row(org_a, T0 + timedelta(minutes=59))
    rollup_window(period="hour", start=T0, end=T0 + timedelta(hours=1))
    assert (
        UsageRollup.objects.get(
            period="hour", bucket_start=T0, org=org_a, model="chat", key=None
        ).requests
        == 1
    )


def test_backfill_command(traffic, org_a):
    out = StringIO()
    call_command("backfill_rollups", "--since", "2026-11-19", "--until", "2026-11-21", stdout=out)
    assert "daily rollup rows" in out.getvalue()
    assert UsageRollup.objects.filter(period="day", bucket_start=T0.replace(hour=0)).count() == 3
    with pytest.raises(CommandError, match="not a date"):
        call_command("backfill_rollups", "--since", "yesterday")


def test_the_scheduled_task_rolls_up_the_recent_window(org_a, settings):
    from django.utils import timezone

    from billing.tasks import usage_rollup_recent

    _row(org_a, timezone.now() - timedelta(minutes=5))
    result = usage_rollup_recent.apply().get()  # the task body, run by Celery's own machinery
    assert result["hour_rows"] == 1 and result["day_rows"] == 1
    assert "usage-rollups" in settings.CELERY_BEAT_SCHEDULE
