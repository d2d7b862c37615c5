"""A period's spend is added up one way (billing.spend.spend_by_org) for every reader: the
budgets (org, team, key; monthly, daily), the snapshot's month-to-date spend, the weekly
digest. Exact decimals, every status counted, the period's edges [since, until) kept, and
never another org's, team's or key's rows."""

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing.budgets import budget_save, budget_spent, org_facts
from billing.digest import digest_context
from billing.models import UsageRecord
from billing.spend import spend_by_org
from gateway import services as gateway_services
from orgs import services as org_services
from orgs.audit import Actor

pytestmark = pytest.mark.django_db

ACTOR = Actor(via="test")
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
MONTH = datetime(2026, 11, 1, tzinfo=UTC)
DAY = datetime(2026, 11, 20, tzinfo=UTC)
WEEK = (datetime(2026, 11, 13, tzinfo=UTC), DAY)  # the digest's week before NOW's day


@pytest.fixture
def usage(org_a, org_b):
    team = org_services.team_create(actor=ACTOR, org=org_a, name="Platform")
    other_team = org_services.team_create(actor=ACTOR, org=org_a, name="Research")
    key, _ = gateway_services.api_key_create(actor=ACTOR, org=org_a, name="ci", team=team)
    other_key, _ = gateway_services.api_key_create(actor=ACTOR, org=org_a, name="web")
    rows = [
        # (org, when, cost, status, team, key)
        (org_a, MONTH, "0.1", "success", team, key),  # the month's first instant counts
        (org_a, MONTH - timedelta(microseconds=1), "7", "success", team, key),  # last month
        (org_a, datetime(2026, 11, 15, tzinfo=UTC), "0.2", "error", team, key),
        (org_a, datetime(2026, 11, 16, tzinfo=UTC), "0.00000001", "rejected", None, other_key),
        (org_a, datetime(2026, 11, 17, tzinfo=UTC), "1.23456789", "success", other_team, None),
        (org_a, NOW - timedelta(hours=1), "0.3", "success", team, other_key),  # today
        (org_a, WEEK[0] - timedelta(microseconds=1), "0.05", "success", None, key),
        (org_b, datetime(2026, 11, 15, tzinfo=UTC), "5", "success", None, None),
    ]
    for org, at, cost, status, row_team, row_key in rows:
        UsageRecord.objects.create(
            id=uuid.uuid4(),
            org=org,
            team=row_team,
            key=row_key,
            created_at=at,
            model_requested="chat",
            model_used="chat",
            provider="fake",
            status=status,
            cost=Decimal(cost),
        )

    def expected(org, since, until=None, **match):
        return sum(
            (
                Decimal(cost)
                for o, at, cost, _status, row_team, row_key in rows
                if o == org
                and since <= at
                and (until is None or at < until)
                and all({"team": row_team, "key": row_key}[k] == v for k, v in match.items())
            ),
            Decimal(0),
        )

    return {"team": team, "key": key, "expected": expected}


def test_spend_by_org_is_exact_and_keeps_the_periods_edges(usage, org_a, org_b):
    expected = usage["expected"]
    assert spend_by_org(MONTH) == {
        org_a.id: expected(org_a, MONTH),
        org_b.id: Decimal(5),
    }
    assert spend_by_org(MONTH)[org_a.id] == Decimal("1.88456790")  # every status counted
    assert spend_by_org(*WEEK, org_id=org_a.id) == {org_a.id: expected(org_a, *WEEK)}
    assert spend_by_org(NOW, org_id=org_b.id) == {}  # nothing spent: absent


@pytest.mark.parametrize("scope", ["org", "team", "key"])
@pytest.mark.parametrize("period", ["monthly", "daily"])
def test_a_budget_counts_its_own_scope_and_period(usage, org_a, scope, period):
    target = {"team": usage["team"], "key": usage["key"]}.get(scope)
    budget = budget_save(
        actor=ACTOR,
        org=org_a,
        scope=scope,
        team=target if scope == "team" else None,
        key=target if scope == "key" else None,
        period=period,
        amount_usd=100,
    )
    since = MONTH if period == "monthly" else DAY
    match = {scope: target} if target is not None else {}
    spent = budget_spent(budget, NOW)
    assert spent == usage["expected"](org_a, since, **match)
    assert spent == spend_by_org(
        since,
        org_id=org_a.id,
        team_id=target.id if scope == "team" else None,
        key_id=target.id if scope == "key" else None,
    ).get(org_a.id, Decimal(0))


def test_the_snapshot_and_the_digest_read_the_same_totals(usage, org_a, org_b):
    facts = org_facts(NOW)
    for org in (org_a, org_b):
        assert facts[org.id]["spent_this_month"] == float(usage["expected"](org, MONTH))
    week = digest_context(org_a, NOW)["week"]
    assert week["cost"] == usage["expected"](org_a, *WEEK) == Decimal("1.43456790")
    assert week["requests"] == 3
