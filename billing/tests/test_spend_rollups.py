"""Month-to-date and budget spend from rollups, raw edges and dirty hours
(billing.spend.spend_grouped), and the requests a tier's allowance counts
(requests_grouped), equal a scan of the raw rows: whatever the rows, the
watermark, the late rows landed in rolled hours, and the period's edges. And the
snapshot's facts refresh keeps each org's spend and blocks exactly those of a full build."""

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db.models import Count, Q, Sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.budgets import budget_save
from billing.models import UsageRecord
from billing.services import mark_dirty_hours, rollup_recent
from billing.spend import requests_grouped, spend_grouped
from core.months import month_bounds, month_key
from gateway import services as gateway_services
from gateway.snapshot_builder import build_snapshot, refresh_facts
from orgs import services as org_services
from orgs.audit import Actor

pytestmark = pytest.mark.django_db

ACTOR = Actor(via="test")
MONTH = datetime(2026, 11, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 20, 12, 34, 56, tzinfo=UTC)
FIELDS = {"org": ("org_id",), "team": ("org_id", "team_id"), "key": ("org_id", "key_id")}


def raw_scan(since, until, by) -> dict:
    rows = UsageRecord.objects.filter(created_at__gte=since)
    if until is not None:
        rows = rows.filter(created_at__lt=until)
    totals = rows.order_by().values_list(*FIELDS[by]).annotate(total=Sum("cost"))
    return {r[:-1]: r[-1] for r in totals}


def raw_requests(since, until) -> dict:
    rows = UsageRecord.objects.filter(created_at__gte=since)
    if until is not None:
        rows = rows.filter(created_at__lt=until)
    counted = Count("id", filter=~Q(status="rejected"))
    return {(o,): n for o, n in rows.order_by().values_list("org_id").annotate(n=counted)}


def add_rows(draw, orgs, keys, teams, start, end, n):
    span = int((end - start).total_seconds())
    for _ in range(n):
        org = draw(st.sampled_from(orgs))
        UsageRecord.objects.create(
            id=uuid.uuid4(),
            org=org,
            key=draw(st.sampled_from([None, *[k for k in keys if k.org_id == org.id]])),
            team=draw(st.sampled_from([None, *[t for t in teams if t.org_id == org.id]])),
            created_at=start + timedelta(seconds=draw(st.integers(0, span - 1))),
            model_requested="chat",
            model_used="chat",
            provider="fake",
            status=draw(st.sampled_from(["success", "error", "rejected"])),
            cost=Decimal(draw(st.integers(0, 10**6))) / Decimal(10**8),
        )


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_spend_from_rollups_equals_a_raw_scan(org_a, org_b, data):
    from django.db import transaction

    draw = data.draw
    with transaction.atomic():
        team = org_services.team_create(actor=ACTOR, org=org_a, name="Platform")
        key, _ = gateway_services.api_key_create(actor=ACTOR, org=org_a, name="ci", team=team)
        key_b, _ = gateway_services.api_key_create(actor=ACTOR, org=org_b, name="b")
        orgs, keys, teams = [org_a, org_b], [key, key_b], [team]
        add_rows(draw, orgs, keys, teams, MONTH - timedelta(days=1), NOW, draw(st.integers(0, 40)))
        if draw(st.booleans()):  # rolled up to some point (else: no watermark yet)
            rolled_at = MONTH + timedelta(minutes=draw(st.integers(0, 19 * 24 * 60)))
            rollup_recent(now=rolled_at)
            # Late rows in hours already rolled up: marked dirty, as the usage writer does.
            late_start = rolled_at - timedelta(days=draw(st.integers(0, 5)), hours=3)
            before = set(UsageRecord.objects.values_list("id", flat=True))
            add_rows(draw, orgs, keys, teams, late_start, rolled_at, draw(st.integers(0, 10)))
            mark_dirty_hours(
                UsageRecord.objects.exclude(id__in=before).values_list("created_at", flat=True)
            )
            add_rows(draw, orgs, keys, teams, rolled_at, NOW, draw(st.integers(0, 10)))
        since = MONTH + timedelta(seconds=draw(st.integers(0, 19 * 86400)))
        since = draw(st.sampled_from([MONTH, since]))
        until = draw(
            st.sampled_from([None, NOW, since + timedelta(hours=draw(st.integers(0, 90)))])
        )
        for by in ("org", "team", "key"):
            assert spend_grouped(since, until, by=by) == raw_scan(since, until, by)
            assert spend_grouped(since, until, by=by, org_ids=[org_a.id]) == {
                g: t for g, t in raw_scan(since, until, by).items() if g[0] == org_a.id
            }
        assert requests_grouped(since, until) == raw_requests(since, until)
        assert requests_grouped(since, until, org_ids=[org_b.id]) == {
            g: n for g, n in raw_requests(since, until).items() if g[0] == org_b.id
        }
        transaction.set_rollback(True)


def test_the_facts_say_which_month_their_spend_is_of(org_a):
    """The month-to-date spend is the floor of that month's spend-cap counter only: the
    snapshot says which month it is of, and the refresh in a new month says the new one."""
    gateway_services.api_key_create(actor=ACTOR, org=org_a, name="ci")
    snap = build_snapshot()
    assert snap.orgs[org_a.id].spent_month == month_key()
    next_month = month_bounds()[1] + timedelta(minutes=1)
    fresh = refresh_facts(snap, next_month)
    assert fresh.orgs[org_a.id].spent_month == month_key(next_month)
    assert fresh.orgs[org_a.id].spent_this_month == 0.0


def test_the_facts_refresh_replaces_only_orgs_whose_facts_moved(org_a, org_b):
    key, _ = gateway_services.api_key_create(actor=ACTOR, org=org_a, name="ci")
    budget_save(actor=ACTOR, org=org_a, amount_usd="1", hard=True)
    snap = build_snapshot()
    assert refresh_facts(snap) is snap  # nothing moved: the same snapshot
    now = datetime.now(UTC)
    for cost in ("0.6", "0.4"):  # exactly the budget: spent, blocked
        UsageRecord.objects.create(
            id=uuid.uuid4(),
            org=org_a,
            key=key,
            created_at=now,
            model_requested="chat",
            model_used="chat",
            provider="fake",
            status="success",
            cost=Decimal(cost),
        )
    fresh = refresh_facts(snap)
    full = build_snapshot(snap.version)
    assert fresh.orgs[org_a.id] == full.orgs[org_a.id]
    assert fresh.orgs[org_a.id].spent_this_month == 1.0 and "org" in fresh.orgs[org_a.id].blocked
    assert fresh.orgs[org_b.id] is snap.orgs[org_b.id]  # unchanged: the same object
    assert fresh.keys is snap.keys  # keys are config, not facts: shared
