"""The dashboard's aggressiveness slider and explicit thresholds (docs/smart-routing.md):
thresholds set by hand decide while they are set, the page says so and shows the slider
where they sit; moving the slider (thresholds left as shown) and saving routes by the
slider and clears them; typing thresholds routes by them. A save that changes neither
keeps the thresholds."""

import re

import pytest

from core import smart
from governance.models import RoutingPolicy


def _policy(alice_client, org_a, spec, name="saver"):
    alice_client.post(
        "/api/gateway/routing-policies",
        {"name": name, "strategy": "smart", "models": ["lite", "pro"], "smart": spec},
        content_type="application/json",
    )
    return RoutingPolicy.objects.get(org=org_a, name=name)


def _slider(html: str) -> int:
    return int(
        re.search(r'<input type="range" name="aggressiveness"[^>]*value="(\d+)"', html).group(1)
    )


def _hidden(html: str, name: str) -> str:
    return re.search(rf'<input type="hidden" name="{name}" value="([^"]*)"', html).group(1)


def _edit_post(alice_client, org_a, policy, **fields):
    page = alice_client.get(f"/o/{org_a.slug}/routing/{policy.id}/").content.decode()
    data = {
        "strategy": "smart",
        "models": "lite, pro",
        "classifier": "rules",
        "is_active": "on",
        "aggressiveness": str(_slider(page)),
        "thresholds": _hidden(page, "thresholds_shown"),
        "aggressiveness_shown": _hidden(page, "aggressiveness_shown"),
        "thresholds_shown": _hidden(page, "thresholds_shown"),
        **fields,
    }
    response = alice_client.post(f"/o/{org_a.slug}/routing/{policy.id}/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    policy.refresh_from_db()
    return policy.smart


@pytest.mark.django_db
def test_explicit_thresholds_are_said_on_the_page_and_the_slider_shows_where_they_sit(
    alice_client, org_a
):
    top = smart.thresholds_for(0.7, 2)[-1]
    policy = _policy(alice_client, org_a, {"thresholds": [top]})
    html = alice_client.get(f"/o/{org_a.slug}/routing/{policy.id}/").content.decode()
    assert "set by hand" in html
    assert _slider(html) == 70
    plain = _policy(alice_client, org_a, {"aggressiveness": 0.3}, name="plain")
    html = alice_client.get(f"/o/{org_a.slug}/routing/{plain.id}/").content.decode()
    assert "set by hand" not in html and _slider(html) == 30


@pytest.mark.django_db
def test_moving_the_slider_and_saving_clears_explicit_thresholds(alice_client, org_a):
    policy = _policy(alice_client, org_a, {"thresholds": [0.2]})
    saved = _edit_post(alice_client, org_a, policy, aggressiveness="80")
    assert saved.get("thresholds") is None and saved["aggressiveness"] == 0.8


@pytest.mark.django_db
def test_typed_thresholds_win_over_a_moved_slider(alice_client, org_a):
    policy = _policy(alice_client, org_a, {"thresholds": [0.2]})
    saved = _edit_post(alice_client, org_a, policy, aggressiveness="80", thresholds="0.35")
    assert saved["thresholds"] == [0.35] and "aggressiveness" not in saved


@pytest.mark.django_db
def test_a_save_that_changes_neither_keeps_the_thresholds(alice_client, org_a):
    policy = _policy(alice_client, org_a, {"thresholds": [0.2]})
    saved = _edit_post(alice_client, org_a, policy)
    assert saved["thresholds"] == [0.2]


@pytest.mark.django_db
def test_the_org_default_s_slider_works_the_same_way(alice_client, org_a):
    from gateway.models import GatewayConfig

    alice_client.put(
        "/api/gateway/config",
        {"smart_tiers": ["lite", "pro"], "smart": {"thresholds": [0.2]}},
        content_type="application/json",
    )
    url = f"/o/{org_a.slug}/routing/"
    html = alice_client.get(url).content.decode()
    section = html[html.index('id="org-smart"') :]
    assert "set by hand" in section
    shown = {
        "form": "org_smart",
        "smart_tiers": "lite, pro",
        "auto_model_alias": "auto",
        "classifier": "rules",
        "aggressiveness_shown": _hidden(section, "aggressiveness_shown"),
        "thresholds_shown": _hidden(section, "thresholds_shown"),
        "thresholds": _hidden(section, "thresholds_shown"),
    }
    unchanged = {**shown, "aggressiveness": _hidden(section, "aggressiveness_shown")}
    assert alice_client.post(url, unchanged).status_code == 302
    assert GatewayConfig.objects.get(org=org_a).smart["thresholds"] == [0.2]
    assert alice_client.post(url, {**shown, "aggressiveness": "10"}).status_code == 302
    saved = GatewayConfig.objects.get(org=org_a).smart
    assert saved.get("thresholds") is None and saved["aggressiveness"] == 0.1


@pytest.mark.django_db
def test_a_tiny_threshold_is_shown_as_a_decimal_the_box_reads_back(alice_client, org_a):
    """A re-calibration can save 1e-06 (its floor): shown as "1e-06", the box refused its
    own value, so the page could not be saved without retyping it."""
    policy = _policy(alice_client, org_a, {"thresholds": [1e-06]})
    html = alice_client.get(f"/o/{org_a.slug}/routing/{policy.id}/").content.decode()
    assert 'value="0.000001"' in html
    assert _edit_post(alice_client, org_a, policy)["thresholds"] == [1e-06]


@pytest.mark.django_db
def test_the_routing_page_says_which_tiers_no_active_deployment_serves(
    alice_client, charlie_client, org_a
):
    """A tier typed wrong (or whose deployments are all off) saves, and then every prompt
    scored onto it goes up a tier or fails: the page says so beside the tiers."""
    from gateway import services
    from gateway.tests.conftest import ACTOR

    mock = services.provider_save(actor=ACTOR, org=org_a, name="mock", kind="mock")
    services.deployment_save(
        actor=ACTOR, org=org_a, model_name="lite", provider=mock, upstream_model="mock-chat"
    )
    _policy(alice_client, org_a, {}, name="typo")  # tiers lite, pro: pro has no deployment
    alice_client.put(
        "/api/gateway/config",
        {"smart_tiers": ["lite", "prro"], "smart": {}},
        content_type="application/json",
    )
    html = alice_client.get(f"/o/{org_a.slug}/routing/").content.decode()
    assert "no active deployment: pro" in html
    assert "no active deployment: prro" in html
    assert "no active deployment: lite" not in html
    assert charlie_client.get(f"/o/{org_a.slug}/routing/").status_code == 404
