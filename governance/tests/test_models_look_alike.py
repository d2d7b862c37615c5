"""A routing policy's models (a smart policy's tiers among them) and the org default's
smart tiers may not hold two entries that look alike (core.text.name_key: case, width,
spacing, a Cyrillic or Greek letter drawn like a Latin one), as aliases and deployment
names may not: a model is matched by its exact name, so one of the two would name no
deployment. The refusal names both entries, at the setting that lists them."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from gateway.models import GatewayConfig
from governance.models import RoutingPolicy

pytestmark = pytest.mark.django_db
API = "/api/gateway/routing-policies"
CONFIG = "/api/gateway/config"
JSON = "application/json"
LOOK_ALIKES = [
    "ｄｅｍｏ-chat-mini",  # full-width
    "DEMO-CHAT-MINI",  # case
    "dеmo-chat-mini",  # Cyrillic е
    "demo-chat-Mini",  # one letter's case
]


def _policy(client, strategy="smart", models=("demo-chat-mini", "demo-chat")):
    created = client.post(
        API, {"name": "saver", "strategy": strategy, "models": list(models)}, content_type=JSON
    )
    assert created.status_code == 201, created.content
    return created.json()["id"]


@pytest.mark.parametrize("other", LOOK_ALIKES)
@pytest.mark.parametrize("strategy", ["smart", "failover"])
def test_a_patch_listing_a_look_alike_model_is_refused_naming_both(
    alice_client, org_a, other, strategy
):
    pk = _policy(alice_client, strategy)
    response = alice_client.patch(
        f"{API}/{pk}", {"models": ["demo-chat-mini", other]}, content_type=JSON
    )
    assert response.status_code == 400, response.content
    (message,) = response.json()["models"]
    assert message.startswith(f"models: '{other}' looks like 'demo-chat-mini', also listed")
    assert RoutingPolicy.objects.get(pk=pk).model_names == ["demo-chat-mini", "demo-chat"]


def test_a_new_policy_with_look_alike_models_is_refused(alice_client, org_a):
    response = alice_client.post(
        API,
        {"name": "ha", "strategy": "failover", "models": ["chat", "Chat"]},
        content_type=JSON,
    )
    assert response.status_code == 400
    assert "'Chat' looks like 'chat'" in response.json()["models"][0]
    assert not RoutingPolicy.objects.filter(org=org_a).exists()


def test_a_trailing_space_is_still_the_same_tier(alice_client, org_a):
    pk = _policy(alice_client)
    response = alice_client.patch(
        f"{API}/{pk}", {"models": ["demo-chat-mini", "demo-chat-mini "]}, content_type=JSON
    )
    assert response.status_code == 400
    assert response.json()["models"] == ["Each tier must be a different model."]


def test_models_that_only_look_different_are_kept(alice_client, org_a):
    pk = _policy(alice_client)
    response = alice_client.patch(
        f"{API}/{pk}", {"models": ["demo-chat-mini", "demo-chat-max"]}, content_type=JSON
    )
    assert response.status_code == 200, response.content


def test_the_org_default_s_tiers_are_checked_at_smart_tiers(alice_client, org_a):
    response = alice_client.put(CONFIG, {"smart_tiers": ["lite", "ＬＩＴＥ"]}, content_type=JSON)
    assert response.status_code == 400
    (message,) = response.json()["smart_tiers"]
    assert message.startswith("smart_tiers: 'ＬＩＴＥ' looks like 'lite', also listed")
    assert not GatewayConfig.objects.filter(org=org_a).exclude(smart_tiers=[]).exists()


def test_apply_config_refuses_them_at_their_path(tmp_path, org_a):
    path = tmp_path / "bonito.yaml"
    path.write_text(
        f"orgs:\n  - slug: {org_a.slug}\n    name: Acme\n"
        "    routing_policies:\n"
        "      - {name: saver, strategy: smart, models: [lite, LITE]}\n"
    )
    with pytest.raises(CommandError) as refused:
        call_command("apply_config", str(path), stdout=StringIO(), stderr=StringIO())
    assert "orgs[0].routing_policies[0].models" in str(refused.value)
    assert "'LITE' looks like 'lite'" in str(refused.value)


def test_the_dashboard_shows_it_beside_the_models(alice_client, org_a):
    response = alice_client.post(
        f"/o/{org_a.slug}/routing/",
        {"name": "saver", "strategy": "smart", "models": "lite, Lite", "aggressiveness": "50"},
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "&#x27;Lite&#x27; looks like &#x27;lite&#x27;, also listed" in page
    assert "models: &#x27;Lite&#x27;" not in page  # the field's label leads it, not REST's path
