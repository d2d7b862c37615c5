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
    # Tokens are not numbers: the CSRF token and the forms' `seen` digest may hold "9e8".
    shown = re.sub(r'name="(csrfmiddlewaretoken|seen)" value="[^"]*"', "", html)
    assert not re.findall(r"\d[eE]-?\d", shown), re.findall(r".{0,60}\d[eE]-?\d", shown)
    assert "thresholds 0.000001</td>" in html  # the table, as its Edit box shows it
    assert "aggressiveness 0.00001, A/B 0.002 % → strong" in html  # the percent the box asks
    assert "thresholds 0.000001, 0.000002)" in html  # the org default's summary
    edit = alice_client.get(f"/o/{org_a.slug}/routing/{hand.id}/").content.decode()
    assert 'name="thresholds" value="0.000001"' in edit


def _error_beside(html: str, field: str, form_id: str) -> str:
    """The error list right after ``field``'s label in the form ``form_id`` ('' if none)."""
    form = html[html.index(f'id="{form_id}"') :]
    form = form[: form.index("</form>")]
    after = form[form.index("</label>", form.index(f'name="{field}"')) + len("</label>") :]
    if not after.startswith('<ul class="errorlist'):
        return ""
    return after[: after.index("</ul>")]


def _flashed(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


ORG_FORM = {
    "form": "org_smart",
    "smart_tiers": "lite, pro",
    "classifier": "rules",
    "aggressiveness": "60",
    "thresholds": "",
    "aggressiveness_shown": "50",
    "thresholds_shown": "",
}


@pytest.mark.parametrize("alias", ["", "   "])
def test_the_org_default_form_refuses_an_empty_alias_as_rest_does(alice_client, org_a, alias):
    """It said "saved" and replaced the alias with `auto`: refused, as REST refuses it,
    with the error beside the field and what was typed kept."""
    from gateway.models import GatewayConfig

    services.gateway_config_set(actor=ACTOR, org=org_a, smart_tiers=["lite", "pro"])
    services.gateway_config_set(actor=ACTOR, org=org_a, auto_model_alias="cheap")
    response = alice_client.post(
        f"/o/{org_a.slug}/routing/", {**ORG_FORM, "auto_model_alias": alias}
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "smart routing is saved" not in html
    rest = alice_client.put(
        "/api/gateway/config", {"auto_model_alias": alias}, content_type="application/json"
    )
    assert rest.status_code == 400
    assert list(rest.json()) == ["auto_model_alias"]  # REST's serializer: "may not be blank"
    assert services.ALIAS_EMPTY in _error_beside(html, "auto_model_alias", "org-smart-form")
    assert _flashed(response) == [f"Alias: {services.ALIAS_EMPTY}"]
    form = html[html.index('id="org-smart-form"') :]
    assert 'name="smart_tiers" value="lite, pro"' in form  # as typed
    assert 'name="aggressiveness" min="0" max="100" step="1" value="60"' in form
    assert GatewayConfig.objects.get(org=org_a).auto_model_alias == "cheap"


NEW_POLICY = {
    "name": "saver",
    "strategy": "smart",
    "models": "lite, pro",
    "classifier": "rules",
    "aggressiveness": "50",
}
# (what the form was sent, the field whose error it is, what the message must say)
REFUSED_SMART = [
    ({"thresholds": "0.2, 0.4"}, "thresholds", "Thresholds: must be a list of 1 score (one"),
    ({"thresholds": "1.5"}, "thresholds", "Thresholds: must be from 0 to 1, not 1.5."),
    (
        {"models": "lite, mid, pro", "thresholds": "0.5, 0.2"},
        "thresholds",
        "Thresholds: must be strictly ascending.",
    ),
    (
        {"ab_share": "10", "ab_classifier": "rules"},
        "ab_classifier",
        "A/B arm: must differ from Classifier.",
    ),
    ({"models": "lite"}, "models", "Models: Smart routing needs at least two tiers"),
    ({"models": "lite, lite"}, "models", "Models: Each tier must be a different model."),
]


@pytest.mark.parametrize(("sent", "field", "said"), REFUSED_SMART)
def test_a_refused_smart_policy_names_the_form_s_fields_not_rest_s(
    alice_client, org_a, sent, field, said
):
    """The service's messages name REST's settings ("Smart: smart.thresholds must be"):
    the dashboard names the field as the page labels it, beside that field; REST keeps its
    own wording."""
    from governance.models import RoutingPolicy

    new = alice_client.post(f"/o/{org_a.slug}/routing/", {**NEW_POLICY, **sent})
    edit_of = _policy(org_a, "old", {"aggressiveness": 0.5})
    edited = alice_client.post(
        f"/o/{org_a.slug}/routing/{edit_of.id}/", {**NEW_POLICY, "is_active": "on", **sent}
    )
    for response, form_id in ((new, "new-routing-policy"), (edited, "routing-policy-edit")):
        assert response.status_code == 400
        [shown] = _flashed(response)
        assert shown.startswith(said), shown
        assert "smart." not in shown and "Smart:" not in shown
        beside = _error_beside(response.content.decode(), field, form_id)
        assert said.split(": ", 1)[1] in beside.replace("&#x27;", "'"), beside
    assert not RoutingPolicy.objects.filter(org=org_a, name="saver").exists()
    assert RoutingPolicy.objects.get(org=org_a, name="old").smart == {"aggressiveness": 0.5}


def test_rest_keeps_its_own_names_for_the_smart_settings(alice_client, org_a):
    response = alice_client.post(
        "/api/gateway/routing-policies",
        {
            "name": "saver",
            "strategy": "smart",
            "models": ["lite", "pro"],
            "smart": {"thresholds": [0.2, 0.4]},
        },
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json()["smart"][0].startswith("smart.thresholds must be a list of 1 score")


def test_the_org_default_form_names_its_own_fields(alice_client, org_a):
    response = alice_client.post(
        f"/o/{org_a.slug}/routing/",
        {**ORG_FORM, "auto_model_alias": "auto", "smart_tiers": "lite", "thresholds": "0.3, 0.6"},
    )
    assert response.status_code == 400
    [shown] = _flashed(response)
    assert shown.startswith("Tiers: Smart routing needs at least two tiers"), shown
    html = response.content.decode()
    assert "at least two tiers" in _error_beside(html, "smart_tiers", "org-smart-form")
    assert 'name="thresholds" value="0.3, 0.6"' in html  # as typed
    response = alice_client.post(
        f"/o/{org_a.slug}/routing/",
        {**ORG_FORM, "auto_model_alias": "auto", "thresholds": "0.3, 0.6"},
    )
    [shown] = _flashed(response)
    assert shown.startswith("Thresholds: must be a list of 1 score"), shown
