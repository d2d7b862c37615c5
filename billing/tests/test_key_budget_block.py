"""A key's hard budget refuses that key's requests with a reason that stays true when the
key is renamed or rotated: gateways that apply the change as a delta (the key alone) hold
exactly what a full build gives. The reason named the key by its name and masked secret,
which the delta did not rebuild (found by test_config_deltas' property test)."""

import pytest

from billing import budgets
from billing.tests.test_config_deltas import ACTOR, comparable
from core.config_version import current_version
from gateway import services as gateway_services
from gateway.dataplane.snapshot import apply_delta
from gateway.snapshot_builder import build_delta, build_snapshot

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "change",
    [
        lambda key: gateway_services.api_key_rotate(actor=ACTOR, key=key, grace_seconds=0),
        lambda key: gateway_services.api_key_rotate(actor=ACTOR, key=key, grace_seconds=3600),
        lambda key: gateway_services.api_key_update(actor=ACTOR, key=key, name="renamed"),
    ],
    ids=["rotate", "rotate-with-grace", "rename"],
)
def test_a_spent_key_budget_survives_a_key_change_applied_as_a_delta(org_a, change):
    snap = build_snapshot()
    key, _raw = gateway_services.api_key_create(actor=ACTOR, org=org_a, name="k")
    budgets.budget_save(
        actor=ACTOR, org=org_a, scope="key", key=key, amount_usd="0", hard=True
    )  # $0: spent at once, refuses the key
    snap = apply_delta(snap, build_delta(snap.version, current_version()))
    change(key)
    snap = apply_delta(snap, build_delta(snap.version, current_version()))
    full = build_snapshot()
    assert comparable(snap) == comparable(full)
    [block] = full.orgs[org_a.id].blocked.values()
    assert "budget of $0.00 for this key is spent" in block.reason
