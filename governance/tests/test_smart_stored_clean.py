"""Smart settings are stored clean, whichever way they come in: an `ab` or `keywords`
emptied by a partial update (or written empty in the config file) is left out, -0.0 is
stored as 0.0, so an export and a diff show only what routes. An `ab` left with one of
its two keys is refused, saying which is missing and how to remove the test."""

from io import StringIO

import pytest
from django.core.management import call_command

from gateway.models import GatewayConfig
from governance.models import RoutingPolicy
from governance.tests.test_smart_partial_update import _policy

pytestmark = pytest.mark.django_db
API = "/api/gateway/routing-policies"
CONFIG = "/api/gateway/config"
AB = {"share": 0.3, "classifier": "strong"}


def _patch(client, pk, smart):
    return client.patch(f"{API}/{pk}", {"smart": smart}, content_type="application/json")


def _stored(pk):
    return RoutingPolicy.objects.get(pk=pk).smart


def test_removing_the_last_keyword_category_removes_keywords(alice_client, org_a):
    pk = _policy(alice_client, {"keywords": {"math": ["integral"]}})
    response = _patch(alice_client, pk, {"keywords": {"math": None}})
    assert response.status_code == 200, response.content
    assert response.json()["smart"] == {} == _stored(pk)


def test_an_ab_emptied_by_nulls_is_removed(alice_client, org_a):
    pk = _policy(alice_client, {"ab": AB})
    response = _patch(alice_client, pk, {"ab": {"share": None, "classifier": None}})
    assert response.status_code == 200, response.content
    assert _stored(pk) == {}


@pytest.mark.parametrize(("removed", "left"), [("share", "classifier"), ("classifier", "share")])
def test_an_ab_left_with_one_of_its_two_keys_is_refused(alice_client, org_a, removed, left):
    pk = _policy(alice_client, {"ab": AB})
    response = _patch(alice_client, pk, {"ab": {removed: None}})
    assert response.status_code == 400
    (message,) = response.json()["smart"]
    assert message.startswith(f"smart.ab needs both share and classifier; it has only {left}")
    assert "set ab to null" in message
    assert _stored(pk) == {"ab": AB}  # refused: nothing changed
    assert _patch(alice_client, pk, {"ab": None}).status_code == 200
    assert _stored(pk) == {}


def test_a_share_of_0_with_its_arm_is_kept(alice_client, org_a):
    """Both keys, the test off: what raising the share later routes by."""
    pk = _policy(alice_client, {"ab": {"share": 0, "classifier": "strong"}})
    assert _stored(pk) == {"ab": {"share": 0, "classifier": "strong"}}


def test_minus_zero_is_stored_as_zero(alice_client, org_a):
    pk = _policy(
        alice_client, {"aggressiveness": -0.0, "ab": {"share": -0.0, "classifier": "strong"}}
    )
    stored = _stored(pk)
    assert stored == {"aggressiveness": 0.0, "ab": {"share": 0.0, "classifier": "strong"}}
    assert str(stored["aggressiveness"]) == "0.0" and str(stored["ab"]["share"]) == "0.0"
    raw = RoutingPolicy.objects.filter(pk=pk).values_list("smart", flat=True).get()
    assert "-0" not in str(raw)


def test_the_org_default_is_stored_clean_too(alice_client, org_a):
    on = alice_client.put(
        CONFIG,
        {"smart_tiers": ["lite", "pro"], "smart": {"keywords": {"code": ["kotlin"]}}},
        content_type="application/json",
    )
    assert on.status_code == 200, on.content
    response = alice_client.put(
        CONFIG,
        {"smart": {"keywords": {"code": None}, "aggressiveness": -0.0}},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    assert GatewayConfig.objects.get(org=org_a).smart == {"aggressiveness": 0.0}
    assert str(GatewayConfig.objects.get(org=org_a).smart["aggressiveness"]) == "0.0"


def test_apply_config_stores_no_empty_ab_or_keywords(tmp_path, org_a):
    path = tmp_path / "bonito.yaml"
    path.write_text(
        f"orgs:\n  - slug: {org_a.slug}\n    name: Acme\n"
        "    routing_policies:\n"
        "      - {name: saver, strategy: smart, models: [lite, pro],"
        " smart: {ab: {}, keywords: {}, aggressiveness: -0.0}}\n"
        "    gateway:\n      smart_tiers: [lite, pro]\n      smart: {ab: {}, keywords: {}}\n"
    )
    call_command("apply_config", str(path), stdout=StringIO(), stderr=StringIO())
    assert RoutingPolicy.objects.get(org=org_a, name="saver").smart == {"aggressiveness": 0.0}
    assert GatewayConfig.objects.get(org=org_a).smart == {}


def test_the_data_migrations_make_an_ab_saved_with_one_key_whole_as_it_was_served(
    alice_client, org_a
):
    """Before the both-keys check an `ab` could be saved with one key; such a policy was
    refused on its next save. Migrations gateway 0014 and governance 0008 complete it as it
    was served: an arm alone gets share 0, a share of 0 alone is removed."""
    import importlib

    from django.apps import apps

    from core import smart as smart_settings

    pk = _policy(alice_client, {})
    other = _policy(alice_client, {"ab": AB}, name="kept")
    RoutingPolicy.objects.filter(pk=pk).update(smart={"ab": {"classifier": "strong"}})
    config, _ = GatewayConfig.objects.get_or_create(org=org_a)
    GatewayConfig.objects.filter(pk=config.pk).update(smart={"ab": {"share": 0}, "within": "cost"})
    tiers = ["lite", "pro"]
    served = [
        smart_settings.resolve(s, tiers, serving=True)
        for s in (_stored(pk), GatewayConfig.objects.get(pk=config.pk).smart)
    ]
    assert _patch(alice_client, pk, {"within": "failover"}).status_code == 400  # as it was

    importlib.import_module("gateway.migrations.0014_smart_ab_completed").forwards(apps, None)
    importlib.import_module("governance.migrations.0008_smart_ab_completed").forwards(apps, None)

    assert _stored(pk) == {"ab": {"share": 0, "classifier": "strong"}}
    assert GatewayConfig.objects.get(pk=config.pk).smart == {"within": "cost"}
    assert _stored(other) == {"ab": AB}  # whole ones untouched
    assert served == [
        smart_settings.resolve(s, tiers, serving=True)
        for s in (_stored(pk), GatewayConfig.objects.get(pk=config.pk).smart)
    ]
    response = _patch(alice_client, pk, {"within": "failover"})
    assert response.status_code == 200, response.content
