"""Usage rollups: hourly and daily aggregates, exact and idempotent per window.

`rollup_recent` (every 5 minutes) recomputes the hours since the watermark (at least the
last two), the hours marked dirty by late rows, and their days; then it moves the
watermark (`RollupState`) to the last hour that ended `USAGE_ROLLUP_GRACE_S` before now.
Readers (billing.selectors) take whole hours before the watermark from rollups and the
rest from raw rows, so their numbers equal a scan of the raw rows.
A watermark far behind is caught up a day of rows at a time, each day committed with the
watermark, at most `USAGE_ROLLUP_CATCH_UP_DAYS` days a run; groups are streamed from SQL,
so memory does not grow with the history.

Retention (billing.partitions) removes raw rows older than `raw_kept_from`; rollups before
that mark are never recomputed (their rows are gone), and a late row that lands before it
is folded in (`fold_expired`)."""

from datetime import datetime, timedelta
from itertools import chain, islice

from django.conf import settings
from django.db import connection, transaction
from django.db.models import BooleanField, Count, ExpressionWrapper, Min, Q, Sum
from django.db.models.functions import TruncDay, TruncHour

from .models import LATENCY_BUCKETS_MS, RollupDirtyHour, RollupState, UsageRecord, UsageRollup

TRUNC = {"hour": TruncHour, "day": TruncDay}
FEEDBACK = "feedback"  # the endpoint of POST /v1/feedback's rows (rolled up apart)
# The RollupState row whose `rolled_until` is where raw rows begin (retention moves it).
RAW_KEPT_FROM = "raw"
# gateway_requests' DEFAULT partition on PostgreSQL (billing.partitions).
DEFAULT_PARTITION = f"{UsageRecord._meta.db_table}_default"
STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
# Rollup groups read from the database, and rows written to it, at a time.
BATCH = 2000
# Serialises the recomputation of rollup windows between processes (two runs at once: a
# tick that outlasted its interval, a backfill beside the schedule). Delete-then-insert is
# not safe run twice at once: neither sees the other's uncommitted rows to delete, and both
# inserts stay (every total of the window doubled).
ADVISORY_KEY = "SELECT pg_advisory_xact_lock(hashtext('bonito usage rollups'))"


def align(moment: datetime, period: str) -> datetime:
    moment = moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if period == "day" else moment


def histogram_aggregates() -> dict:
    """Count(...) per latency bucket of successful raw rows, as h0..hN."""
    success = Q(status=UsageRecord.Status.SUCCESS)
    out, low = {}, None
    for i, high in enumerate(LATENCY_BUCKETS_MS):
        rng = (
            Q(latency_ms__lte=high) if low is None else Q(latency_ms__gt=low, latency_ms__lte=high)
        )
        out[f"h{i}"] = Count("id", filter=success & rng)
        low = high
    out[f"h{len(LATENCY_BUCKETS_MS)}"] = Count("id", filter=success & Q(latency_ms__gt=low))
    return out


def _aggregate(records, period: str):
    """The rollup rows of `records`, grouped in SQL and streamed (a server-side cursor on
    PostgreSQL): memory holds one chunk of groups, not the window's history."""
    rows = (
        records.order_by()
        .annotate(
            bucket=TRUNC[period]("created_at"),
            is_feedback=ExpressionWrapper(Q(endpoint=FEEDBACK), output_field=BooleanField()),
        )
        .values(
            "bucket",
            "org_id",
            "key_id",
            "team_id",
            "model_used",
            "model_requested",
            "provider",
            "is_feedback",
        )
        .annotate(
            requests=Count("id"),
            errors=Count("id", filter=~Q(status=UsageRecord.Status.SUCCESS)),
            rejected=Count("id", filter=Q(status=UsageRecord.Status.REJECTED)),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cost=Sum("cost"),
            **histogram_aggregates(),
        )
    )
    for r in rows.iterator(chunk_size=BATCH):
        yield UsageRollup(
            period=period,
            bucket_start=r["bucket"],
            org_id=r["org_id"],
            key_id=r["key_id"],
            team_id=r["team_id"],
            model=r["model_used"],
            model_requested=r["model_requested"],
            provider=r["provider"],
            feedback=r["is_feedback"],
            requests=r["requests"],
            errors=r["errors"],
            rejected=r["rejected"],
            input_tokens=r["input_tokens"] or 0,
            output_tokens=r["output_tokens"] or 0,
            cost=r["cost"] or 0,
            latency_hist=[r[f"h{i}"] for i in range(len(LATENCY_BUCKETS_MS) + 1)],
        )


def _insert(objects) -> int:
    """bulk_create an iterable of rollup rows a batch at a time; returns how many."""
    written = 0
    for batch in iter(lambda: list(islice(objects, BATCH)), []):
        UsageRollup.objects.bulk_create(batch)
        written += len(batch)
    return written


def _kept_from_locked() -> datetime | None:
    """The raw-rows mark, locked until the transaction ends so retention cannot move it
    (and drop rows) while a window is recomputed."""
    state = RollupState.objects.select_for_update().filter(period=RAW_KEPT_FROM).first()
    return state.rolled_until if state else None


@transaction.atomic
def rollup_window(*, period: str, start: datetime, end: datetime) -> int:
    """Recompute every rollup row of `period` whose bucket starts in [start, end), from the
    raw rows kept (buckets before `raw_kept_from` keep their rollups)."""
    start, end = align(start, period), align(end, period)
    if end <= start:
        end = start + STEP[period]
    if connection.vendor == "postgresql":
        # Waits for a window being recomputed meanwhile to commit; the delete below, a later
        # statement, then sees (and replaces) what it wrote.
        with connection.cursor() as cursor:
            cursor.execute(ADVISORY_KEY)
    kept_from = _kept_from_locked()
    if kept_from is not None and start < kept_from:
        start = kept_from  # a day or month boundary: whole buckets
        if end <= start:
            return 0
    UsageRollup.objects.filter(
        period=period, bucket_start__gte=start, bucket_start__lt=end
    ).delete()
    return _insert(
        _aggregate(UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end), period)
    )


def raw_kept_from() -> datetime | None:
    """Where raw rows begin after retention (None: nothing removed yet)."""
    state = RollupState.objects.filter(period=RAW_KEPT_FROM).first()
    return state.rolled_until if state else None


@transaction.atomic
def fold_expired() -> int:
    """Rows that landed before `raw_kept_from` (a spool replayed after its range was
    removed): their hours' other rows are gone, so instead of recomputing, add them to the
    hourly and daily rollups (readers sum rollup rows) and delete them, in one transaction.
    Returns the number of rows folded."""
    kept_from = _kept_from_locked()
    if kept_from is None:
        return 0
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # Partitioned, rows before the mark can only be in the default partition: late
            # writers wait there while their rows are counted and removed.
            cursor.execute("SELECT to_regclass(%s)", [DEFAULT_PARTITION])
            if cursor.fetchone()[0] is not None:
                cursor.execute(f"LOCK TABLE {DEFAULT_PARTITION} IN EXCLUSIVE MODE")
    late = UsageRecord.objects.filter(created_at__lt=kept_from)
    if not _insert(chain(_aggregate(late, "hour"), _aggregate(late, "day"))):
        return 0
    folded, _ = late.delete()
    return folded


def rolled_until() -> datetime | None:
    state = RollupState.objects.filter(period="hour").first()
    return state.rolled_until if state else None


def _catch_up(mark: datetime, until: datetime, max_days: int) -> tuple[datetime, int, int]:
    """Roll up [mark, until) a day of rows at a time (with the empty days before it), at
    most `max_days` such windows, each in its own transaction that also moves the watermark
    to the window's end: a stop (the cap, a crash) leaves a watermark the next run goes on
    from. Returns (watermark, hour rows, day rows)."""
    hours = days = 0
    for _ in range(max_days):
        if mark >= until:
            break
        # Up to the end of the next day with rows: days without any cost no window.
        after = UsageRecord.objects.filter(created_at__gte=mark, created_at__lt=until)
        first = after.aggregate(first=Min("created_at"))["first"]
        end = until if first is None else min(align(first, "day") + STEP["day"], until)
        day, day_end = align(mark, "day"), align(end, "day")
        if day_end < end:
            day_end += STEP["day"]
        with transaction.atomic():
            # A run still going (a tick that outlasted its interval) holds the row: wait,
            # then skip what it did rather than write the same window twice.
            state = RollupState.objects.select_for_update().filter(period="hour").first()
            if state is not None and state.rolled_until >= end:
                mark = state.rolled_until
                continue
            hours += rollup_window(period="hour", start=mark, end=end)
            days += rollup_window(period="day", start=day, end=day_end)
            RollupState.objects.update_or_create(period="hour", defaults={"rolled_until": end})
        mark = end
    return mark, hours, days


def rollup_recent(*, now: datetime, max_days: int | None = None) -> dict:
    """What the schedule runs: every hour since the watermark (at least the last two, where
    rows still land), the dirty hours, and the days they fall in; then the watermark.

    A watermark far behind (the first run over months of rows, a worker down for days) is
    caught up a day at a time, at most `USAGE_ROLLUP_CATCH_UP_DAYS` days a run, committing
    the watermark after each day; a run that stops there leaves the rest (and the dirty
    hours after its watermark) to the next one (`caught_up` is False)."""
    if max_days is None:
        max_days = settings.USAGE_ROLLUP_CATCH_UP_DAYS
    mark = rolled_until()
    if mark is None:  # first run: everything there is
        first = UsageRecord.objects.aggregate(first=Min("created_at"))["first"]
        mark = align(first, "hour") if first is not None else now
    start = align(min(mark, now - timedelta(hours=2)), "hour")
    # Marks taken before recomputing: one added meanwhile stays for the next run.
    dirty = list(RollupDirtyHour.objects.all())
    recent = align(now - timedelta(hours=2), "hour")
    reached, hours, days = _catch_up(start, recent, max_days)
    caught_up = reached >= recent
    if caught_up:
        hours += rollup_window(period="hour", start=reached, end=now + timedelta(hours=1))
        days += rollup_window(period="day", start=reached, end=now + timedelta(days=1))
    kept_from = raw_kept_from()
    if kept_from is not None and (
        any(d.bucket_start < kept_from for d in dirty)
        # a row put there by something other than the usage writer carries no mark
        or UsageRecord.objects.filter(created_at__lt=kept_from).exists()
    ):
        fold_expired()
    older = [
        d.bucket_start
        for d in dirty
        if d.bucket_start < start and (kept_from is None or d.bucket_start >= kept_from)
    ]
    for day in sorted({align(h, "day") for h in older}):
        days += rollup_window(period="day", start=day, end=day + STEP["day"])
    for hour in older:
        hours += rollup_window(period="hour", start=hour, end=hour)
    # Dirty hours at or after where this run stopped are recomputed by the next one. A mark
    # made again since it was read (its token changed: a late row whose transaction was
    # still open when this run read the hour) stays for the next run. One at a time: a
    # writer holds its marks until it commits, and takes them in order.
    for d in dirty:
        if caught_up or d.bucket_start < reached:
            RollupDirtyHour.objects.filter(pk=d.pk, token=d.token).delete()
    watermark = reached
    if caught_up:
        watermark = align(now - timedelta(seconds=settings.USAGE_ROLLUP_GRACE_S), "hour")
        RollupState.objects.update_or_create(period="hour", defaults={"rolled_until": watermark})
    return {
        "hour_rows": hours,
        "day_rows": days,
        "dirty_hours": len(older),
        "rolled_until": watermark.isoformat(),
        "caught_up": caught_up,
    }


def mark_dirty_hours(moments) -> None:
    """Hours that got rows after they may have been rolled up (see RollupDirtyHour). A mark
    that exists is made anew (a new token, the row locked until the caller commits), so a
    run that read it before these rows were committed does not remove it."""
    hours = sorted({align(m, "hour") for m in moments})  # locked in order: no deadlock
    RollupDirtyHour.objects.bulk_create(
        [RollupDirtyHour(bucket_start=h) for h in hours],
        update_conflicts=True,
        unique_fields=["bucket_start"],
        update_fields=["token"],
    )
