"""gateway_requests over time: partitions made ahead (PostgreSQL), rows that find no
partition, retention that removes only what the rollups hold, late rows folded in."""

import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.http import QueryDict

from billing import partitions, selectors, services, tasks, usage_writer
from billing.models import RollupDirtyHour, UsageRecord, UsageRollup
from billing.usage_writer import write_usage
from gateway import services as gateway_services
from gateway.tests.conftest import ACTOR

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 6, 15, 12, 30, tzinfo=UTC)  # in the past: its rows count as late
DAY = timedelta(days=1)


def postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("partitions exist on PostgreSQL only; SQLite keeps one table")


def _midnight(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _record(org, at: datetime, **fields) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "org_id": org.pk,
        "model_requested": "chat",
        "model_used": "chat",
        "provider": "fake",
        "status": "success",
        "input_tokens": 10,
        "output_tokens": 5,
        "cost": 0.25,
        "latency_ms": 80,
        "created_at": at.timestamp(),
        **fields,
    }


def _where(record_id) -> str:
    """The partition holding a row."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tableoid::regclass::text FROM gateway_requests WHERE id = %s",
            [uuid.UUID(str(record_id))],
        )
        return cursor.fetchone()[0]


def _covering(moment: datetime) -> list[partitions.Partition]:
    return [p for p in partitions.partitions() if p.start <= moment < p.end]


@pytest.mark.parametrize("unit", ["day", "month"])
def test_it_creates_partitions_ahead_and_only_once(settings, unit):
    postgresql_only()
    settings.USAGE_PARTITION_INTERVAL = unit
    created = partitions.partitions_ensure(now=NOW)
    moment = partitions.period_start(NOW, unit)
    for _ in range(partitions.AHEAD[unit] + 1):  # this interval and the ones ahead
        (p,) = _covering(moment)
        assert p.start == moment and p.end == partitions.period_next(moment, unit)
        moment = p.end
    assert len(created) == partitions.AHEAD[unit] + 1
    assert partitions.partitions_ensure(now=NOW) == []


def test_the_scheduled_task_keeps_partitions_ahead_of_now(settings):
    postgresql_only()
    settings.USAGE_PARTITION_INTERVAL = "day"
    tasks.usage_partitions_maintain()
    today = _midnight(datetime.now(UTC))
    for ahead in range(partitions.AHEAD["day"] + 1):
        assert len(_covering(today + ahead * DAY + timedelta(hours=12))) == 1


def test_switching_interval_fills_gaps_without_overlap(settings):
    postgresql_only()
    settings.USAGE_PARTITION_INTERVAL = "day"
    partitions.partitions_ensure(now=NOW)
    settings.USAGE_PARTITION_INTERVAL = "month"
    partitions.partitions_ensure(now=NOW)
    found = [p for p in partitions.partitions() if p.start >= _midnight(NOW)]
    for a, b in zip(found, found[1:], strict=False):
        assert a.end <= b.start  # PostgreSQL would refuse an overlap; none was attempted
    # Every moment up to two months ahead has exactly one partition.
    moment = _midnight(NOW)
    while moment < datetime(2026, 8, 1, tzinfo=UTC):
        assert len(_covering(moment)) == 1
        moment += DAY


def test_a_row_for_a_time_without_partition_lands_and_moves_in_when_one_is_made(org_a, settings):
    far_past = datetime(2019, 5, 4, 3, 2, tzinfo=UTC)
    far_future = datetime(2031, 7, 8, 9, 10, tzinfo=UTC)
    records = [_record(org_a, far_past), _record(org_a, far_future)]
    write_usage(records)
    assert UsageRecord.objects.filter(pk__in=[r["id"] for r in records]).count() == 2
    if connection.vendor != "postgresql":
        return
    assert {_where(r["id"]) for r in records} == {partitions.DEFAULT}
    settings.USAGE_PARTITION_INTERVAL = "month"
    partitions.partitions_ensure(now=far_future)
    (p,) = _covering(far_future)
    assert _where(records[1]["id"]) == p.name  # moved out of the default partition
    assert _where(records[0]["id"]) == partitions.DEFAULT
    assert UsageRecord.objects.filter(pk__in=[r["id"] for r in records]).count() == 2


def test_a_replayed_batch_is_written_once(org_a):
    now = datetime.now(UTC)
    batch = [_record(org_a, now - timedelta(seconds=i)) for i in range(300)]
    batch += [_record(org_a, datetime(2018, 1, 1, tzinfo=UTC))]  # the default partition
    write_usage(batch)
    write_usage(batch)  # a spool replayed after a crash
    write_usage(batch[::-1][:150])  # and a part of it again, in another order
    assert UsageRecord.objects.filter(org=org_a).count() == len(batch)


def test_deleting_a_key_team_or_org_still_does_what_the_model_says(org_a):
    key, _raw = gateway_services.api_key_create(actor=ACTOR, org=org_a, name="app")
    team = org_a.teams.create(name="ml") if hasattr(org_a, "teams") else None
    record = _record(org_a, datetime.now(UTC), key_id=key.pk, team_id=team and team.pk)
    write_usage([record])
    key.delete()
    if team is not None:
        team.delete()
    row = UsageRecord.objects.get(pk=record["id"])
    assert (row.key_id, row.team_id) == (None, None)  # SET_NULL
    org_a.delete()
    assert not UsageRecord.objects.filter(pk=record["id"]).exists()  # CASCADE


# -- retention ---------------------------------------------------------------------------


@pytest.fixture
def history(org_a, settings):
    """Rows on five days: 60, 50 and 45 days ago (older than the retention) and 10 and 1
    days ago; partitions for all of them; everything rolled up."""
    settings.USAGE_PARTITION_INTERVAL = "day"
    settings.USAGE_RETENTION_DAYS = 40
    partitions.partitions_ensure(now=NOW, since=NOW - 60 * DAY)
    records = []
    for days in (60, 50, 45, 10, 1):
        for hour in (1, 7, 22):
            at = _midnight(NOW - days * DAY) + timedelta(hours=hour, minutes=5)
            records.append(_record(org_a, at, cost=0.5 + hour / 100))
    write_usage(records)
    RollupDirtyHour.objects.all().delete()  # all of it is rolled up next
    services.rollup_recent(now=NOW)
    return records


def _totals(org, since: datetime, until: datetime) -> dict:
    params = QueryDict(mutable=True)
    params.update({"since": since.isoformat(), "until": until.isoformat()})
    return selectors.usage_query(org, params).totals()


def test_retention_removes_old_days_and_rollups_still_answer(org_a, history):
    before = _totals(org_a, NOW - 70 * DAY, NOW)
    assert before["requests"] == 15
    report = partitions.retention_apply(now=NOW)
    cutoff = _midnight(NOW - 44 * DAY)  # the end of the day 45 days ago
    assert not UsageRecord.objects.filter(created_at__lt=cutoff).exists()
    assert UsageRecord.objects.filter(created_at__gte=cutoff).count() == 6
    assert _totals(org_a, NOW - 70 * DAY, NOW) == before
    assert _totals(org_a, NOW - 70 * DAY, cutoff)["requests"] == 9  # from rollups alone
    if connection.vendor == "postgresql":
        # Whole partitions dropped, the empty ones too, up to the last one that ends
        # before the retention (the day 40 days ago ends after it).
        assert len(report["dropped"]) == 20
        assert services.raw_kept_from() == _midnight(NOW - 40 * DAY)
        assert partitions.partitions()[0].start == _midnight(NOW - 40 * DAY)
        # Nothing is made again for the removed time.
        partitions.partitions_ensure(now=NOW, since=NOW - 60 * DAY)
        assert partitions.partitions()[0].start == _midnight(NOW - 40 * DAY)
    else:
        assert len(report["deleted_days"]) == 3
        assert services.raw_kept_from() == cutoff
    assert partitions.retention_apply(now=NOW)["dropped"] == []  # nothing more to do


def test_a_months_statement_outlives_its_raw_rows(org_a, history):
    """The cost attribution CSV reads rollups for what retention removed: the statement of
    a month whose rows are gone is the one it was, team and key names included."""
    from orgs import services as org_services

    team = org_services.team_create(actor=ACTOR, org=org_a, name="Research")
    key, _ = gateway_services.api_key_create(actor=ACTOR, org=org_a, name="lab", team=team)
    at = _midnight(NOW - 50 * DAY) + timedelta(hours=3)
    write_usage([_record(org_a, at, key_id=key.pk, team_id=team.pk, cost=1.5) for _ in range(2)])
    services.rollup_recent(now=NOW)  # the late rows' dirty hours
    months = ("2026-04", "2026-05", "2026-06")
    before = {month: selectors.monthly_statement(org_a, month)[1] for month in months}
    assert {line["key"] for line in before["2026-04"]} == {
        "(deleted key)",  # rows without a key
        f"lab ({key.prefix}…{key.last4})",
    }
    lab = next(line for line in before["2026-04"] if line["team"] == "Research")
    assert (lab["requests"], lab["input_tokens"], str(lab["cost_usd"])) == (2, 20, "3.000000")
    partitions.retention_apply(now=NOW)
    assert not UsageRecord.objects.filter(created_at__lt=NOW - 44 * DAY).exists()
    assert {month: selectors.monthly_statement(org_a, month)[1] for month in months} == before


def test_retention_keeps_everything_when_unset(org_a, history, settings):
    settings.USAGE_RETENTION_DAYS = None
    assert partitions.retention_apply(now=NOW) == {
        "dropped": [],
        "deleted_days": [],
        "folded": 0,
        "kept_from": None,
    }
    assert UsageRecord.objects.count() == 15


def test_retention_never_removes_rows_not_rolled_up(org_a, history):
    # A late row into the oldest day, written after the rollups ran and not recomputed yet.
    late = _record(org_a, _midnight(NOW - 60 * DAY) + timedelta(hours=3))
    write_usage([late])
    assert RollupDirtyHour.objects.exists()
    partitions.retention_apply(now=NOW)
    assert UsageRecord.objects.filter(pk=late["id"]).exists()
    assert UsageRecord.objects.count() == 16  # stopped at the first range, nothing removed
    # The same row unmarked (as if the writer died between its insert and its mark): the
    # rollups' count tells it apart all the same.
    RollupDirtyHour.objects.all().delete()
    partitions.retention_apply(now=NOW)
    assert UsageRecord.objects.filter(pk=late["id"]).exists()
    # Once recomputed, the day goes with its late row counted.
    services.rollup_window(period="hour", start=NOW - 61 * DAY, end=NOW - 59 * DAY)
    services.rollup_window(period="day", start=NOW - 61 * DAY, end=NOW - 59 * DAY)
    partitions.retention_apply(now=NOW)
    assert not UsageRecord.objects.filter(pk=late["id"]).exists()
    assert _totals(org_a, NOW - 70 * DAY, NOW)["requests"] == 16


def test_retention_waits_for_the_rollup_watermark(org_a, history):
    services.RollupState.objects.filter(period="hour").update(rolled_until=NOW - 55 * DAY)
    partitions.retention_apply(now=NOW)
    assert UsageRecord.objects.filter(created_at__lt=NOW - 55 * DAY).count() == 0
    assert UsageRecord.objects.filter(created_at__gte=NOW - 55 * DAY).count() == 12


def test_a_record_older_than_the_rows_kept_is_refused_not_counted_again(org_a, history):
    """A journal or spool replayed after retention dropped its range: the first copy may
    have been counted before the drop and its id is gone, so the writer refuses it (the
    sink sets it aside as a dead letter) rather than risk counting it twice."""
    partitions.retention_apply(now=NOW)
    kept_from = services.raw_kept_from()
    before = _totals(org_a, NOW - 70 * DAY, NOW)
    # A copy of a record the rollups already hold, and one never seen: both refused.
    replayed = next(r for r in history if r["created_at"] < kept_from.timestamp())
    unseen = _record(org_a, kept_from - timedelta(minutes=1), cost=1.5)
    for record in (replayed, unseen):
        with pytest.raises(usage_writer.ExpiredRecord) as refused:
            write_usage([record])
        assert usage_writer.is_refusal(refused.value)  # dead-lettered, not retried
        assert not UsageRecord.objects.filter(pk=record["id"]).exists()
    # In a batch, only the expired record is refused: the sink splits it out.
    kept = _record(org_a, kept_from + timedelta(hours=1))
    with pytest.raises(usage_writer.ExpiredRecord):
        write_usage([kept, unseen])
    write_usage([kept])
    services.rollup_recent(now=NOW + timedelta(minutes=5))
    after = _totals(org_a, NOW - 70 * DAY, NOW)
    assert after["requests"] == before["requests"] + 1  # the kept one, nothing else


@pytest.mark.parametrize("marked", [True, False], ids=["dirty-mark", "no-mark"])
def test_a_late_row_before_the_kept_mark_is_folded_into_the_rollups(org_a, history, marked):
    """The safety net behind the writer's refusal: a row before the mark that reached the
    table some other way (with a dirty-hour mark or without one) is added to the rollups
    once and removed by the next rollup run."""
    partitions.retention_apply(now=NOW)
    before = _totals(org_a, NOW - 70 * DAY, NOW)
    old_day = _midnight(NOW - 50 * DAY)
    late = _record(org_a, old_day + timedelta(hours=7, minutes=30), cost=1.5)
    UsageRecord.objects.create(
        id=late["id"],
        org=org_a,
        model_requested="chat",
        model_used="chat",
        provider="fake",
        status="success",
        input_tokens=10,
        output_tokens=5,
        cost=Decimal("1.5"),
        latency_ms=80,
        created_at=datetime.fromtimestamp(late["created_at"], UTC),
    )
    if marked:
        services.mark_dirty_hours([datetime.fromtimestamp(late["created_at"], UTC)])
    assert UsageRecord.objects.filter(pk=late["id"]).exists()
    services.rollup_recent(now=NOW + timedelta(minutes=5))
    assert not UsageRecord.objects.filter(pk=late["id"]).exists()  # folded, then removed
    after = _totals(org_a, NOW - 70 * DAY, NOW)
    assert after["requests"] == before["requests"] + 1
    assert Decimal(str(after["cost_usd"])) - Decimal(str(before["cost_usd"])) == Decimal("1.5")
    # Recomputing the dropped range (a backfill, another run) takes nothing away.
    services.rollup_recent(now=NOW + timedelta(minutes=10))
    call_command("backfill_rollups", since=f"{old_day:%Y-%m-%d}", stdout=StringIO())
    assert _totals(org_a, NOW - 70 * DAY, NOW) == after
    day = UsageRollup.objects.for_org(org_a).filter(period="day", bucket_start=old_day)
    assert sum(r.requests for r in day) == 4


def test_the_command_reports_what_it_did(org_a, history, settings):
    settings.USAGE_RETENTION_DAYS = None
    out = StringIO()
    call_command("usage_partitions", stdout=out)
    assert "Dropped 0 partitions" in out.getvalue()
    if connection.vendor == "postgresql":  # migrate made this week's; the command keeps them
        today = _midnight(datetime.now(UTC))
        assert all(_covering(today + d * DAY) for d in range(partitions.AHEAD["day"] + 1))


def test_a_retention_below_the_floor_is_refused(org_a, history, settings):
    settings.USAGE_RETENTION_DAYS = 7
    with pytest.raises(ValueError, match="at least 35"):
        partitions.retention_apply(now=NOW)


def test_writer_rows_arrive_within_a_second_of_each_other_in_one_partition(org_a):
    """Rows written now go to today's partition, not the default one."""
    postgresql_only()
    partitions.partitions_ensure(now=datetime.now(UTC))
    record = _record(org_a, datetime.fromtimestamp(time.time(), UTC))
    write_usage([record])
    assert _where(record["id"]) != partitions.DEFAULT


# -- the migration -----------------------------------------------------------------------

# Over the columns the table had before 0014: later migrations add columns (0015).
CHECKSUM = (
    "SELECT count(*), md5(string_agg(ROW(id, model_requested, model_used, provider, deployment,"
    " endpoint, input_tokens, output_tokens, cached_tokens, cost, latency_ms, ttft_ms, status,"
    " http_status, error_type, request_id, source, created_at, org_id, key_id, team_id)::text,"
    " ',' ORDER BY id)) FROM gateway_requests"
)


@pytest.mark.django_db(transaction=True)
def test_the_migration_converts_a_table_that_has_rows_without_losing_any(org_a):
    postgresql_only()
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    latest = [n for n in executor.loader.graph.leaf_nodes() if n[0] == "billing"]
    executor.migrate([("billing", "0013_remove_usagerollup_latency_sum_ms")])
    try:
        _convert(org_a, latest)
    finally:  # the next tests need the schema back whatever happened
        MigrationExecutor(connection).migrate(latest)


def _convert(org_a, latest):
    from django.db.migrations.executor import MigrationExecutor

    assert not partitions.is_partitioned()
    with connection.cursor() as cursor:
        # 5,000 rows over 90 days up to now, and some far in the future (a skewed clock).
        cursor.execute(
            "INSERT INTO gateway_requests (id, model_requested, model_used, provider, deployment,"
            " endpoint, input_tokens, output_tokens, cached_tokens, cost, latency_ms, status,"
            " http_status, error_type, request_id, source, created_at, org_id)"
            " SELECT gen_random_uuid(), 'm' || mod(g, 7), 'm', 'p', '', 'chat', g, mod(g, 100), 0,"
            " g * 0.00000013, mod(g, 3000), 'success', 200, '', 'r' || g, 'shared_gateway',"
            " now() - mod(g, 90) * interval '1 day' - mod(g, 1440) * interval '1 minute', %s"
            " FROM generate_series(1, 5000) g",
            [org_a.pk],
        )
        cursor.execute(
            "INSERT INTO gateway_requests (id, model_requested, model_used, provider, deployment,"
            " endpoint, input_tokens, output_tokens, cached_tokens, cost, latency_ms, status,"
            " http_status, error_type, request_id, source, created_at, org_id)"
            " SELECT gen_random_uuid(), 'm', 'm', 'p', '', 'chat', 1, 1, 0, 0.5, 1, 'error', 502,"
            " 'x', 'late', 'vpc_agent', now() + interval '1 year', %s FROM generate_series(1, 3)",
            [org_a.pk],
        )
        cursor.execute(CHECKSUM)
        before = cursor.fetchone()
    executor = MigrationExecutor(connection)
    executor.migrate(latest)
    assert partitions.is_partitioned()
    with connection.cursor() as cursor:
        cursor.execute(CHECKSUM)
        assert cursor.fetchone() == before
        cursor.execute(f"SELECT count(*) FROM {partitions.DEFAULT}")  # noqa: S608
        assert cursor.fetchone()[0] == 3  # only the rows beyond the partitions made ahead
    oldest = UsageRecord.objects.order_by("created_at").first().created_at
    assert _covering(oldest)  # partitions from the first row's day
    # The writer's idempotent insert works on the converted table.
    record = _record(org_a, datetime.now(UTC))
    write_usage([record])
    write_usage([record])
    assert UsageRecord.objects.count() == 5004


INSERT_ROWS = (
    "INSERT INTO gateway_requests (id, model_requested, model_used, provider, deployment,"
    " endpoint, input_tokens, output_tokens, cached_tokens, cost, latency_ms, status,"
    " http_status, error_type, request_id, source, created_at, org_id)"
    " SELECT gen_random_uuid(), 'm', 'm', 'p', '', 'chat', g, 1, 0, g * 0.00000013, 1,"
    " 'success', 200, '', 'r' || g, 'shared_gateway', {at}, %s FROM generate_series(1, {n}) g"
)


def _checksum():
    with connection.cursor() as cursor:
        cursor.execute(CHECKSUM)
        return cursor.fetchone()


def _in_default() -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {partitions.DEFAULT}")  # noqa: S608
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_years_of_history_in_few_partitions_and_goes_back(org_a, settings):
    """800 days of history and a row at 1970 (a bogus clock): month partitions for the
    history, the 1970 row in the default partition, nothing lost; then back to 0013 and
    forward again with 200 more partitions, which needs one lock per partition and index."""
    postgresql_only()
    from django.db.migrations.executor import MigrationExecutor

    settings.USAGE_PARTITION_INTERVAL = "day"
    settings.USAGE_RETENTION_DAYS = 120
    executor = MigrationExecutor(connection)
    latest = [n for n in executor.loader.graph.leaf_nodes() if n[0] == "billing"]
    before_0014 = [("billing", "0013_remove_usagerollup_latency_sum_ms")]
    executor.migrate(before_0014)
    try:
        with connection.cursor() as cursor:
            # 4 rows a day over 800 days, up to now; one at the epoch.
            at = "now() - (g / 4) * interval '1 day' - mod(g, 4) * interval '1 hour'"
            cursor.execute(INSERT_ROWS.format(at=at, n=3200), [org_a.pk])
            cursor.execute(INSERT_ROWS.format(at="to_timestamp(0)", n=1), [org_a.pk])
        before = _checksum()
        MigrationExecutor(connection).migrate(latest)
        assert partitions.is_partitioned()
        assert _checksum() == before
        assert _in_default() == 1  # the 1970 row
        made = partitions.partitions()
        now = datetime.now(UTC)
        month = partitions.period_start(now, "month")
        history = [p for p in made if p.start < month]
        assert all(partitions.period_next(p.start, "month") == p.end for p in history)
        # 800 days back: about 27 months, a partition each, none before the data.
        assert 26 <= len(history) <= 28
        assert history[0].start == partitions.period_start(now - timedelta(days=800), "month")
        assert all(p.end - p.start == DAY for p in made if p.start >= month)  # days from now on
        # 200 more day partitions (next years' days), then back to one table and forward.
        start = partitions.period_start(now, "day") + timedelta(days=400)
        for i in range(200):
            partitions.partition_create(start + i * DAY, start + (i + 1) * DAY)
        assert len(partitions.partitions()) == len(made) + 200
        MigrationExecutor(connection).migrate(before_0014)
        assert not partitions.is_partitioned()
        assert _checksum() == before
        MigrationExecutor(connection).migrate(latest)
        assert partitions.is_partitioned()
        assert _checksum() == before
        assert _in_default() == 1
    finally:  # the next tests need the schema back whatever happened
        MigrationExecutor(connection).migrate(latest)


@pytest.mark.django_db(transaction=True)
def test_two_processes_making_the_same_partitions_at_once_both_succeed(org_a, settings):
    """Two runs at once (two workers, beat and a manual run): each partition made once,
    neither run fails."""
    postgresql_only()
    import threading

    from django.db import connections

    settings.USAGE_PARTITION_INTERVAL = "day"
    settings.USAGE_RETENTION_DAYS = 120
    later = datetime(2031, 3, 10, 12, tzinfo=UTC)  # no partition there yet
    barrier = threading.Barrier(2)
    results, errors = [], []

    def run():
        try:
            barrier.wait()
            results.append(partitions.partitions_ensure(now=later))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        made = sorted(results[0] + results[1])
        expected = partitions.AHEAD["day"] + 1
        assert len(made) == len(set(made)) == expected  # each made by exactly one run
        moment = partitions.period_start(later, "day")
        for _ in range(expected):
            (p,) = _covering(moment)
            moment = p.end
    finally:
        with connection.cursor() as cursor:
            for p in partitions.partitions():
                if p.start >= datetime(2031, 1, 1, tzinfo=UTC):
                    cursor.execute(f"DROP TABLE {p.name}")


@pytest.mark.parametrize(
    ("interval", "retention", "refused"),
    [("day", None, True), ("day", "121", True), ("day", "120", False), ("month", None, False)],
)
def test_day_partitions_need_a_bounded_retention_at_start_up(interval, retention, refused):
    """A partition a day kept forever would run PostgreSQL out of locks: refused at start."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "USAGE_PARTITION_INTERVAL": interval}
    env.pop("USAGE_RETENTION_DAYS", None)
    if retention is not None:
        env["USAGE_RETENTION_DAYS"] = retention
    done = subprocess.run(  # noqa: S603 - our own interpreter and settings module
        [sys.executable, "-c", "import bonito.settings"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode != 0) is refused
    if refused:
        assert "USAGE_PARTITION_INTERVAL=day needs USAGE_RETENTION_DAYS" in done.stderr


@pytest.mark.parametrize(
    ("retention", "message"),
    [
        ("abc", "USAGE_RETENTION_DAYS is 'abc': set a whole number."),
        ("35.5", "USAGE_RETENTION_DAYS is '35.5': set a whole number."),
        ("34", "keep at least 35 days"),
        ("-5", "keep at least 35 days"),
        ("3000000", "at most 36500 (100 years); leave it unset to keep raw rows forever"),
        ("36500", None),
    ],
)
def test_a_retention_that_cannot_work_is_refused_at_start_up(retention, message):
    """Not a traceback at start, nor an hourly task that fails later (a date out of range)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "USAGE_PARTITION_INTERVAL": "month", "USAGE_RETENTION_DAYS": retention}
    # What retention computes from it (billing.partitions.retention_cutoff), from year 2026.
    code = (
        "import datetime, bonito.settings as s;"
        "print(datetime.datetime(2026, 12, 2) - datetime.timedelta(days=s.USAGE_RETENTION_DAYS))"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter and settings module
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if message is None:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode != 0
        assert f"ImproperlyConfigured: {retention}" not in done.stderr
        assert message in done.stderr and "Traceback" in done.stderr
