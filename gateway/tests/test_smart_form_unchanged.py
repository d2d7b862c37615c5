"""A smart policy's Edit page, or the org default's form, saved as the page shows it
changes nothing stored: the page always sends a classifier and a slider, and a save added
`"classifier": "rules"` (or the slider's 0.5) to settings saved over REST without them, so
the audit log showed a change where routing had none. A threshold however small (one set
over REST) is shown in a form the page saves again (one under about 1e-190 was written out
in more than the box's 200 characters, and the unchanged save was refused)."""

import pytest

from gateway.models import GatewayConfig
from gateway.tests.page_forms import form_as_shown
from governance.models import RoutingPolicy
from orgs.models import AuditLog

pytestmark = pytest.mark.django_db
API = "/api/gateway/routing-policies"
JSON = "application/json"


def _as_shown(client, url, marker="models") -> dict:
    return form_as_shown(client.get(url).content.decode(), marker)


SPECS = [
    {"thresholds": [0.1]},
    {},
    {"aggressiveness": 0.3, "ab": {"share": 0.2, "classifier": "strong"}},
    {"classifier": "rules", "aggressiveness": 0.5},
    {"thresholds": [5e-324]},
    {"thresholds": [1e-200], "within": "cost_optimized", "keywords": {"math": ["integral"]}},
]


@pytest.mark.parametrize("spec", SPECS)
def test_a_policy_saved_from_its_edit_page_as_shown_is_stored_as_it_was(alice_client, org_a, spec):
    created = alice_client.post(
        API,
        {"name": "odd", "strategy": "smart", "models": ["lite", "pro"], "smart": spec},
        content_type=JSON,
    )
    assert created.status_code == 201, created.content
    pk = created.json()["id"]
    url = f"/o/{org_a.slug}/routing/{pk}/"
    fields = _as_shown(alice_client, url)
    audits = AuditLog.objects.filter(action="routing_policy.update").count()
    response = alice_client.post(url, fields)
    assert response.status_code == 302, (fields, [str(m) for m in response.context["messages"]])
    assert RoutingPolicy.objects.get(pk=pk).smart == spec
    for entry in AuditLog.objects.filter(action="routing_policy.update")[audits:]:
        assert entry.changes.get("before", {}).get("smart") == entry.changes.get("after", {}).get(
            "smart"
        )


@pytest.mark.parametrize("spec", SPECS[:2] + SPECS[4:5])
def test_the_org_default_saved_from_its_form_as_shown_is_stored_as_it_was(
    alice_client, org_a, spec
):
    put = alice_client.put(
        "/api/gateway/config",
        {"smart_tiers": ["lite", "pro"], "smart": spec},
        content_type=JSON,
    )
    assert put.status_code == 200, put.content
    url = f"/o/{org_a.slug}/routing/"
    response = alice_client.post(url, _as_shown(alice_client, url, marker="org_smart"))
    assert response.status_code == 302, response.content.decode()[:3000]
    assert GatewayConfig.objects.get(org=org_a).smart == spec


def test_moving_the_slider_still_saves_it(alice_client, org_a):
    created = alice_client.post(
        API,
        {"name": "odd", "strategy": "smart", "models": ["lite", "pro"], "smart": {}},
        content_type=JSON,
    )
    pk = created.json()["id"]
    url = f"/o/{org_a.slug}/routing/{pk}/"
    fields = {**_as_shown(alice_client, url), "aggressiveness": "70", "classifier": "rules"}
    assert alice_client.post(url, fields).status_code == 302
    assert RoutingPolicy.objects.get(pk=pk).smart == {"aggressiveness": 0.7}
