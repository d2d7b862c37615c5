"""Usage rollups: hourly and daily aggregates, exact and idempotent per window.

`rollup_recent` (every 5 minutes) recomputes the hours since the watermark (at least the
last two), the hours marked dirty by late rows, and their days; then it moves the
watermark (`RollupState`) to the last hour that ended `USAGE_ROLLUP_GRACE_S` before now.
Readers (billing.selectors) take whole hours before the watermark from rollups and the
rest from raw rows, so their numbers equal a scan of the raw rows.

Retention (billing.partitions) removes raw rows older than `raw_kept_from`; rollups before
that mark are never recomputed (their rows are gone), and a late row that lands before it
is folded in (`fold_expired`)."""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Min, Q, Sum
from django.db.models.functions import TruncDay, TruncHour

from .models import LATENCY_BUCKETS_MS, RollupDirtyHour, RollupState, UsageRecord, UsageRollup

TRUNC = {"hour": TruncHour, "day": TruncDay}
# The RollupState row whose `rolled_until` is where raw rows begin (retention moves it).
RAW_KEPT_FROM = "raw"
# gateway_requests' DEFAULT partition on PostgreSQL (billing.partitions).
DEFAULT_PARTITION = f"{UsageRecord._meta.db_table}_default"
STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


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


def _aggregate(records, period: str) -> list[UsageRollup]:
    rows = (
        records.order_by()
        .annotate(bucket=TRUNC[period]("created_at"))
        .values(
            "bucket", "org_id", "key_id", "team_id", "model_used", "model_requested", "provider"
        )
        .annotate(
            requests=Count("id"),
            errors=Count("id", filter=~Q(status=UsageRecord.Status.SUCCESS)),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cost=Sum("cost"),
            **histogram_aggregates(),
        )
    )
    return [
        UsageRollup(
            period=period,
            bucket_start=r["bucket"],
            org_id=r["org_id"],
            key_id=r["key_id"],
            team_id=r["team_id"],
            model=r["model_used"],
            model_requested=r["model_requested"],
            provider=r["provider"],
            requests=r["requests"],
            errors=r["errors"],
            input_tokens=r["input_tokens"] or 0,
            output_tokens=r["output_tokens"] or 0,
            cost=r["cost"] or 0,
            latency_hist=[r[f"h{i}"] for i in range(len(LATENCY_BUCKETS_MS) + 1)],
        )
        for r in rows
    ]


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
    kept_from = _kept_from_locked()
    if kept_from is not None and start < kept_from:
        start = kept_from  # a day or month boundary: whole buckets
        if end <= start:
            return 0
    UsageRollup.objects.filter(
        period=period, bucket_start__gte=start, bucket_start__lt=end
    ).delete()
    objects = _aggregate(
        UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end), period
    )
    UsageRollup.objects.bulk_create(objects, batch_size=1000)
    return len(objects)


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
    objects = _aggregate(late, "hour") + _aggregate(late, "day")
    if not objects:
        return 0
    UsageRollup.objects.bulk_create(objects, batch_size=1000)
    folded, _ = late.delete()
    return folded


def rolled_until() -> datetime | None:
    state = RollupState.objects.filter(period="hour").first()
    return state.rolled_until if state else None


def rollup_recent(*, now: datetime) -> dict:
    """What the schedule runs: every hour since the watermark (at least the last two, where
    rows still land), the dirty hours, and the days they fall in; then the watermark."""
    mark = rolled_until()
    if mark is None:  # first run: everything there is
        first = UsageRecord.objects.aggregate(first=Min("created_at"))["first"]
        mark = first if first is not None else now
    start = min(mark, now - timedelta(hours=2))
    # Marks taken before recomputing: one added meanwhile stays for the next run.
    dirty = list(RollupDirtyHour.objects.all())
    hours = rollup_window(period="hour", start=start, end=now + timedelta(hours=1))
    days = rollup_window(period="day", start=start, end=now + timedelta(days=1))
    kept_from = raw_kept_from()
    if kept_from is not None and any(d.bucket_start < kept_from for d in dirty):
        fold_expired()
    older = [
        d.bucket_start
        for d in dirty
        if d.bucket_start < align(start, "hour")
        and (kept_from is None or d.bucket_start >= kept_from)
    ]
    for day in sorted({align(h, "day") for h in older}):
        days += rollup_window(period="day", start=day, end=day + STEP["day"])
    for hour in older:
        hours += rollup_window(period="hour", start=hour, end=hour)
    RollupDirtyHour.objects.filter(pk__in=[d.pk for d in dirty]).delete()
    watermark = align(now - timedelta(seconds=settings.USAGE_ROLLUP_GRACE_S), "hour")
    RollupState.objects.update_or_create(period="hour", defaults={"rolled_until": watermark})
    return {
        "hour_rows": hours,
        "day_rows": days,
        "dirty_hours": len(older),
        "rolled_until": watermark.isoformat(),
    }


def mark_dirty_hours(moments) -> None:
    """Hours that got rows after they may have been rolled up (see RollupDirtyHour)."""
    hours = {align(m, "hour") for m in moments}
    RollupDirtyHour.objects.bulk_create(
        [RollupDirtyHour(bucket_start=h) for h in hours], ignore_conflicts=True
    )
