"""Reads of usage for the dashboard and the REST API: filters, totals, series, breakdowns."""

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cached_property

from django.core.exceptions import ValidationError
from django.db.models import (
    BigIntegerField,
    BooleanField,
    Count,
    ExpressionWrapper,
    F,
    Max,
    Q,
    QuerySet,
    Sum,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, TruncDay, TruncHour, TruncMinute
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from core.months import month_bounds

from .models import LATENCY_BUCKETS_MS, UsageRecord, UsageRollup, of_policy
from .services import FEEDBACK, histogram_aggregates, rolled_until
from .spend import TOTALS, grouped

PRESETS = {
    "1h": timedelta(hours=1),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}
STATUSES = {s for s, _ in UsageRecord.Status.choices}
SOURCES = {s for s, _ in UsageRecord.Source.choices}
ORDERINGS = {"created_at", "-created_at", "latency_ms", "-latency_ms", "cost", "-cost"}


# Times and months outside these years are refused: nothing is recorded there, and the
# arithmetic on a range (the next hour, day or month) must stay inside datetime's years.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)
_MOMENT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ].*)?", re.ASCII | re.DOTALL)
_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})", re.ASCII)
_ID = re.compile(r"[0-9]{1,19}", re.ASCII)
MAX_ID = 2**63 - 1  # the largest id a 64-bit column holds
REQUEST_ID_MAX = 128  # UsageRecord.request_id's length


def _moment(value: str, name: str) -> datetime:
    """An ISO 8601 date or time in ASCII digits (2026-11-01, 2026-11-01T08:00Z); a time
    without an offset is UTC."""
    parsed = None
    if value.isascii() and "\x00" not in value and _MOMENT.fullmatch(value):
        try:
            parsed = parse_datetime(value)
            if parsed is None and parse_date(value):
                parsed = datetime.combine(parse_date(value), datetime.min.time())
        except (ValueError, OverflowError):  # well formed, but no such day, hour or offset
            parsed = None
    if parsed is None:
        raise ValidationError(
            {
                name: f"{value!r} is not a date or ISO 8601 time "
                "(e.g. 2026-11-01 or 2026-11-01T08:00Z)."
            }
        )
    parsed = parsed if parsed.tzinfo else timezone.make_aware(parsed, UTC)
    if not EARLIEST <= parsed < LATEST:
        raise ValidationError({name: f"{value!r} is out of range: use a time from 1970 to 2999."})
    # The same instant in UTC: rollups are UTC hours and days, and a range's whole hours and
    # days are cut from its ends as they are written (in +05:30 an hour starts at :30 UTC).
    return parsed.astimezone(UTC)


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


def _id(org, params, name, model):
    """The id of one of this org's keys or teams. An id of another org's row gets the
    same answer as an id that does not exist."""
    value = params.get(name)
    if value in (None, ""):
        return None
    if not _ID.fullmatch(value) or not 0 < int(value) <= MAX_ID:
        raise ValidationError({name: f"{value!r} is not an id (a whole number, e.g. 42)."})
    if not model.objects.for_org(org).filter(pk=int(value)).exists():
        raise ValidationError({name: f"There is no {name} {value} in this organization."})
    return int(value)


# The policy filter's value for the org's default smart routing (bn- keys asking for the
# alias): what the analytics' by_policy rows call it; no policy name (a slug) looks like it.
ORG_DEFAULT_POLICY = "(org default)"
_POLICY_NAME = re.compile(r"[-a-zA-Z0-9_]{1,63}", re.ASCII)


def policy_filter(org, params) -> str | None:
    """The name of the smart routing policy whose requests to keep ("" for the org
    default's), from its id or its name. An id of another org's policy gets the same answer
    as an id that does not exist; a name is matched as recorded on each request (so a
    deleted policy's requests are still found), like a model's name: a name that is
    neither one of the org's policies' nor recorded on any of its requests is a 400, as an
    unknown id is (another org's policies and requests are never looked at)."""
    from governance.models import RoutingPolicy

    value = params.get("policy")
    if value in (None, ""):
        return None
    if value == ORG_DEFAULT_POLICY:
        return ""
    if not _POLICY_NAME.fullmatch(value):
        raise ValidationError(
            {
                "policy": f"{value[:80]!r} is not a routing policy's id (a whole number) or "
                f"name (letters, digits, - and _), nor {ORG_DEFAULT_POLICY!r}."
            }
        )
    policies = RoutingPolicy.objects.for_org(org)
    found = None
    if value.isdigit() and _ID.fullmatch(value) and 0 < int(value) <= MAX_ID:
        found = policies.filter(pk=int(value)).values_list("name", flat=True).first()
        if found is not None and found != value:
            # A policy named by digits ("2") may be another's id: never answer with the
            # other's requests. Its id (the dashboard's menu gives it) is not ambiguous.
            named = policies.filter(name=value).values_list("pk", flat=True).first()
            if named is not None or of_policy(UsageRecord.objects.filter(org=org), value).exists():
                raise ValidationError(
                    {
                        "policy": f"{value} is the id of policy {found!r} and also a policy's "
                        f"name; give an id to say which: {value} for {found!r}"
                        + (f", {named} for the one named {value!r}." if named else ".")
                    }
                )
    if found is None and (
        # a policy named by digits ("2026") is found by its name too
        policies.filter(name=value).exists()
        # a deleted policy's requests, by the name they recorded
        or of_policy(UsageRecord.objects.filter(org=org), value).exists()
    ):
        found = value
    if found is None:
        raise ValidationError(
            {
                "policy": f"There is no policy {value} in this organization."
                if value.isdigit()
                else f"There is no policy named {value!r} in this organization."
            }
        )
    return found


def _text(params, name):
    value = params.get(name) or None
    if value is not None and "\x00" in value:
        raise ValidationError({name: "must not contain NUL characters."})
    return value


def _clean(org, params) -> dict:
    """The model, provider, key, team, policy, status and source filters, checked."""
    from gateway.models import ApiKey
    from orgs.models import Team

    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        raise ValidationError({"status": f"Use one of {', '.join(sorted(STATUSES))}."})
    source = params.get("source") or None
    if source is not None and source not in SOURCES:
        raise ValidationError({"source": f"Use one of {', '.join(sorted(SOURCES))}."})
    request_id = _text(params, "request_id")
    if request_id is not None and len(request_id) > REQUEST_ID_MAX:
        raise ValidationError(
            {
                "request_id": f"is {len(request_id)} characters long; request ids have at most "
                f"{REQUEST_ID_MAX}."
            }
        )
    return {
        "request_id": request_id.strip() if request_id else None,
        "model": _text(params, "model"),
        "provider": _text(params, "provider"),
        "key": _id(org, params, "key", ApiKey),
        "team": _id(org, params, "team", Team),
        "policy": policy_filter(org, params),
        "status": status,
        "source": source,
    }


def usage_records(org, params, default_range="24h"):
    """An org's usage rows filtered by time range, model, provider, key, team, policy,
    status and source."""
    since, until = time_range(params, default_range)
    ordering = params.get("ordering") or "-created_at"
    if ordering not in ORDERINGS:
        raise ValidationError({"ordering": f"Use one of {', '.join(sorted(ORDERINGS))}."})
    qs = _filtered(org, _clean(org, params)).filter(created_at__gte=since, created_at__lt=until)
    return qs.order_by(ordering), since, until


def _by_dimensions(qs, filters, used: str):
    """The model (requested or used), provider, key and team filters, on usage rows or
    rollups (`used` names the column of the model used)."""
    if filters["model"]:
        qs = qs.filter(Q(model_requested=filters["model"]) | Q(**{used: filters["model"]}))
    if filters["provider"]:
        qs = qs.filter(provider=filters["provider"])
    if filters["key"] is not None:
        qs = qs.filter(key_id=filters["key"])
    if filters["team"] is not None:
        qs = qs.filter(team_id=filters["team"])
    return qs


def _filtered(org, filters):
    qs = _by_dimensions(UsageRecord.objects.for_org(org), filters, used="model_used")
    if filters.get("request_id"):
        # Exact: the (org_id, request_id) index finds it (a substring match would scan).
        qs = qs.filter(request_id=filters["request_id"])
    if filters["status"]:
        qs = qs.filter(status=filters["status"])
    if filters["source"]:
        qs = qs.filter(source=filters["source"])
    if filters.get("policy") is not None:
        # The policy that smart-routed each request (the org default's record ""); a
        # request no smart routing chose a tier for is no policy's.
        qs = of_policy(qs, filters["policy"]).exclude(route_tier="")
    return qs


# ------------------------------------------------------------------------------ analytics
# Totals, series, breakdowns and latency for a time range read whole hours (whole days
# for ranges over two days) before the rollup watermark from rollups and the rest (the
# partial hours at the edges, and everything since the watermark) from raw rows; the parts
# are added. The numbers equal a scan of the raw rows. Each part is one contiguous range
# of one table, so every query is an index range scan; a status, source or policy filter
# (rollups count errors, not each status, and keep no source or policy) reads raw rows only.

# name -> (rollup aggregate, raw-row aggregate)
_MEASURES = {
    "requests": (Sum("requests"), Count("id")),
    "errors": (Sum("errors"), Count("id", filter=~Q(status=UsageRecord.Status.SUCCESS))),
    "input_tokens": (Sum("input_tokens"), Sum("input_tokens")),
    "output_tokens": (Sum("output_tokens"), Sum("output_tokens")),
    "cost": (Sum("cost"), Sum("cost")),
}
# The dimensions breakdowns group by: (rollup field, raw-row field).
_DIMENSIONS = {
    "model": ("model", "model_used"),
    "provider": ("provider", "provider"),
    "key": ("key_id", "key_id"),
    "team": ("team_id", "team_id"),
}
# The chart's buckets: 15 minutes up to a day (from raw rows: rollups are hourly), hours
# up to a week, days beyond; every bucket of the range is in the series, empty or not.
SERIES_BY_QUARTER_UP_TO = timedelta(days=1, minutes=1)
SERIES_BY_HOUR_UP_TO = timedelta(days=7, minutes=1)
QUARTER = timedelta(minutes=15)


def _zero() -> dict:
    return dict.fromkeys(_MEASURES, 0)


def _add(acc: dict, row: dict) -> None:
    for m in _MEASURES:
        acc[m] += row[m] or 0


def _usd(value) -> float:
    """Cost to 8 decimals, the column's precision (SQLite sums decimals as floats)."""
    return round(float(value), 8)


def _hour_up(moment: datetime) -> datetime:
    floor = moment.replace(minute=0, second=0, microsecond=0)
    return floor if floor == moment else floor + timedelta(hours=1)


def _hour_down(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _quarter_down(moment: datetime) -> datetime:
    return moment.replace(minute=moment.minute - moment.minute % 15, second=0, microsecond=0)


def _day_down(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass
class UsageQuery:
    """An org's usage in [since, until) under filters, as rollup parts and raw parts."""

    org: object
    since: datetime
    until: datetime
    raw_parts: list[QuerySet]  # UsageRecord rows, one contiguous range each
    rollup_parts: list[QuerySet] = field(default_factory=list)  # UsageRollup ranges
    rolled_until: datetime | None = None  # the watermark, whether or not this range used it
    filters: dict = field(default_factory=dict)
    # The whole range's raw rows, for a series finer than the rollups (15 minutes); when
    # None, the raw parts are the whole range (no rollup parts).
    raw_whole: QuerySet | None = None

    def _sides(self, *, feedback: bool = False):
        """(queryset, 0 for rollups / 1 for raw rows) for every part; without the rows of
        feedback calls unless ``feedback`` (they are counted apart: _combos)."""
        rollups = [qs.order_by() for qs in self.rollup_parts]
        raw = [qs.order_by() for qs in self.raw_parts]
        if not feedback:
            rollups = [qs.filter(feedback=False) for qs in rollups]
            raw = [qs.exclude(endpoint=FEEDBACK) for qs in raw]
        return [(qs, 0) for qs in rollups] + [(qs, 1) for qs in raw]

    @cached_property
    def _all_combos(self) -> dict:
        """Measures per (model, provider, key, team, is a feedback call): few rows, from
        which totals and every breakdown are added up here instead of one scan each."""
        out: dict = {}
        for qs, side in self._sides(feedback=True):
            names = [_DIMENSIONS[d][side] for d in _DIMENSIONS]
            flag = (
                F("feedback")
                if side == 0
                else ExpressionWrapper(Q(endpoint=FEEDBACK), output_field=BooleanField())
            )
            rows = qs.values(*names, fb=flag).annotate(**{m: a[side] for m, a in _MEASURES.items()})
            for r in rows:
                _add(out.setdefault((*(r[n] for n in names), bool(r["fb"])), _zero()), r)
        return out

    @cached_property
    def _combos(self) -> dict:
        """The model calls' measures per (model, provider, key, team): feedback calls
        (POST /v1/feedback) are usage rows, but not requests to a model."""
        out: dict = {}
        for (*combo, fb), measures in self._all_combos.items():
            if not fb:
                _add(out.setdefault(tuple(combo), _zero()), measures)
        return out

    def totals(self) -> dict:
        acc = _zero()
        for measures in self._combos.values():
            _add(acc, measures)
        requests = acc["requests"]
        return {
            "requests": requests,
            "input_tokens": acc["input_tokens"],
            "output_tokens": acc["output_tokens"],
            "cost_usd": _usd(acc["cost"]),
            "errors": acc["errors"],
            "error_rate": round(acc["errors"] / requests, 4) if requests else 0.0,
            # Calls of POST /v1/feedback (the app rating a request), not among the requests.
            "feedback_calls": sum(m["requests"] for (*_c, fb), m in self._all_combos.items() if fb),
        }

    def _names(self, dimension: str, ids) -> dict:
        from gateway.models import ApiKey
        from orgs.models import Team

        model = {"key": ApiKey, "team": Team}.get(dimension)
        if model is None:
            return {i: i for i in ids}
        found = dict(model.objects.for_org(self.org).filter(pk__in=ids).values_list("pk", "name"))
        return {i: found.get(i) for i in ids}

    def breakdown(self, dimension: str, limit: int = 20, with_value: bool = False) -> list[dict]:
        """The top groups by cost; ``with_value`` adds each group's filter value (a key or
        team id, a model or provider name) for the dashboard's links to the logs."""
        index = list(_DIMENSIONS).index(dimension)
        groups: dict = {}
        for combo, measures in self._combos.items():
            _add(groups.setdefault(combo[index], _zero()), measures)
        rows = sorted(groups.items(), key=lambda kv: (-kv[1]["cost"], -kv[1]["requests"]))[:limit]
        names = self._names(dimension, [value for value, _g in rows if value is not None])
        return [
            {
                "name": names.get(value),
                "requests": g["requests"],
                "tokens": g["input_tokens"] + g["output_tokens"],
                "cost_usd": _usd(g["cost"]),
                **({"value": value} if with_value else {}),
            }
            for value, g in rows
        ]

    def series(self) -> list[dict]:
        """Measures per bucket (SERIES_BY_*), every bucket of the range, empty ones zero."""
        span = self.until - self.since
        if span <= SERIES_BY_QUARTER_UP_TO:
            step, floor = QUARTER, _quarter_down
            whole = [self.raw_whole] if self.raw_whole is not None else self.raw_parts
            sides = [(qs.order_by().exclude(endpoint=FEEDBACK), 1) for qs in whole]
        else:
            step = timedelta(hours=1) if span <= SERIES_BY_HOUR_UP_TO else timedelta(days=1)
            floor = _hour_down if step < timedelta(days=1) else _day_down
            sides = self._sides()
        groups: dict = {}
        for qs, side in sides:
            # Rollup rows group by their own bucket (no per-row function); folded here.
            if side == 0:
                bucket = F("bucket_start")
            elif step == QUARTER:
                bucket = TruncMinute("created_at")
            else:
                bucket = (TruncHour if step < timedelta(days=1) else TruncDay)("created_at")
            rows = (
                qs.annotate(b=bucket)
                .values("b")
                .annotate(**{m: a[side] for m, a in _MEASURES.items()})
            )
            for r in rows:
                _add(groups.setdefault(floor(r["b"]), _zero()), r)
        moment = floor(self.since)
        while moment < self.until:
            groups.setdefault(moment, _zero())
            moment += step
        return [
            {
                "bucket": bucket.isoformat(),
                "requests": g["requests"],
                "tokens": g["input_tokens"] + g["output_tokens"],
                "cost_usd": _usd(g["cost"]),
                "errors": g["errors"],
            }
            for bucket, g in sorted(groups.items())
        ]

    def latency_histogram(self) -> list[int]:
        """Successful requests per LATENCY_BUCKETS_MS bucket (the last is over them all)."""
        size = len(LATENCY_BUCKETS_MS) + 1
        summed = {  # rollup histograms summed in the database, element by element
            f"h{i}": Sum(Cast(KT(f"latency_hist__{i}"), BigIntegerField())) for i in range(size)
        }
        hist = [0] * size
        for qs, side in self._sides():
            row = qs.aggregate(**(summed if side == 0 else histogram_aggregates()))
            for i in range(size):
                hist[i] += row[f"h{i}"] or 0
        return hist

    def latency(self) -> dict:
        return percentiles_from_histogram(self.latency_histogram())

    def analytics(self) -> dict:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "rolled_up_until": self.rolled_until.isoformat() if self.rolled_until else None,
            "totals": self.totals(),
            "latency": self.latency(),
            "series": self.series(),
            "by_model": self.breakdown("model"),
            "by_provider": self.breakdown("provider"),
            "by_key": self.breakdown("key"),
            "by_team": self.breakdown("team"),
            "smart_routing": self.smart_routing(),
        }

    def smart_routing(self) -> dict:
        return smart_savings(self.org, self.since, self.until, self.filters)


def percentiles_from_histogram(hist: list[int]) -> dict:
    """p50/p95/p99 estimated from bucket counts, interpolating linearly inside a bucket
    (as Prometheus' histogram_quantile does); the open last bucket reports its lower bound."""
    total = sum(hist)
    if not total:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    bounds = (0, *LATENCY_BUCKETS_MS)

    def pct(p):
        rank, seen = p / 100 * total, 0
        for i, n in enumerate(hist):
            if n and seen + n >= rank:
                if i == len(LATENCY_BUCKETS_MS):
                    return LATENCY_BUCKETS_MS[-1]
                low, high = bounds[i], bounds[i + 1]
                return round(low + (high - low) * (rank - seen) / n)
            seen += n
        return LATENCY_BUCKETS_MS[-1]

    return {"p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99)}


def usage_query(org, params, default_range="24h") -> UsageQuery:
    """Validate params as usage_records does; split the range at the rollup watermark."""
    since, until = time_range(params, default_range)
    filters = _clean(org, params)
    qs = _filtered(org, filters).order_by()
    mark = rolled_until()
    lo = _hour_up(since)
    hi = min(_hour_down(until), mark) if mark else lo
    # Rollups count neither each status, each source nor each policy: those filters read
    # raw rows.
    raw_only = filters["status"] or filters["source"] or filters["policy"] is not None
    if raw_only or filters["request_id"] or hi <= lo:
        return UsageQuery(
            org,
            since,
            until,
            [qs.filter(created_at__gte=since, created_at__lt=until)],
            [],
            mark,
            filters,
        )

    rollups = _by_dimensions(UsageRollup.objects.for_org(org), filters, used="model")

    def rolled(period, start, end):
        return rollups.filter(period=period, bucket_start__gte=start, bucket_start__lt=end)

    hour, day = UsageRollup.Period.HOUR, UsageRollup.Period.DAY
    parts = [rolled(hour, lo, hi)]
    if until - since > SERIES_BY_HOUR_UP_TO:  # a daily series: whole days from daily rollups
        day_lo = lo if lo.hour == 0 else _day_down(lo) + timedelta(days=1)
        day_hi = _day_down(hi)
        if day_lo < day_hi:
            parts = [
                rolled(hour, lo, day_lo),
                rolled(day, day_lo, day_hi),
                rolled(hour, day_hi, hi),
            ]
    # Two plain ranges (not one range with an OR): each is an index range scan.
    raw = [
        qs.filter(created_at__gte=since, created_at__lt=lo),
        qs.filter(created_at__gte=hi, created_at__lt=until),
    ]
    return UsageQuery(
        org,
        since,
        until,
        raw,
        parts,
        mark,
        filters,
        raw_whole=qs.filter(created_at__gte=since, created_at__lt=until),
    )


def statement_month(value: str | None) -> tuple[datetime, datetime]:
    """'2026-11' -> [2026-11-01, 2026-12-01) in UTC; None or '' -> the current month."""
    if value:
        match = _MONTH.fullmatch(value)
        if not match or not 1 <= int(match[2]) <= 12:
            raise ValidationError({"month": f"{value!r} is not a month like 2026-11."})
        if not EARLIEST.year <= int(match[1]) < LATEST.year:
            raise ValidationError(
                {"month": f"{value!r} is out of range: use a month from 1970 to 2999."}
            )
        return month_bounds(datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC))
    return month_bounds(timezone.now())


def names_by_id(model, org, ids) -> dict:
    """id -> name of ``org``'s rows of ``model`` (its teams, its keys) among ``ids``."""
    return dict(model.objects.filter(org=org, id__in=ids).values_list("id", "name"))


def monthly_statement(org, month: str | None) -> tuple[datetime, list[dict]]:
    """Cost attribution for a month: one line per team and key, with requests, tokens, cost.
    Read as spend is (billing.spend: rollups for whole hours and days, raw rows for the rest),
    so a month whose raw rows retention removed still has its statement, and this month's
    is not a scan of its raw rows."""
    start, end = statement_month(month)
    totals = grouped(start, end, TOTALS, fields=("team_id", "key_id"), org_ids=[org.id])
    team_ids = {team_id for team_id, _ in totals if team_id is not None}
    key_ids = {key_id for _, key_id in totals if key_id is not None}
    teams = names_by_id(UsageRecord.team.field.related_model, org, team_ids)
    keys = {
        k: f"{name} ({prefix}…{last4})"
        for k, name, prefix, last4 in UsageRecord.key.field.related_model.objects.filter(
            org=org, id__in=key_ids
        ).values_list("id", "name", "prefix", "last4")
    }
    lines = []
    for (team_id, key_id), (requests, input_tokens, output_tokens, cost) in totals.items():
        team = teams.get(team_id)
        line = {
            "team": team or "(no team)",
            "key": keys.get(key_id, "(deleted key)"),
            "requests": requests,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost_usd": cost.quantize(Decimal("0.000001")),
        }
        # Teams by name, then the lines without a team; the costliest key first in each.
        lines.append(((team is None, team or "", -line["cost_usd"], line["key"]), line))
    lines = [line for _, line in sorted(lines, key=lambda pair: pair[0])]
    return start, lines


# ------------------------------------------------------------------------------ smart routing
def _exact(value) -> Decimal:
    """A summed cost as the column holds it (8 decimals; SQLite sums decimals as floats)."""
    return Decimal(str(value or 0)).quantize(Decimal("1e-8"))


def _savings_row(g: dict) -> dict:
    cost, counterfactual = g["cost"], g["counterfactual"]
    saved = counterfactual - cost
    rated = g["rated"]
    return {
        "requests": g["requests"],
        "cost_usd": float(cost),
        "top_tier_cost_usd": float(counterfactual),
        "saved_usd": float(saved),
        "saved_pct": round(float(saved * 100 / counterfactual), 2) if counterfactual else 0.0,
        "rated": rated,
        "avg_feedback": round(g["feedback"] / rated, 4) if rated else None,
    }


_SAVINGS_DIMENSIONS = {  # output name -> the column grouped by
    "day": "day",
    "model": "model_used",
    "policy": "routing_policy",
    "classifier": "route_classifier",
    "tier": "route_tier",
}


def smart_savings(org, since: datetime, until: datetime, filters: dict | None = None) -> dict:
    """Smart-routed requests in [since, until): what they cost, what the same tokens would
    have cost on their policy's top tier (recorded per request as cost_top_tier), and the
    difference; in total, per day, per model used, per policy, per classifier (the A/B arms:
    rules, learned, strong) and per tier, with the apps' feedback (quality) on each (per
    tier: on the answers the tier gave, not those of a tier above it failed over to).

    One query, grouped by all five, folded here, and one count (a page makes a fixed
    number of queries). Read from the raw rows (kept USAGE_RETENTION_DAYS): successful
    requests, and failed ones that were billed (a stream cut after its first tokens: the
    bill counts them); a request that failed before any token cost nothing and would have
    cost nothing. A request whose policy's top tier had no active deployment has no top-tier
    price (cost_top_tier None): it is in none of the figures, and counted apart
    (``unpriced_requests``) so that a page can say so; /v1/messages/count_tokens, priced
    at nothing on any tier, is neither."""
    smart_routed = (
        _filtered(org, filters or _clean(org, {}))
        .filter(created_at__gte=since, created_at__lt=until)
        .filter(Q(status=UsageRecord.Status.SUCCESS) | Q(cost__gt=0))
        .exclude(route_tier="")
        .order_by()
    )
    unpriced = smart_routed.filter(cost_top_tier=None).exclude(endpoint="count_tokens").count()
    rows = (
        smart_routed.exclude(cost_top_tier=None)
        .annotate(day=TruncDay("created_at"))
        .values(*_SAVINGS_DIMENSIONS.values())
        .annotate(
            requests=Count("id"),
            cost=Sum("cost"),
            counterfactual=Sum("cost_top_tier"),
            rated=Count("feedback_score"),
            feedback=Sum("feedback_score"),
        )
    )

    def zero():
        return {
            "requests": 0,
            "cost": Decimal(0),
            "counterfactual": Decimal(0),
            "rated": 0,
            "feedback": 0.0,
        }

    total = zero()
    groups: dict = {name: {} for name in _SAVINGS_DIMENSIONS}
    for r in rows:
        measures = {
            "requests": r["requests"],
            "cost": _exact(r["cost"]),
            "counterfactual": _exact(r["counterfactual"]),
            "rated": r["rated"],
            "feedback": r["feedback"] or 0.0,
        }
        r["day"] = r["day"].date().isoformat()
        for name, column in (("total", None), *_SAVINGS_DIMENSIONS.items()):
            acc = total if column is None else groups[name].setdefault(r[column], zero())
            for m, v in measures.items():
                # A tier's quality is the answers it gave: a request the tier above
                # answered after a failover was rated on that model's answer.
                if name == "tier" and m in ("rated", "feedback"):
                    v = v if r["model_used"] == r["route_tier"] else type(v)(0)
                acc[m] += v

    def listed(name):
        return [{name: value, **_savings_row(g)} for value, g in sorted(groups[name].items())]

    policies = listed("policy")
    for p in policies:
        p["policy"] = p["policy"] or "(org default)"
    return {
        **_savings_row(total),
        "unpriced_requests": unpriced,
        "by_day": listed("day"),
        "by_model": listed("model"),
        "by_policy": policies,
        "by_classifier": listed("classifier"),
        "by_tier": listed("tier"),
    }


HEALTH_WINDOW = timedelta(minutes=15)
HEALTH_MIN_REQUESTS = 3  # fewer answers in the window say too little to call it failing


@dataclass(frozen=True)
class ProviderHealth:
    state: str  # ok | failing | idle | off: a CSS class on the page
    text: str


def provider_health(org, providers, now: datetime | None = None) -> dict[int, ProviderHealth]:
    """Provider id -> its state, from the last HEALTH_WINDOW of traffic (requests the
    provider answered or failed; refusals by Bonito's own checks are not its fault) and its
    last "Test connection": a provider is *failing* when half of its recent requests
    failed, or when its last test failed and nothing succeeded after it."""
    now = now or timezone.now()
    since = now - HEALTH_WINDOW
    traffic: dict[str, dict] = {}
    rows = (
        UsageRecord.objects.filter(org=org, created_at__gte=since)
        .exclude(provider="")
        .filter(status__in=[UsageRecord.Status.SUCCESS, UsageRecord.Status.ERROR])
        .values("provider", "status")
        .annotate(n=Count("id"), last=Max("created_at"))
    )
    for row in rows:
        t = traffic.setdefault(row["provider"], {"success": 0, "error": 0, "last_ok": None})
        t[row["status"]] += row["n"]
        if row["status"] == UsageRecord.Status.SUCCESS:
            t["last_ok"] = row["last"]
    out = {}
    for p in providers:
        t = traffic.get(p.name, {"success": 0, "error": 0, "last_ok": None})
        n, errors = t["success"] + t["error"], t["error"]
        tested_bad = p.last_test_ok is False and (
            t["last_ok"] is None or t["last_ok"] < p.last_test_at
        )
        if not p.is_active:
            out[p.id] = ProviderHealth("off", "disabled")
        elif getattr(p, "n_active", 1) == 0:
            out[p.id] = ProviderHealth("failing", "no active deployments")
        elif n >= HEALTH_MIN_REQUESTS and errors * 2 >= n:
            out[p.id] = ProviderHealth(
                "failing", f"failing: {errors} of {n} requests in the last 15 minutes failed"
            )
        elif tested_bad:
            out[p.id] = ProviderHealth("failing", f"last test failed: {p.last_test_message}")
        elif n:
            out[p.id] = ProviderHealth(
                "ok", f"serving: {n} requests in the last 15 minutes, {errors} failed"
            )
        elif p.last_test_ok:
            out[p.id] = ProviderHealth(
                "ok", f"no recent traffic; last test passed {p.last_test_at:%Y-%m-%d %H:%M} UTC"
            )
        else:
            out[p.id] = ProviderHealth("idle", "no traffic in the last 15 minutes, not tested")
    return out
