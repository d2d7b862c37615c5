"""Smart routing on the dashboard's Routing page, as a member reads it: numbers written as
the edit boxes take them, the org default's form refusing what REST refuses, errors naming
the page's fields, and a warning where a lower tier costs more than the top one."""

import re

import pytest

from gateway import services
from gateway.tests.conftest import ACTOR
from governance import services as governance_services

pytestmark = pytest.mark.django_db


def _policy(org, name, spec, tiers=("lite", "pro")):
    return governance_services.routing_policy_save(
        actor=ACTOR, org=org, name=name, strategy="smart", models=list(tiers), smart=spec
    )


def test_the_routing_page_writes_smart_numbers_as_plain_decimals(alice_client, org_a):
    """The policy table and the org default's summary said 1e-06 where the edit box said
    0.000001: every number the page shows is a plain decimal."""
    hand = _policy(org_a, "hand", {"thresholds": [0.000001]})
    _policy(
        org_a, "slid", {"aggressiveness": 0.00001, "ab": {"share": 0.00002, "classifier": "strong"}}
    )
    services.gateway_config_set(
        actor=ACTOR,
        org=org_a,
        smart_tiers=["lite", "mid", "pro"],
        smart={"thresholds": [0.000001, 0.000002]},
    )
    html = alice_client.get(f"/o/{org_a.slug}/routing/").content.decode()
    assert not re.findall(r"\d[eE]-?\d", html), re.findall(r".{0,60}\d[eE]-?\d", html)
    assert "thresholds 0.000001</td>" in html  # the table, as its Edit box shows it
    assert "aggressiveness 0.00001, A/B 0.00002 → strong" in html
    assert "thresholds 0.000001, 0.000002)" in html  # the org default's summary
    edit = alice_client.get(f"/o/{org_a.slug}/routing/{hand.id}/").content.decode()
    assert 'name="thresholds" value="0.000001"' in edit
