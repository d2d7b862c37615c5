"""Usage rollups: hourly and daily aggregates, exact and idempotent per window."""

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDay, TruncHour

from .models import LATENCY_BUCKETS_MS, UsageRecord, UsageRollup

TRUNC = {"hour": TruncHour, "day": TruncDay}
STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


def align(moment: datetime, period: str) -> datetime:
    moment = moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if period == "day" else moment


def _histogram_aggregates() -> dict:
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
        .values("bucket", "org_id", "key_id", "team_id", "model_used", "provider")
        .annotate(
            requests=Count("id"),
            errors=Count("id", filter=~Q(status=UsageRecord.Status.SUCCESS)),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cost=Sum("cost"),
            latency_sum=Sum("latency_ms"),
            **_histogram_aggregates(),
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
            provider=r["provider"],
            requests=r["requests"],
            errors=r["errors"],
            input_tokens=r["input_tokens"] or 0,
            output_tokens=r["output_tokens"] or 0,
            cost=r["cost"] or 0,
            latency_sum_ms=r["latency_sum"] or 0,
            latency_hist=[r[f"h{i}"] for i in range(len(LATENCY_BUCKETS_MS) + 1)],
        )
        for r in rows
    ]
    UsageRollup.objects.bulk_create(objects, batch_size=1000)
    return len(objects)


def rollup_recent(*, now: datetime) -> dict:
    """What the schedule runs: the last two hours (late rows land) and today and yesterday."""
    hours = rollup_window(
        period="hour", start=now - timedelta(hours=2), end=now + timedelta(hours=1)
    )
    days = rollup_window(period="day", start=now - timedelta(days=1), end=now + timedelta(days=1))
    return {"hour_rows": hours, "day_rows": days}
