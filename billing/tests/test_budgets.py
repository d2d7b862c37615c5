"""Budgets: thresholds alert once per period (email, in-app, webhook); hard budgets stop
the gateway with a 429 that says why, through the snapshot."""

import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from django.core import mail

from billing.budgets import budget_save, budgets_check_all
from billing.models import BudgetAlert, Notification, UsageRecord
from bonito.celery import app as celery_app
from core.months import month_bounds
from gateway import services as gateway_services
from gateway.tests.conftest import ACTOR, refresh_snapshot
from orgs import services as org_services

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def eager_tasks():
    assert celery_app.conf.task_always_eager  # set for every test by the root conftest


def _spend(org, amount, at=NOW, key=None, team=None):
    UsageRecord.objects.create(
        id=uuid.uuid4(),
        org=org,
        key=key,
        team=team,
        created_at=at,
        model_requested="chat",
        model_used="chat",
        provider="fake",
        status="success",
        cost=Decimal(str(amount)),
    )


@pytest.mark.django_db(transaction=True)
def test_thresholds_fire_exactly_once_per_period(
    org_a, alice, eager_tasks, fake_upstream_server, loopback_allowed
):
    fake_upstream_server.reset()
    hook = fake_upstream_server.url.replace("/v1", "/hooks")
    budget_save(actor=ACTOR, org=org_a, amount_usd=10, webhook_url=hook)
    _spend(org_a, 5.5)
    assert budgets_check_all(now=NOW) == 1  # 50%
    assert budgets_check_all(now=NOW) == 0  # not again
    _spend(org_a, 3)
    assert budgets_check_all(now=NOW) == 1  # 80%
    assert sorted(BudgetAlert.objects.values_list("threshold", flat=True)) == [50, 80]
    assert [m.to for m in mail.outbox] == [["alice@acme.test"], ["alice@acme.test"]]
    assert (
        "80% for Acme Corp" in mail.outbox[-1].subject
        and "passed 80% of its monthly budget" in mail.outbox[-1].body
    )
    assert "(spent $8.50, 85%)" in mail.outbox[-1].body
    assert Notification.objects.for_org(org_a).count() == 2
    assert (
        len(fake_upstream_server.hooks) == 2
        and "Acme Corp" in fake_upstream_server.hooks[0]["text"]
    )
    # Next month starts clean.
    assert budgets_check_all(now=NOW + timedelta(days=15)) == 0


@pytest.mark.django_db
@pytest.mark.django_db
def test_a_row_dated_past_the_period_counts_in_the_next_one_only(org_a):
    """An agent's clock running ahead dates a row minutes into the next day (or month): it
    is the next period's spend, not this one's as well."""
    from billing.budgets import budget_spends, budget_spent, org_facts

    daily = budget_save(actor=ACTOR, org=org_a, amount_usd=10, period="daily")
    monthly = budget_save(actor=ACTOR, org=org_a, amount_usd=100)
    end_of_day = NOW.replace(hour=23, minute=58)
    _spend(org_a, 1, at=end_of_day - timedelta(minutes=5))
    _spend(org_a, 2, at=end_of_day + timedelta(minutes=5))  # tomorrow 00:03
    assert budget_spent(daily, end_of_day) == Decimal(1)
    assert budget_spent(daily, end_of_day + timedelta(minutes=5)) == Decimal(2)
    assert budget_spends([daily, monthly], end_of_day) == {daily.id: 1, monthly.id: 3}
    month_end = month_bounds(NOW)[1]
    _spend(org_a, 4, at=month_end + timedelta(minutes=1))
    assert org_facts(month_end - timedelta(minutes=1))[org_a.id]["spent_this_month"] == 3.0


def test_team_and_key_budgets_count_only_their_spend(org_a, alice):
    team = org_services.team_create(actor=ACTOR, org=org_a, name="Research")
    key, _raw = gateway_services.api_key_create(actor=ACTOR, org=org_a, name="lab", team=team)
    budget_save(actor=ACTOR, org=org_a, amount_usd=1, scope="team", team=team, thresholds=[100])
    budget_save(
        actor=ACTOR, org=org_a, amount_usd=1, scope="key", key=key, period="daily", thresholds=[100]
    )
    _spend(org_a, 5)  # no team, no key
    _spend(
        org_a, 0.6, key=key, team=team, at=NOW - timedelta(days=1)
    )  # yesterday: the daily budget ignores it
    _spend(org_a, 0.5, key=key, team=team)
    budgets_check_all(now=NOW)
    assert list(BudgetAlert.objects.values_list("budget__scope", flat=True)) == ["team"]


@pytest.mark.django_db
def test_a_soft_budget_never_blocks(org_a, alice):
    budget_save(actor=ACTOR, org=org_a, amount_usd=1)
    _spend(org_a, 2)
    budgets_check_all(now=NOW)
    from billing.budgets import budget_blocks

    assert budget_blocks(NOW) == {}


@pytest.mark.django_db(transaction=True)
def test_a_spent_hard_budget_answers_429_on_v1_until_raised(acme, gw):
    from django.utils import timezone

    budget = budget_save(actor=ACTOR, org=acme.org, amount_usd=1, hard=True)
    _spend(acme.org, 1.5, at=timezone.now())
    budgets_check_all(now=timezone.now())
    refresh_snapshot()
    body = {"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {acme.raw}"}
    response = httpx.post(acme.base_url + "/chat/completions", json=body, headers=headers)
    assert response.status_code == 429
    error = response.json()["error"]
    assert (
        error["code"] == "budget_exceeded"
        and "monthly budget of $1.00 for Acme Corp is spent" in error["message"]
    )
    assert error["message"].endswith("or until an admin raises the budget.")  # nothing appended
    until_month_end = month_bounds(timezone.now())[1].timestamp() - time.time()
    assert abs(int(response.headers["retry-after"]) - until_month_end) < 60
    assert acme.fake.requests == []
    budget_save(actor=ACTOR, org=acme.org, amount_usd=5, hard=True, budget=budget)  # raised
    refresh_snapshot()
    assert (
        httpx.post(acme.base_url + "/chat/completions", json=body, headers=headers).status_code
        == 200
    )


@pytest.mark.django_db
def test_admins_add_budgets_and_see_alerts_in_the_dashboard(alice_client, bob_client, org_a):
    from django.urls import reverse

    from billing.models import Budget

    url = reverse("budget_create", args=[org_a.slug])
    assert bob_client.post(url, {"amount_usd": "5"}).status_code == 403
    alice_client.post(
        url,
        {"scope": "org", "period": "daily", "amount_usd": "5", "thresholds": "90", "hard": "on"},
    )
    budget = Budget.objects.get(org=org_a)
    assert budget.hard and budget.levels == [90] and budget.period == "daily"
    _spend(org_a, 4.6, at=datetime.now(UTC))
    budgets_check_all(now=datetime.now(UTC))
    page = alice_client.get(reverse("overview", args=[org_a.slug])).content.decode()
    assert "passed 90% of its daily budget of $5.00 (spent $4.60, 92%)" in page


@pytest.mark.django_db(transaction=True)
def test_the_free_tier_request_allowance_stops_v1_with_a_clear_429(acme, gw):
    from django.utils import timezone

    from orgs.models import TierLimit

    acme.org.tier = "free"
    acme.org.save()
    TierLimit.objects.update_or_create(tier="free", defaults={"monthly_requests": 2})
    for _ in range(2):
        _spend(acme.org, 0, at=timezone.now())
    refresh_snapshot()
    response = httpx.post(
        acme.base_url + "/chat/completions",
        headers={"Authorization": f"Bearer {acme.raw}"},
        json={"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 429
    message = response.json()["error"]["message"]
    assert "Free tier includes 2 requests a month" in message and message.endswith(" UTC.")


@pytest.mark.django_db
def test_the_tier_allowance_counts_rolled_up_and_raw_rows_but_not_refused_ones(org_a, org_b):
    """Read from the hourly/daily rollups and the raw rows after their watermark (never a
    scan of the month's raw rows), with the same answer: requests refused before going
    upstream ("rejected") do not use the allowance, wherever they are counted."""
    from billing.budgets import tier_blocks
    from billing.services import rollup_recent
    from orgs.models import TierLimit

    now = datetime(2026, 11, 20, 12, 30, tzinfo=UTC)
    TierLimit.objects.update_or_create(tier="free", defaults={"monthly_requests": 4})
    for org in (org_a, org_b):
        org.tier = "free"
        org.save()

    def row(org, at, status="success"):
        _spend(org, 0, at=at)
        UsageRecord.objects.filter(org=org, created_at=at).update(status=status)

    last_month = datetime(2026, 10, 31, 23, 0, tzinfo=UTC)
    for org in (org_a, org_b):
        row(org, last_month)  # another month: never counted
        for day in (2, 9):
            row(org, datetime(2026, 11, day, 10, tzinfo=UTC))
            row(org, datetime(2026, 11, day, 11, tzinfo=UTC), status="rejected")
        row(org, datetime(2026, 11, 15, 3, tzinfo=UTC), status="error")  # sent upstream: counts
    rollup_recent(now=datetime(2026, 11, 19, tzinfo=UTC))  # all of it into rollups
    assert tier_blocks(now) == {}  # 3 each: rejected rows are not counted
    row(org_a, datetime(2026, 11, 20, 9, tzinfo=UTC))  # raw, after the watermark
    row(org_b, datetime(2026, 11, 20, 9, 5, tzinfo=UTC), status="rejected")
    blocked = tier_blocks(now)
    assert list(blocked) == [org_a.id]
    assert "Free tier includes 4 requests a month" in blocked[org_a.id]["org"].reason
    assert tier_blocks(now, org_ids=[org_b.id]) == {}
    assert list(tier_blocks(now, org_ids=[org_a.id, org_b.id])) == [org_a.id]


@pytest.mark.django_db
def test_a_tier_spend_cap_caps_orgs_without_a_lower_one(org_a):
    from gateway.snapshot_builder import build_snapshot
    from orgs.models import TierLimit

    TierLimit.objects.update_or_create(
        tier="pro", defaults={"monthly_spend_cap_usd": Decimal("100")}
    )
    assert build_snapshot().orgs[org_a.id].spend_cap == 100.0
    from governance import services as gov

    gov.policy_set(actor=ACTOR, org=org_a, monthly_spend_cap_usd=Decimal("20"))
    assert build_snapshot().orgs[org_a.id].spend_cap == 20.0


def test_rest_spent_usd_is_a_plain_decimal_with_eight_places(alice_client, org_a):
    """spent_usd was str() of the database's sum: on SQLite '0.0000925000000000000'
    (nineteen places, not the cost column's eight), so the same spend read differently by
    database; it is written like every other spend, with the cost column's 8 places."""
    for cost in ("0.00003", "0.00003", "0.0000325"):
        UsageRecord.objects.create(
            org=org_a, status="success", cost=Decimal(cost), created_at=datetime.now(UTC)
        )
    response = alice_client.post(
        "/api/gateway/budgets", {"amount_usd": "5"}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["spent_usd"] == "0.00009250"
    listed = alice_client.get("/api/gateway/budgets").json()["results"]
    assert [b["spent_usd"] for b in listed] == ["0.00009250"]
