"""A smart routing row the checks no longer pass is published as what the log says: with
the default settings when its tiers can be smart-routed, not smart-routed at all when they
cannot (the log said "using the defaults" for both)."""

import pytest

from gateway.models import GatewayConfig
from gateway.snapshot_builder import build_snapshot
from governance.models import RoutingPolicy

pytestmark = pytest.mark.django_db


def _policy(org, models, smart):
    # Written around the service (by hand, or before a check existed), as the builder must bear.
    return RoutingPolicy.objects.create(
        org=org, name="tiers", strategy="smart", model_names=models, smart=smart
    )


def test_settings_refused_with_good_tiers_use_the_defaults(org_a, caplog):
    _policy(org_a, ["small", "big"], {"classifier": "no-such"})
    with caplog.at_level("ERROR", logger="bonito.gateway.snapshot"):
        policy = build_snapshot().orgs[org_a.id].routing_policies["tiers"]
    assert policy.smart is not None and policy.smart.tiers == ("small", "big")
    assert "using the defaults" in caplog.text and "not smart-routed" not in caplog.text


def test_tiers_that_cannot_be_routed_are_said_not_smart_routed(org_a, caplog):
    _policy(org_a, ["only-one"], {})
    GatewayConfig.objects.create(org=org_a, smart_tiers=["same", "same"])
    with caplog.at_level("ERROR", logger="bonito.gateway.snapshot"):
        org = build_snapshot().orgs[org_a.id]
    assert org.routing_policies["tiers"].smart is None and org.smart is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    for line in lines:
        assert "not smart-routed" in line and "using the defaults" not in line
    assert any(line.startswith("routing policy") for line in lines)
    assert any(line.startswith("the gateway config of org") for line in lines)
