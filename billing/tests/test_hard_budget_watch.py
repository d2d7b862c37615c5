"""The usage writer's copy of the hard budgets (billing.budgets._watched_budgets): a config
change re-reads the budgets of the orgs it names, not every org's."""

import time

import pytest

from billing import budgets
from billing.budgets import _watched_budgets, budget_save
from core.config_version import config_version_bump
from gateway import services as gateway_services
from orgs.audit import Actor

pytestmark = pytest.mark.django_db
ACTOR = Actor(via="test")


@pytest.fixture(autouse=True)
def fresh_watch(monkeypatch):
    monkeypatch.setattr(
        budgets, "_watch", {"at": -1e9, "stamp": None, "by_org": {}, "checked": {}, "bumped": set()}
    )


def test_a_change_rereads_only_the_budgets_of_the_orgs_it_names(org_a, org_b):
    a = budget_save(actor=ACTOR, org=org_a, amount_usd=10, hard=True)
    b = budget_save(actor=ACTOR, org=org_b, amount_usd=20, hard=True)
    clock = time.monotonic()
    first = _watched_budgets(clock)
    a0, b0 = first[org_a.id][0], first[org_b.id][0]
    assert (a0.amount_usd, b0.amount_usd) == (10, 20)
    assert _watched_budgets(clock + 1)[org_a.id][0] is a0  # nothing changed: nothing read

    budget_save(actor=ACTOR, org=org_b, amount_usd=30, hard=True, budget=b)
    second = _watched_budgets(clock + 2)
    assert second[org_b.id][0].amount_usd == 30  # the raised amount counts at once
    assert second[org_a.id][0] is a0  # org A's budgets were not read again

    gateway_services.api_key_create(actor=ACTOR, org=org_a, name="k")  # names org A
    third = _watched_budgets(clock + 3)
    assert third[org_a.id][0] is not a0 and third[org_b.id][0] is second[org_b.id][0]

    budget_save(actor=ACTOR, org=org_a, amount_usd=10, hard=True, is_active=False, budget=a)
    fourth = _watched_budgets(clock + 4)
    assert org_a.id not in fourth and fourth[org_b.id][0] is second[org_b.id][0]

    config_version_bump()  # a change that names no org: every org's budgets read again
    fifth = _watched_budgets(clock + 5)
    assert fifth[org_b.id][0] is not second[org_b.id][0]
    assert fifth[org_b.id][0].amount_usd == 30

    # The safety net: every org's read again after HARD_BUDGETS_RELOAD_S, change or not.
    sixth = _watched_budgets(clock + 5 + budgets.HARD_BUDGETS_RELOAD_S + 1)
    assert sixth[org_b.id][0] is not fifth[org_b.id][0]


def test_a_gap_in_the_change_log_rereads_every_org(org_a, org_b):
    from core.models import ConfigChange

    budget_save(actor=ACTOR, org=org_a, amount_usd=10, hard=True)
    budget_save(actor=ACTOR, org=org_b, amount_usd=20, hard=True)
    clock = time.monotonic()
    first = _watched_budgets(clock)
    gateway_services.api_key_create(actor=ACTOR, org=org_a, name="k")
    ConfigChange.objects.order_by("-version").first().delete()  # pruned: what changed is unknown
    second = _watched_budgets(clock + 1)
    assert second[org_b.id][0] is not first[org_b.id][0]
