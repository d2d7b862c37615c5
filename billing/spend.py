"""Spend: what has been spent in a period, by org, from the usage rows. The one place
money is added up for limits and reports that compare a period's spend: budgets (their
alerts and hard blocks), the snapshot's month-to-date spend under the gateway's spend-cap
counter, and the weekly digest.

Every row counts, whatever its status: a row's cost is what its upstream billed, so a
refused request ("rejected", nothing sent upstream) costs 0 and an error after tokens were
used costs those tokens. Raw rows, not rollups: a late row (a request that outlived the
rollup grace, an agent's replayed spool) counts here at once, where a rollup would count
it after its next run. The dashboards' usage reads (billing.selectors.UsageQuery) add
rollups and raw rows for speed over long ranges; their totals equal these once rolled up."""

from datetime import datetime
from decimal import Decimal

from django.db.models import Sum

from .models import UsageRecord


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
    rows = UsageRecord.objects.filter(created_at__gte=since)
    if until is not None:
        rows = rows.filter(created_at__lt=until)
    if org_id is not None:
        rows = rows.filter(org_id=org_id)
    if team_id is not None:
        rows = rows.filter(team_id=team_id)
    if key_id is not None:
        rows = rows.filter(key_id=key_id)
    totals = rows.order_by().values("org_id").annotate(total=Sum("cost"))
    return {r["org_id"]: r["total"] or Decimal(0) for r in totals}
