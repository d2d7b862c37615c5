"""gateway_requests over time: PostgreSQL range partitions made ahead, and retention.

On PostgreSQL the table is partitioned by `created_at` (migration 0014), one partition per
day or month (`USAGE_PARTITION_INTERVAL`), plus a DEFAULT partition so that a row is never
refused for want of a partition (a clock ahead, a spool replayed after its partition was
dropped). `partitions_ensure` creates the coming partitions, moving into a new partition
any rows the default partition holds for its range.

Retention (`USAGE_RETENTION_DAYS`, unset = keep forever) removes raw rows a range at a time,
oldest first: a whole partition is dropped (on PostgreSQL; a range outside any partition, and
SQLite's single table, lose their rows by DELETE). A range goes only when the rollups hold
every one of its rows: it ended before the rollup watermark, none of its hours awaits
recomputation, and its hourly rollups count exactly as many requests as it has rows; a row
written after that count carries a dirty mark (written in the same transaction), checked
again under the lock the removal takes. Each step moves the *raw rows kept from* mark
(services.raw_kept_from); rollups are never recomputed before it, and a late row that lands
before it is folded into the rollups instead (services.fold_expired)."""

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import Min, Sum

from . import services
from .models import RollupDirtyHour, RollupState, UsageRecord, UsageRollup

log = logging.getLogger("bonito.billing.partitions")

TABLE = UsageRecord._meta.db_table
DEFAULT = services.DEFAULT_PARTITION
AHEAD = {"day": 7, "month": 2}  # partitions kept ready beyond the current one
# Budgets read this month's raw rows and statements last month's: retention keeps them.
MIN_RETENTION_DAYS = 35
# How long creating or dropping a partition may wait for its lock, making the queries
# queued behind it wait too; past it, the step gives up until the next run.
LOCK_TIMEOUT = "3s"
# Migration 0014 puts history before the current month in month partitions, whatever the
# interval, and rows older than this floor (bogus clocks, e.g. a 1970 timestamp) in the
# DEFAULT partition: a partition costs a lock per query that is not pruned by time.
HISTORY_FLOOR = datetime(2020, 1, 1, tzinfo=UTC)
HISTORY_YEARS = 5
# Serialises partition creation between processes (two workers, beat and a manual run).
ADVISORY_KEY = "SELECT pg_advisory_xact_lock(hashtext('bonito gateway_requests partitions'))"


@dataclass(frozen=True)
class Partition:
    name: str
    start: datetime
    end: datetime


def interval() -> str:
    value = settings.USAGE_PARTITION_INTERVAL
    if value not in AHEAD:
        raise ValueError(f"USAGE_PARTITION_INTERVAL is {value!r}: use day or month.")
    return value


def period_start(moment: datetime, unit: str) -> datetime:
    moment = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(day=1) if unit == "month" else moment


def period_next(moment: datetime, unit: str) -> datetime:
    if unit == "day":
        return moment + timedelta(days=1)
    return (moment.replace(day=28) + timedelta(days=4)).replace(day=1)


def is_partitioned() -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid"
            " WHERE c.relname = %s AND c.relnamespace = to_regnamespace(current_schema())",
            [TABLE],
        )
        return cursor.fetchone() is not None


_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


def partitions() -> list[Partition]:
    """The table's range partitions (not the default one), oldest first."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
            [TABLE],
        )
        rows = cursor.fetchall()
    found = []
    for name, bound in rows:
        match = _BOUND.search(bound)
        if match:  # DEFAULT has no range
            start, end = (datetime.fromisoformat(v).astimezone(UTC) for v in match.groups())
            found.append(Partition(name, start, end))
    return sorted(found, key=lambda p: p.start)


def _gaps(start: datetime, end: datetime, existing: list[Partition]):
    """Pieces of [start, end) that no existing partition covers."""
    for p in existing:
        if p.end <= start or p.start >= end:
            continue
        if p.start > start:
            yield start, p.start
        start = max(start, p.end)
        if start >= end:
            return
    if start < end:
        yield start, end


def partition_create(start: datetime, end: datetime) -> str | None:
    """Create the partition for [start, end), moving in the default partition's rows for
    that range (PostgreSQL refuses a new partition whose rows sit in the default one).
    None when another process made a partition overlapping it meanwhile (checked under an
    advisory lock that every creator takes)."""
    qn = connection.ops.quote_name
    name = f"{TABLE}_p{start:%Y%m%d}"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        cursor.execute(ADVISORY_KEY)
        if any(p.start < end and p.end > start for p in partitions()):
            return None
        # Late writers into the default partition wait a moment; others are not touched.
        cursor.execute(f"LOCK TABLE {qn(DEFAULT)} IN EXCLUSIVE MODE")
        cursor.execute(f"CREATE TEMP TABLE moving (LIKE {qn(TABLE)}) ON COMMIT DROP")
        cursor.execute(
            f"WITH gone AS (DELETE FROM {qn(DEFAULT)} WHERE created_at >= %s AND created_at < %s"  # noqa: S608
            " RETURNING *) INSERT INTO moving SELECT * FROM gone",
            [start, end],
        )
        moved = cursor.rowcount
        cursor.execute(
            f"CREATE TABLE {qn(name)} PARTITION OF {qn(TABLE)} FOR VALUES FROM (%s) TO (%s)",
            [start, end],
        )
        cursor.execute(f"INSERT INTO {qn(TABLE)} SELECT * FROM moving")  # noqa: S608
        cursor.execute("DROP TABLE moving")
    if moved:
        log.info("partition %s created with %d rows from the default partition", name, moved)
    return name


def history_floor(now: datetime) -> datetime:
    """Rows before this get no partition of their own when a table is converted."""
    return max(HISTORY_FLOOR, period_start(now - timedelta(days=365 * HISTORY_YEARS), "month"))


def history_partitions(first: datetime | None, *, now: datetime) -> list[str]:
    """Month partitions for the history from `first` (the oldest row at or after
    history_floor) to the start of the current month (migration 0014), whatever the
    interval; older rows (or bogus ones) stay in the DEFAULT partition."""
    if first is None:
        return []
    moment = period_start(max(first, history_floor(now)), "month")
    end = period_start(now, "month")
    existing = partitions()
    created = []
    while moment < end:
        following = period_next(moment, "month")
        for a, b in _gaps(moment, following, existing):
            if (name := partition_create(a, b)) is not None:
                created.append(name)
        moment = following
    return created


def partitions_ensure(*, now: datetime, since: datetime | None = None) -> list[str]:
    """Create the partitions from `since` (default: now) to AHEAD intervals past now.
    Ranges some partition already covers (made under another interval, or by another
    process meanwhile) are left alone. A creation that waits past LOCK_TIMEOUT stops the
    run (logged); the next run makes the rest."""
    if not is_partitioned():
        return []
    unit = interval()
    start = period_start(since or now, unit)
    kept_from = services.raw_kept_from()
    if kept_from is not None and start < kept_from:  # retention removed that time: no
        start = period_start(kept_from, unit)  # partitions for it (late rows are folded)
    end = period_start(now, unit)
    for _ in range(AHEAD[unit] + 1):
        end = period_next(end, unit)
    existing = partitions()
    created = []
    moment = start
    while moment < end:
        following = period_next(moment, unit)
        for a, b in _gaps(moment, following, existing):
            try:
                name = partition_create(a, b)
            except OperationalError as exc:  # lock_timeout: busy now, the next run goes on
                log.warning("usage partitions wait: %s", exc)
                return created
            if name is not None:
                created.append(name)
        moment = following
    return created


def retention_cutoff(now: datetime) -> datetime | None:
    """Raw rows before this may go: older than the retention and rolled up."""
    days = settings.USAGE_RETENTION_DAYS
    mark = services.rolled_until()
    if days is None or mark is None:
        return None
    if days < MIN_RETENTION_DAYS:
        raise ValueError(f"USAGE_RETENTION_DAYS is {days}: keep at least {MIN_RETENTION_DAYS}.")
    return min(now - timedelta(days=days), mark)


def _covered(start: datetime, end: datetime) -> bool:
    """True when the hourly rollups hold every raw row of [start, end)."""
    if RollupDirtyHour.objects.filter(bucket_start__gte=start, bucket_start__lt=end).exists():
        return False
    rows = UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end).count()
    rolled = UsageRollup.objects.filter(
        period=UsageRollup.Period.HOUR, bucket_start__gte=start, bucket_start__lt=end
    ).aggregate(n=Sum("requests"))["n"]
    return rows == (rolled or 0)


def _next_range(after: datetime, cutoff: datetime, existing: list[Partition]):
    """The oldest range of raw rows at or after `after` that ends by `cutoff`: a whole
    partition, or a day outside every partition; None when there is none."""
    p = next((p for p in existing if p.end > after), None)
    first = (
        UsageRecord.objects.filter(created_at__gte=after, created_at__lt=cutoff)
        .order_by()
        .aggregate(first=Min("created_at"))["first"]
    )
    if p is not None and p.end <= cutoff and (first is None or p.start <= first):
        return p.start, p.end, p.name  # the oldest partition, empty ones included
    if first is None or (p is not None and p.start <= first):
        return None
    start = period_start(first, "day")
    end = start + timedelta(days=1) if p is None else min(start + timedelta(days=1), p.start)
    return (start, end, None) if end <= cutoff else None


def _remove(start: datetime, end: datetime, name: str | None) -> bool:
    """Remove one range's raw rows if the rollups hold them all; move the kept-from mark."""
    qn = connection.ops.quote_name
    # Counted first, without a lock (a day's partition may hold hundreds of millions of
    # rows); a row written after the count carries a dirty mark (the writer makes both in
    # one transaction), which is checked under the lock below.
    if not _covered(start, end):
        return False
    with transaction.atomic():
        state, _ = RollupState.objects.select_for_update().get_or_create(
            period=services.RAW_KEPT_FROM, defaults={"rolled_until": start}
        )
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                if name:
                    # DROP takes the parent table whole: taken first, so writers that have
                    # rows for this partition commit them (with their marks) before.
                    cursor.execute(f"LOCK TABLE {qn(TABLE)} IN ACCESS EXCLUSIVE MODE")
                else:
                    cursor.execute(f"LOCK TABLE {qn(DEFAULT)} IN EXCLUSIVE MODE")
        marked = RollupDirtyHour.objects.filter(bucket_start__gte=start, bucket_start__lt=end)
        if marked.exists() or (name is None and not _covered(start, end)):
            return False
        if name:
            with connection.cursor() as cursor:
                cursor.execute("SELECT to_regclass(%s)", [name])
                if cursor.fetchone()[0] is None:  # another run dropped it while we waited
                    return True
                # Deferred foreign-key checks still pending on its rows (rows written in this
                # transaction) would make PostgreSQL refuse the DROP: run them now.
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                cursor.execute(f"DROP TABLE {qn(name)}")
        else:
            UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end).delete()
        state.rolled_until = max(state.rolled_until, end)
        state.save(update_fields=["rolled_until", "updated_at"])
    return True


def retention_apply(*, now: datetime) -> dict:
    """Remove raw rows older than USAGE_RETENTION_DAYS that the rollups hold, oldest first,
    stopping at the first range that is not fully rolled up."""
    cutoff = retention_cutoff(now)
    report = {"dropped": [], "deleted_days": [], "folded": 0, "kept_from": None}
    if cutoff is None:
        return report
    report["folded"] = services.fold_expired()
    existing = partitions() if is_partitioned() else []
    after = services.raw_kept_from() or datetime.min.replace(tzinfo=UTC)
    while (found := _next_range(after, cutoff, existing)) is not None:
        start, end, name = found
        try:
            removed = _remove(start, end, name)
        except OperationalError as exc:  # lock_timeout: busy now, the next run tries again
            log.warning("usage retention waits: %s", exc)
            break
        if not removed:
            log.warning("usage retention stops at %s: not all rolled up yet", start.isoformat())
            break
        if name:
            report["dropped"].append(name)
            existing = [p for p in existing if p.name != name]
        else:
            report["deleted_days"].append(start.date().isoformat())
        after = end
    mark = services.raw_kept_from()
    report["kept_from"] = mark.isoformat() if mark else None
    return report


def usage_partitions_maintain(*, now: datetime) -> dict:
    """What the schedule and `manage.py usage_partitions` run."""
    created = partitions_ensure(now=now)
    return {"created": created, **retention_apply(now=now)}
