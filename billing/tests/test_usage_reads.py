"""Usage pages and /api/gateway/usage read hourly rollups for whole hours before the
watermark and raw rows for the rest; the numbers equal a scan of the raw rows."""

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing.models import RollupDirtyHour, RollupState, UsageRecord
from billing.selectors import UsageQuery, percentiles_from_histogram, usage_query, usage_records
from billing.services import rollup_recent
from billing.usage_writer import write_usage
from gateway import services as gateway_services
from gateway.tests.conftest import ACTOR
from orgs import services as org_services

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 20, 12, 20, tzinfo=UTC)
RANGE = {
    "since": (NOW - timedelta(hours=26, minutes=43)).isoformat(),
    "until": NOW.isoformat(),
}
# Over a week the series is daily, and whole days come from daily rollups.
LONG = {
    "since": (NOW - timedelta(days=8, hours=7, minutes=13)).isoformat(),
    "until": (NOW - timedelta(minutes=9)).isoformat(),
}


def _row(org, at, key=None, requested="fast", used="gpt-4o-mini", provider="openai", **fields):
    defaults = {
        "status": "success",
        "input_tokens": 10,
        "output_tokens": 5,
        "cost": Decimal("0.0125"),
        "latency_ms": 80,
    }
    return UsageRecord.objects.create(
        id=uuid.uuid4(),
        org=org,
        key=key,
        team=key.team if key else None,
        created_at=at,
        model_requested=requested,
        model_used=used,
        provider=provider,
        **(defaults | fields),
    )


@pytest.fixture
def traffic(org_a, org_b):
    team = org_services.team_create(actor=ACTOR, org=org_a, name="search")
    app, _ = gateway_services.api_key_create(actor=ACTOR, org=org_a, name="app")
    batch, _ = gateway_services.api_key_create(actor=ACTOR, org=org_a, name="batch", team=team)
    for i in range(400):  # five days, every ~19 minutes, mixed keys/models/outcomes
        at = NOW - timedelta(days=5) + timedelta(minutes=19 * i + 3)
        if at >= NOW:
            break
        key = app if i % 3 else batch
        if i % 7 == 0:
            _row(org_a, at, key, status="error", latency_ms=30000, cost=Decimal(0))
        elif i % 5 == 0:  # a failover: asked for one model, served by another
            _row(org_a, at, key, used="claude-haiku", provider="anthropic", latency_ms=900)
        else:
            _row(org_a, at, key, latency_ms=20 + (i * 37) % 3000, input_tokens=i)
    _row(org_b, NOW - timedelta(hours=3))  # another org's traffic never shows
    return {"app": app, "batch": batch, "team": team}


def _raw_scan(org, params) -> dict:
    qs, since, until = usage_records(org, params)
    return _strip(UsageQuery(org, since, until, [qs]).analytics())


def _strip(analytics: dict) -> dict:
    return {k: v for k, v in analytics.items() if k != "rolled_up_until"}


@pytest.mark.parametrize("window", [RANGE, LONG], ids=["26h", "8d"])
@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"model": "gpt-4o-mini"},
        {"model": "fast"},  # the requested name: matches failovers too
        {"model": "claude-haiku"},
        {"provider": "anthropic"},
        {"key": "app"},
        {"team": "team"},
    ],
)
def test_rollup_backed_reads_equal_a_raw_scan(traffic, org_a, filters, window):
    params = dict(window)
    for name, value in filters.items():
        params[name] = str(traffic[value].pk) if value in traffic else value
    expected = _raw_scan(org_a, params)
    assert expected["totals"]["requests"] > 0

    rollup_recent(now=NOW)
    query = usage_query(org_a, params)
    assert query.rolled_until == datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # 12:20 - 15 min grace
    assert any(part.exists() for part in query.rollup_parts)
    raw_rows = sum(part.count() for part in query.raw_parts)
    assert raw_rows < expected["totals"]["requests"] / 4  # most rows come from rollups
    periods = {p for part in query.rollup_parts for p in part.values_list("period", flat=True)}
    assert periods == ({"hour", "day"} if window is LONG else {"hour"})
    got = query.analytics()
    assert got["rolled_up_until"] == "2026-11-20T12:00:00+00:00"
    assert _strip(got) == expected


def test_reads_use_rollups_for_rolled_hours_and_raw_rows_after_the_watermark(traffic, org_a):
    rollup_recent(now=NOW)
    before = usage_query(org_a, RANGE).totals()
    # Raw rows of rolled-up hours are no longer read: the rollups answer for them ...
    UsageRecord.objects.filter(
        org=org_a,
        created_at__gte=NOW - timedelta(hours=20),
        created_at__lt=NOW - timedelta(hours=19),
    ).update(cost=Decimal("99"))
    assert usage_query(org_a, RANGE).totals() == before
    # ... while a request after the watermark counts at once, before any rollup run.
    _row(org_a, NOW - timedelta(minutes=2), cost=Decimal("1"))
    after = usage_query(org_a, RANGE).totals()
    assert after["requests"] == before["requests"] + 1
    assert after["cost_usd"] == pytest.approx(before["cost_usd"] + 1)


def test_a_late_row_marks_its_hour_and_the_next_run_counts_it(traffic, org_a):
    rollup_recent(now=NOW)
    before = usage_query(org_a, RANGE).totals()["requests"]
    late_at = NOW - timedelta(hours=5, minutes=10)
    write_usage(
        [
            {
                "id": uuid.uuid4().hex,
                "org_id": org_a.pk,
                "model_requested": "fast",
                "model_used": "gpt-4o-mini",
                "provider": "openai",
                "status": "success",
                "latency_ms": 40,
                "created_at": late_at.timestamp(),
            }
        ]
    )  # e.g. an agent's spool replayed hours later
    assert RollupDirtyHour.objects.filter(bucket_start=late_at.replace(minute=0)).exists()
    assert usage_query(org_a, RANGE).totals()["requests"] == before  # until the next run
    result = rollup_recent(now=NOW + timedelta(minutes=5))
    assert result["dirty_hours"] == 1 and not RollupDirtyHour.objects.exists()
    assert usage_query(org_a, RANGE).totals()["requests"] == before + 1
    assert _strip(usage_query(org_a, RANGE).analytics()) == _raw_scan(org_a, RANGE)


def test_the_first_run_rolls_up_from_the_oldest_row_and_later_runs_from_the_watermark(
    traffic, org_a
):
    assert not RollupState.objects.exists()
    assert usage_query(org_a, RANGE).rollup_parts == []  # no watermark yet: raw rows only
    first = rollup_recent(now=NOW)
    assert first["hour_rows"] > 100  # five days of history, not just the last two hours
    later = rollup_recent(now=NOW + timedelta(minutes=5))
    assert later["hour_rows"] < first["hour_rows"]


def test_a_status_filter_reads_raw_rows(traffic, org_a):
    rollup_recent(now=NOW)
    query = usage_query(org_a, RANGE | {"status": "error"})
    assert query.rollup_parts == []
    assert query.totals()["requests"] == query.totals()["errors"] > 0


def test_percentiles_interpolate_inside_histogram_buckets():
    # buckets: <=10, <=25, <=50, <=100, ... ; 100 successes: 50 in (10, 25], 50 in (25, 50]
    hist = [0, 50, 50] + [0] * 9
    got = percentiles_from_histogram(hist)
    assert got == {"p50_ms": 25, "p95_ms": 48, "p99_ms": 50}
    assert percentiles_from_histogram([0] * 12)["p50_ms"] is None
    assert percentiles_from_histogram([0] * 11 + [3])["p99_ms"] == 30000  # open last bucket


def test_usage_api_and_page_say_how_far_rollups_go(alice_client, traffic, org_a):
    rollup_recent(now=NOW)
    qs = "&".join(f"{k}={v.replace('+', '%2B')}" for k, v in RANGE.items())
    body = alice_client.get(f"/api/gateway/usage?{qs}").json()
    assert body["rolled_up_until"] == "2026-11-20T12:00:00+00:00"
    assert body["requests"] == _raw_scan(org_a, RANGE)["totals"]["requests"]
    page = alice_client.get(f"/o/acme/usage/?{qs}")
    assert page.status_code == 200
    assert b"Rolled up until" in page.content


@pytest.mark.parametrize(
    "span, step, buckets",
    [
        (timedelta(hours=24), timedelta(minutes=15), 96),
        (timedelta(hours=1), timedelta(minutes=15), 4),
        (timedelta(days=7), timedelta(hours=1), 168),
        (timedelta(days=30), timedelta(days=1), 30),
    ],
    ids=["24h", "1h", "7d", "30d"],
)
def test_the_chart_has_every_bucket_of_its_range(org_a, traffic, span, step, buckets):
    until = NOW.replace(minute=0)  # aligned, so the count of buckets is exact
    if step == timedelta(days=1):
        until = until.replace(hour=0)
    rollup_recent(now=NOW + timedelta(hours=3))
    params = {"since": (until - span).isoformat(), "until": until.isoformat()}
    series = usage_query(org_a, params).analytics()["series"]
    moments = [datetime.fromisoformat(p["bucket"]) for p in series]
    assert len(series) == buckets
    assert all(b - a == step for a, b in zip(moments, moments[1:], strict=False))
    assert moments[0] == until - span
    # Empty buckets are there, as zeros; the sum is every request of the range.
    assert any(p["requests"] == 0 for p in series) or span <= timedelta(hours=1)
    qs, _since, _until = usage_records(org_a, params)
    assert sum(p["requests"] for p in series) == qs.count()
    assert sum(p["errors"] for p in series) == qs.exclude(status="success").count()


@pytest.mark.parametrize("offset", ["+05:30", "-09:30", "+01:00"])
@pytest.mark.parametrize("window", [RANGE, LONG], ids=["26h", "8d"])
def test_a_range_given_with_a_utc_offset_reads_the_same_rows(traffic, org_a, window, offset):
    """since/until may carry any UTC offset (India's +05:30 included): the rollups are
    UTC hours and days, and their edges are cut in UTC whatever the offset, so the totals
    are those of the same rows as the range in UTC, never a half hour twice or not at all."""
    from datetime import timezone as tz

    hours, minutes = int(offset[1:3]), int(offset[4:])
    zone = tz((1 if offset[0] == "+" else -1) * timedelta(hours=hours, minutes=minutes))
    params = {k: datetime.fromisoformat(v).astimezone(zone).isoformat() for k, v in window.items()}
    assert params["since"].endswith(offset)
    expected = _raw_scan(org_a, window)
    rollup_recent(now=NOW)
    assert _strip(usage_query(org_a, params).analytics())["totals"] == expected["totals"]
