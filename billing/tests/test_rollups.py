"""Usage rollups: exact, idempotent, rebuilt by the backfill command and the Celery task."""

import uuid
from bisect import bisect_left
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Sum

from billing.models import LATENCY_BUCKETS_MS, RollupDirtyHour, UsageRecord, UsageRollup
from billing.services import rolled_until, rollup_recent, rollup_window
from billing.usage_writer import write_usage
from gateway import services as gateway_services
from gateway.tests.conftest import ACTOR
from orgs import services as org_services

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


# -- catching up a watermark far behind --------------------------------------------------

NOW = datetime(2026, 11, 20, 12, 20, tzinfo=UTC)
DIMENSIONS = ("org_id", "key_id", "team_id", "model", "model_requested", "provider")


def _scan(period: str, until: datetime) -> dict:
    """The rollups of every whole bucket before `until`, computed in Python from raw rows."""
    out = {}
    for r in UsageRecord.objects.filter(created_at__lt=until):
        start = r.created_at.replace(minute=0, second=0, microsecond=0)
        if period == "day":
            start = start.replace(hour=0)
        if start + (timedelta(days=1) if period == "day" else timedelta(hours=1)) > until:
            continue
        group = (start, r.org_id, r.key_id, r.team_id, r.model_used, r.model_requested, r.provider)
        g = out.setdefault(group, [0, 0, 0, 0, Decimal(0), [0] * (len(LATENCY_BUCKETS_MS) + 1)])
        g[0] += 1
        g[2] += r.input_tokens
        g[3] += r.output_tokens
        g[4] += r.cost
        if r.status != "success":
            g[1] += 1
        else:
            g[5][bisect_left(LATENCY_BUCKETS_MS, r.latency_ms)] += 1
    return out


def _rollups(period: str, until: datetime) -> dict:
    return {
        (r.bucket_start, *(getattr(r, d) for d in DIMENSIONS)): [
            r.requests,
            r.errors,
            r.input_tokens,
            r.output_tokens,
            r.cost,
            r.latency_hist,
        ]
        for r in UsageRollup.objects.filter(period=period)
        if r.bucket_start + (timedelta(days=1) if period == "day" else timedelta(hours=1)) <= until
    }


def _assert_exact(until: datetime) -> None:
    for period in ("hour", "day"):
        assert _rollups(period, until) == _scan(period, until), period


@pytest.fixture
def months(org_a, org_b):
    """Rows on 40 of the last 60 days (gaps of empty days between), two orgs, keys,
    models, errors and latencies of every bucket; nothing rolled up yet."""
    keys = [
        gateway_services.api_key_create(actor=ACTOR, org=org_a, name=f"k{i}")[0] for i in (1, 2)
    ]
    rows = []
    for days in range(60, 0, -1):
        if days % 3 == 0:
            continue  # an empty day
        midnight = (NOW - timedelta(days=days)).replace(hour=0, minute=0)
        for i, hour in enumerate((0, 5, 5, 13, 23)):
            org = org_b if (days + i) % 4 == 0 else org_a
            rows.append(
                _row(
                    org,
                    midnight + timedelta(hours=hour, minutes=7 * i),
                    key=keys[i % 2] if org == org_a else None,
                    model=("chat", "embed")[days % 2],
                    status="error" if (days * i) % 7 == 3 else "success",
                    latency=(5, 30, 90, 800, 45000)[(days + i) % 5],
                    cost=f"0.00{i + 1}",
                )
            )
    # and the last hours, up to now
    for minutes in (150, 100, 50, 10):
        rows.append(_row(org_a, NOW - timedelta(minutes=minutes), key=keys[0]))
    return rows


def _record(org, at: datetime) -> dict:
    """A row as the gateway's usage writer gets it."""
    return {
        "id": str(uuid.uuid4()),
        "org_id": org.pk,
        "model_requested": "chat",
        "model_used": "chat",
        "provider": "fake",
        "status": "success",
        "input_tokens": 3,
        "output_tokens": 4,
        "cost": 0.5,
        "latency_ms": 70,
        "created_at": at.timestamp(),
    }


def _midnight(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def test_a_first_run_over_months_catches_up_a_day_at_a_time_and_equals_a_raw_scan(months):
    assert rolled_until() is None
    days_with_rows = sorted({_midnight(r.created_at) for r in months})
    seen, run = [], 0
    while True:
        run += 1
        result = rollup_recent(now=NOW, max_days=7)
        mark = rolled_until()
        seen.append(mark)
        # Whatever has been rolled up so far is exact: readers may use it at once.
        _assert_exact(mark)
        if result["caught_up"]:
            break
        # Each stopped run ends on the midnight after its 7th day with rows.
        assert mark == days_with_rows[7 * run - 1] + timedelta(days=1)
        assert result["rolled_until"] == mark.isoformat()
    assert seen == sorted(seen) and len(set(seen)) == len(seen)  # it only moves forward
    assert run == -(-len(days_with_rows) // 7)  # a window per day with rows, 7 a run
    assert mark == datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # 12:20 - 15 min grace
    _assert_exact(mark)
    _assert_exact(NOW + timedelta(days=1))  # the hours after the mark are rolled up too
    # A later run has nothing left to catch up.
    assert rollup_recent(now=NOW + timedelta(minutes=5), max_days=1)["caught_up"]
    _assert_exact(NOW + timedelta(days=1))


def test_a_run_that_fails_mid_way_keeps_what_it_committed_and_the_next_run_goes_on(
    months, monkeypatch
):
    from billing import services

    real, calls = services.rollup_window, []

    def crash_on_the_fifth_window(**kw):
        calls.append(kw)
        if len(calls) == 9:  # hour window of the 5th day (two windows a day)
            raise RuntimeError("worker killed")
        return real(**kw)

    monkeypatch.setattr(services, "rollup_window", crash_on_the_fifth_window)
    with pytest.raises(RuntimeError):
        rollup_recent(now=NOW, max_days=30)
    mark = rolled_until()
    days_with_rows = sorted({_midnight(r.created_at) for r in months})
    assert mark == days_with_rows[3] + timedelta(days=1)  # four windows committed
    _assert_exact(mark)
    assert not UsageRollup.objects.filter(bucket_start__gte=mark).exists()  # none half-done
    monkeypatch.setattr(services, "rollup_window", real)
    while not rollup_recent(now=NOW, max_days=30)["caught_up"]:
        pass
    _assert_exact(NOW + timedelta(days=1))


def test_late_rows_while_catching_up_are_counted_once_caught_up(months, org_a):
    first = rollup_recent(now=NOW, max_days=7)
    mark = rolled_until()
    assert not first["caught_up"]
    before = (mark - timedelta(days=2)).replace(hour=10)  # an hour already rolled up
    after = (mark + timedelta(days=5)).replace(hour=3)  # one not reached yet
    for at in (before, after):
        write_usage([_record(org_a, at + timedelta(minutes=30))])  # marks its hour dirty
    assert set(RollupDirtyHour.objects.values_list("bucket_start", flat=True)) == {before, after}
    second = rollup_recent(now=NOW, max_days=1)
    assert second["dirty_hours"] == 1 and not second["caught_up"]
    # The hour behind the watermark is recomputed; the one ahead waits for its window.
    assert list(RollupDirtyHour.objects.values_list("bucket_start", flat=True)) == [after]
    _assert_exact(rolled_until())
    while not rollup_recent(now=NOW, max_days=7)["caught_up"]:
        pass
    assert not RollupDirtyHour.objects.exists()
    _assert_exact(NOW + timedelta(days=1))


def test_the_task_catches_up_as_many_days_as_the_setting_says(org_a, settings):
    from django.utils import timezone

    from billing.tasks import usage_rollup_recent

    now = timezone.now()
    for days in (9, 6, 3):
        _row(org_a, now - timedelta(days=days))
    settings.USAGE_ROLLUP_CATCH_UP_DAYS = 2
    result = usage_rollup_recent.apply().get()
    assert not result["caught_up"]
    assert rolled_until() == _midnight(now - timedelta(days=6)) + timedelta(days=1)
    assert usage_rollup_recent.apply().get()["caught_up"]
    _assert_exact(rolled_until())


def test_the_rejected_count_migration_counts_this_months_rollups_of_orgs_with_an_allowance(
    org_a, org_b
):
    """Rollups made before `rejected` existed hold 0 there: the migration fills it in for the
    rollups a tier's request allowance reads (this month, orgs on a tier with one), and the
    allowance then counts exactly what a scan of the raw rows counts."""
    import importlib

    from django.apps import apps

    from billing.spend import requests_grouped
    from orgs.models import TierLimit

    migration = importlib.import_module("billing.migrations.0017_rollup_rejected")
    now = datetime(2026, 11, 20, 12, 30, tzinfo=UTC)
    TierLimit.objects.update_or_create(tier="free", defaults={"monthly_requests": 100})
    org_a.tier, org_b.tier = "free", "enterprise"
    org_a.save()
    org_b.save()
    key, _ = gateway_services.api_key_create(actor=ACTOR, org=org_a, name="ci")
    for org in (org_a, org_b):
        for day, hour in ((2, 10), (2, 10), (9, 23), (19, 22), (20, 11)):
            for status in ("success", "rejected", "rejected", "error"):
                _row(
                    org,
                    datetime(2026, 11, day, hour, 5, tzinfo=UTC),
                    key=key if org == org_a else None,
                    status=status,
                )
        _row(org, datetime(2026, 10, 31, 23, 5, tzinfo=UTC), status="rejected")  # last month
    # The same group with and without a team that is then deleted: its rows and rollups
    # alike lose the team (SET_NULL), so two rollup rows match one group of rows.
    team = org_services.team_create(actor=ACTOR, org=org_a, name="Gone")
    for with_team in (True, False):
        for status in ("success", "rejected", "rejected", "rejected"):
            row = _row(org_a, datetime(2026, 11, 3, 4, 5, tzinfo=UTC), key=key, status=status)
            if with_team:
                UsageRecord.objects.filter(pk=row.pk).update(team=team)
    rollup_recent(now=now)
    counted = requests_grouped(datetime(2026, 11, 1, tzinfo=UTC))
    assert counted == {(org_a.id,): 12, (org_b.id,): 10}
    org_services.team_delete(actor=ACTOR, team=team)
    UsageRollup.objects.update(rejected=0)  # as rollups made before the migration are
    assert requests_grouped(datetime(2026, 11, 1, tzinfo=UTC))[(org_a.id,)] > 12
    migration.count_rejected_this_month(apps, None, now=now)
    after = requests_grouped(datetime(2026, 11, 1, tzinfo=UTC))
    assert after[(org_a.id,)] == 12  # the org with an allowance: exact again
    assert all(r.rejected <= r.requests for r in UsageRollup.objects.all())
    assert after[(org_b.id,)] > 10  # another tier's: left at 0 (documented)
    last_month = UsageRollup.objects.filter(bucket_start__lt=datetime(2026, 11, 1, tzinfo=UTC))
    assert sum(r.rejected for r in last_month) == 0


def test_a_rollup_written_without_the_rejected_column_reads_zero(org_a):
    """The previous release's rollup task keeps running while migration 0017 is applied (a
    rolling upgrade): its inserts, which do not name the column, still work."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO billing_usagerollup (period, bucket_start, org_id, model,"
            " model_requested, provider, requests, errors, input_tokens, output_tokens, cost,"
            " latency_hist) VALUES ('hour', %s, %s, 'chat', 'chat', 'p', 3, 1, 0, 0, 0, '[]')",
            [T0, org_a.pk],
        )
    assert UsageRollup.objects.get(org=org_a, period="hour").rejected == 0
