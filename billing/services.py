"""Usage rollups: hourly and daily aggregates, exact and idempotent per window.

`rollup_recent` (every 5 minutes) recomputes the hours since the watermark (at least the
last two), the hours marked dirty by late rows, and their days; then it moves the
watermark (`RollupState`) to the last hour that ended `USAGE_ROLLUP_GRACE_S` before now.
Readers (billing.selectors) take whole hours before the watermark from rollups and the
rest from raw rows, so their numbers equal a scan of the raw rows."""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Min, Q, Sum
from django.db.models.functions import TruncDay, TruncHour

from .models import LATENCY_BUCKETS_MS, RollupDirtyHour, RollupState, UsageRecord, UsageRollup

TRUNC = {"hour": TruncHour, "day": TruncDay}
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


@transaction.atomic
def rollup_window(*, period: str, start: datetime, end: datetime) -> int:
    """Recompute every rollup row of `period` whose bucket starts in [start, end)."""
    start, end = align(start, period), align(end, period)
    if end <= start:
        end = start + STEP[period]
    UsageRollup.objects.filter(
        period=period, bucket_start__gte=start, bucket_start__lt=end
    ).delete()
    rows = (
        UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)
        .order_by()
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
    objects = [
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
    UsageRollup.objects.bulk_create(objects, batch_size=1000)
    return len(objects)


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
    older = [d.bucket_start for d in dirty if d.bucket_start < align(start, "hour")]
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
