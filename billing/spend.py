"""Spend: what has been spent in a period, by org (or team, or key), from rollups and the
raw usage rows. The one place money is added up for limits and reports that compare a
period's spend: budgets (their alerts and hard blocks), the snapshot's month-to-date spend
under the gateway's spend-cap counter, and the weekly digest. The month's requests that
count against a tier's allowance (`requests_grouped`) are added up the same way.

Every row counts, whatever its status: a row's cost is what its upstream billed, so a
refused request ("rejected", nothing sent upstream) costs 0 and an error after tokens were
used costs those tokens.

Never a scan of a month's raw rows: whole days and hours before the rollup watermark
(billing.services.rolled_until) come from the daily and hourly rollups, and the rest from
raw rows: the partial hours at the period's edges, everything since the watermark, and the
hours marked dirty (a late row, an agent's replayed spool, landed in them after they were
rolled up: RollupDirtyHour) together with the days they fall in (read from hourly
rollups). So a late row counts here at once, and the sums equal a scan of the raw rows."""

from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Count, Q, QuerySet, Sum, Value
from django.utils import timezone

from core.months import month_bounds

from .models import RollupDirtyHour, RollupState, UsageRecord, UsageRollup

HOUR, DAY = timedelta(hours=1), timedelta(days=1)
_FIELDS = {"org": ("org_id",), "team": ("org_id", "team_id"), "key": ("org_id", "key_id")}


def _hour_down(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _hour_up(t: datetime) -> datetime:
    down = _hour_down(t)
    return down if down == t else down + HOUR


def _day_down(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def _ranges(since: datetime, until: datetime | None, mark: datetime | None, dirty) -> tuple:
    """[since, until) as (day-rollup ranges, hour-rollup ranges, raw ranges); hours in
    `dirty` are read raw, and the days they fall in from hourly rollups."""
    end = until or timezone.now()
    lo = _hour_up(since)
    hi = min(_hour_down(end), mark) if mark is not None else lo
    if hi <= lo:
        return [], [], [(since, until)]
    dirty = sorted(h for h in dirty if lo <= h < hi)
    day_lo = lo if lo == _day_down(lo) else _day_down(lo) + DAY
    day_hi = _day_down(hi)
    days, hours = [], []
    if day_lo < day_hi:
        dirty_days = sorted({_day_down(h) for h in dirty if day_lo <= h < day_hi})
        start = day_lo
        for d in [*dirty_days, day_hi]:  # whole days except the dirty ones
            if start < d:
                days.append((start, d))
            start = d + DAY
        hours = [(lo, day_lo), *((d, d + DAY) for d in dirty_days), (day_hi, hi)]
    else:
        hours = [(lo, hi)]
    hour_parts = []
    for a, b in hours:  # the dirty hours cut out of the hourly ranges
        for h in dirty:
            if a <= h < b:
                hour_parts.append((a, h))
                a = h + HOUR
        hour_parts.append((a, b))
    raw = [(since, lo), *((h, h + HOUR) for h in dirty), (hi, until)]
    return (
        [r for r in days if r[0] < r[1]],
        [r for r in hour_parts if r[0] < r[1]],
        [r for r in raw if r[1] is None or r[0] < r[1]],
    )


def rollup_marks() -> tuple:
    """(the hourly rollups' watermark or None, the dirty hours): what spend_grouped reads
    first, in one query; read it once and pass it to several spend_grouped calls made
    together (a snapshot's facts: the month's spend, then each budget period's)."""
    rows = (
        RollupState.objects.filter(period="hour")
        .annotate(dirty=Value(False))
        .values_list("rolled_until", "dirty")
        .union(
            RollupDirtyHour.objects.annotate(dirty=Value(True)).values_list(
                "bucket_start", "dirty"
            ),
            all=True,
        )
    )
    mark, dirty = None, []
    for at, is_dirty in rows:
        if is_dirty:
            dirty.append(at)
        else:
            mark = at
    return mark, dirty if mark is not None else []


# A period's requests, tokens and cost as grouped() reads them (rollups, raw rows).
TOTALS = {
    "requests": (Sum("requests"), Count("id"), 0),
    "input_tokens": (Sum("input_tokens"), Sum("input_tokens"), 0),
    "output_tokens": (Sum("output_tokens"), Sum("output_tokens"), 0),
    "cost": (Sum("cost"), Sum("cost"), Decimal(0)),
}


def spend_grouped(
    since: datetime,
    until: datetime | None = None,
    *,
    by: str = "org",
    org_ids=None,
    team_id: int | None = None,
    key_id: int | None = None,
    marks: tuple | None = None,
) -> dict[tuple, Decimal]:
    """(org id,) / (org id, team id) / (org id, key id) -> exact spend (USD) of the rows
    created in [since, until); `until` None: up to now. Only the given orgs, team or key
    when given; a group with no rows is absent (its spend is 0). ``marks``: rollup_marks()
    when the caller has read them already. Two queries (one with ``marks``): the rollups'
    and the raw rows' sums are one UNION ALL."""
    totals = grouped(
        since,
        until,
        {"cost": TOTALS["cost"]},
        fields=_FIELDS[by],
        org_ids=org_ids,
        team_id=team_id,
        key_id=key_id,
        marks=marks,
    )
    return {group: values[0] for group, values in totals.items()}


def requests_grouped(
    since: datetime, until: datetime | None = None, *, org_ids=None, marks: tuple | None = None
) -> dict[tuple, int]:
    """(org id,) -> the rows created in [since, until) that were not refused before going
    upstream (status "rejected"): what a tier's monthly request allowance counts. Read like
    spend_grouped, from rollups and raw rows, never a scan of the month's raw rows."""
    counted = (
        Sum("requests") - Sum("rejected"),
        Count("id", filter=~Q(status=UsageRecord.Status.REJECTED)),
        0,
    )
    totals = grouped(since, until, {"n": counted}, fields=("org_id",), org_ids=org_ids, marks=marks)
    return {group: values[0] for group, values in totals.items()}


def _as(zero, value):
    """A summed value in its total's type: PostgreSQL sums a bigint column as numeric (a
    Decimal for a count); a float (SQLite) becomes the Decimal of its shortest repr."""
    if isinstance(zero, int):
        return int(value)
    return Decimal(str(value)) if isinstance(value, float) else value


def grouped(
    since: datetime,
    until: datetime | None,
    values: dict,
    *,
    fields: tuple,
    org_ids=None,
    team_id: int | None = None,
    key_id: int | None = None,
    marks: tuple | None = None,
) -> dict[tuple, list]:
    """The rows created in [since, until), grouped by ``fields`` (a column both tables have:
    org_id, team_id, key_id; or a pair, the rollups' column and the raw rows': ("model",
    "model_used")), as spend_grouped reads them: group -> [one total per entry of
    ``values``], each entry (the rollups' aggregate, the raw rows' aggregate, zero). A group
    with no rows is absent."""
    mark, dirty = rollup_marks() if marks is None else marks
    days, hours, raw = _ranges(since, until, mark, dirty)
    zeros = [zero for _, _, zero in values.values()]

    def narrowed(qs, which):
        if org_ids is not None:  # ids, or a query of them (a subquery)
            qs = qs.filter(org_id__in=org_ids if isinstance(org_ids, QuerySet) else list(org_ids))
        if team_id is not None:
            qs = qs.filter(team_id=team_id)
        if key_id is not None:
            qs = qs.filter(key_id=key_id)
        aggregates = {name: parts[which] for name, parts in values.items()}
        columns = [f if isinstance(f, str) else f[which] for f in fields]
        return qs.order_by().values_list(*columns).annotate(**aggregates)

    queries = []
    for period, ranges in (("day", days), ("hour", hours)):
        if ranges:
            span = Q()
            for a, b in ranges:
                span |= Q(bucket_start__gte=a, bucket_start__lt=b)
            queries.append(narrowed(UsageRollup.objects.filter(span, period=period), 0))
    for a, b in raw:
        qs = UsageRecord.objects.filter(created_at__gte=a)
        queries.append(narrowed(qs.filter(created_at__lt=b) if b is not None else qs, 1))
    totals: dict = {}
    if not queries:
        return totals
    width = len(fields)
    for row in queries[0].union(*queries[1:], all=True):
        group = row[:width]
        sums = totals.setdefault(group, list(zeros))
        for i, value in enumerate(row[width:]):
            if value:
                sums[i] += _as(zeros[i], value)
    return totals


def spend_by_org(
    since: datetime,
    until: datetime | None = None,
    *,
    org_id: int | None = None,
    team_id: int | None = None,
    key_id: int | None = None,
) -> dict[int, Decimal]:
    """org id -> exact spend (USD) of the rows created in [since, until); `until` None: up
    to now. Narrowed to one org, and within it to one team or one key, when given; an org
    with no rows is absent (its spend is 0)."""
    totals = spend_grouped(
        since,
        until,
        org_ids=None if org_id is None else [org_id],
        team_id=team_id,
        key_id=key_id,
    )
    return {g[0]: t for g, t in totals.items()}


def key_spend_this_month(org_id: int, now: datetime | None = None) -> dict[int, Decimal]:
    """key id -> the exact spend of ``org_id``'s keys this calendar month (UTC), for the
    key list (gateway.selectors); a key with no rows is absent."""
    start = month_bounds(now or timezone.now())[0]
    totals = spend_grouped(start, by="key", org_ids=[org_id])
    return {key_id: total for (_org, key_id), total in totals.items() if key_id is not None}
