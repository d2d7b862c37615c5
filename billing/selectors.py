"""Reads of usage for the dashboard and the REST API: filters, totals, series, breakdowns."""

from datetime import UTC, datetime, timedelta

from django.core.exceptions import ValidationError
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from .models import UsageRecord

PRESETS = {
    "1h": timedelta(hours=1),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}
STATUSES = {s for s, _ in UsageRecord.Status.choices}
ORDERINGS = {"created_at", "-created_at", "latency_ms", "-latency_ms", "cost", "-cost"}


def _moment(value: str, name: str) -> datetime:
    parsed = parse_datetime(value)
    if parsed is None and parse_date(value):
        parsed = datetime.combine(parse_date(value), datetime.min.time())
    if parsed is None:
        raise ValidationError(
            {
                name: f"'{value}' is not a date or ISO 8601 time (e.g. 2026-11-01 or 2026-11-01T08:00Z)."
            }
        )
    return parsed if parsed.tzinfo else timezone.make_aware(parsed, UTC)


def time_range(params, default="24h") -> tuple[datetime, datetime]:
    until = _moment(params["until"], "until") if params.get("until") else timezone.now()
    if params.get("since"):
        since = _moment(params["since"], "since")
    else:
        preset = params.get("range") or default
        if preset not in PRESETS:
            raise ValidationError({"range": f"Use one of {', '.join(PRESETS)}, or since/until."})
        since = until - PRESETS[preset]
    if since >= until:
        raise ValidationError({"since": "'since' must be before 'until'."})
    return since, until


def _int(params, name):
    value = params.get(name)
    if value in (None, ""):
        return None
    if not str(value).isdigit():
        raise ValidationError({name: f"'{value}' is not an id."})
    return int(value)


def usage_records(org, params, default_range="24h"):
    """An org's usage rows filtered by time range, model, provider, key, team and status."""
    since, until = time_range(params, default_range)
    qs = UsageRecord.objects.for_org(org).filter(created_at__gte=since, created_at__lt=until)
    if params.get("model"):
        qs = qs.filter(Q(model_requested=params["model"]) | Q(model_used=params["model"]))
    if params.get("provider"):
        qs = qs.filter(provider=params["provider"])
    if (key := _int(params, "key")) is not None:
        qs = qs.filter(key_id=key)
    if (team := _int(params, "team")) is not None:
        qs = qs.filter(team_id=team)
    if params.get("status"):
        if params["status"] not in STATUSES:
            raise ValidationError({"status": f"Use one of {', '.join(sorted(STATUSES))}."})
        qs = qs.filter(status=params["status"])
    ordering = params.get("ordering") or "-created_at"
    if ordering not in ORDERINGS:
        raise ValidationError({"ordering": f"Use one of {', '.join(sorted(ORDERINGS))}."})
    return qs.order_by(ordering), since, until


def usage_totals(qs) -> dict:
    row = qs.aggregate(
        requests=Count("id"),
        input_tokens=Sum("input_tokens"),
        output_tokens=Sum("output_tokens"),
        cost=Sum("cost"),
        errors=Count("id", filter=~Q(status=UsageRecord.Status.SUCCESS)),
    )
    requests = row["requests"] or 0
    return {
        "requests": requests,
        "input_tokens": row["input_tokens"] or 0,
        "output_tokens": row["output_tokens"] or 0,
        "cost_usd": float(row["cost"] or 0),
        "errors": row["errors"],
        "error_rate": round(row["errors"] / requests, 4) if requests else 0.0,
    }


def usage_series(qs, since, until) -> list[dict]:
    trunc = TruncHour if until - since <= timedelta(days=2) else TruncDay
    rows = (
        qs.order_by()
        .annotate(bucket=trunc("created_at"))
        .values("bucket")
        .annotate(
            requests=Count("id"),
            tokens=Sum("input_tokens") + Sum("output_tokens"),
            cost=Sum("cost"),
            errors=Count("id", filter=~Q(status=UsageRecord.Status.SUCCESS)),
        )
        .order_by("bucket")
    )
    return [
        {
            "bucket": r["bucket"].isoformat(),
            "requests": r["requests"],
            "tokens": r["tokens"] or 0,
            "cost_usd": float(r["cost"] or 0),
            "errors": r["errors"],
        }
        for r in rows
    ]


def usage_breakdown(qs, field: str, limit: int = 20) -> list[dict]:
    rows = (
        qs.order_by()
        .values(field)
        .annotate(
            requests=Count("id"),
            cost=Sum("cost"),
            tokens=Sum("input_tokens") + Sum("output_tokens"),
        )
        .order_by("-cost", "-requests")[:limit]
    )
    return [
        {
            "name": r[field],
            "requests": r["requests"],
            "tokens": r["tokens"] or 0,
            "cost_usd": float(r["cost"] or 0),
        }
        for r in rows
    ]


def latency_percentiles(qs, sample: int = 100_000) -> dict:
    values = sorted(
        qs.filter(status=UsageRecord.Status.SUCCESS)
        .order_by()
        .values_list("latency_ms", flat=True)[:sample]
    )
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}

    def pct(p):
        return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]

    return {"p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99)}


def usage_analytics(qs, since, until) -> dict:
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "totals": usage_totals(qs),
        "latency": latency_percentiles(qs),
        "series": usage_series(qs, since, until),
        "by_model": usage_breakdown(qs, "model_used"),
        "by_provider": usage_breakdown(qs, "provider"),
        "by_key": usage_breakdown(qs, "key__name"),
        "by_team": usage_breakdown(qs, "team__name"),
    }


def month_bounds(value: str | None) -> tuple[datetime, datetime]:
    """'2026-11' -> [2026-11-01, 2026-12-01) in UTC; None -> the current month."""
    if value:
        try:
            year, month = (int(p) for p in value.split("-"))
            start = datetime(year, month, 1, tzinfo=UTC)
        except ValueError as exc:
            raise ValidationError({"month": f"'{value}' is not a month like 2026-11."}) from exc
    else:
        now = timezone.now()
        start = datetime(now.year, now.month, 1, tzinfo=UTC)
    end = datetime(start.year + (start.month == 12), start.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def monthly_statement(org, month: str | None) -> tuple[datetime, list[dict]]:
    """Cost attribution for a month: one line per team and key, with requests, tokens, cost."""
    start, end = month_bounds(month)
    rows = (
        UsageRecord.objects.for_org(org)
        .filter(created_at__gte=start, created_at__lt=end)
        .order_by()
        .values("team__name", "key__name", "key__prefix", "key__last4")
        .annotate(
            requests=Count("id"),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cost=Sum("cost"),
        )
        .order_by("team__name", "-cost")
    )
    lines = [
        {
            "team": r["team__name"] or "(no team)",
            "key": f"{r['key__name']} ({r['key__prefix']}…{r['key__last4']})"
            if r["key__name"]
            else "(deleted key)",
            "requests": r["requests"],
            "input_tokens": r["input_tokens"] or 0,
            "output_tokens": r["output_tokens"] or 0,
            "cost_usd": f"{r['cost'] or 0:.6f}",
        }
        for r in rows
    ]
    return start, lines
