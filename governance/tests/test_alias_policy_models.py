"""A routing policy may not list the org's smart routing alias as a model (a smart tier, or
a model of any strategy), nor a name like it (only case, width or spacing differ), while the
org default is on: no deployment can take that name (gateway.services.deployment_save), so
the policy could never route to it. POST {"models": ["lite", "smart"]} with the alias
`smart` was a 201 with no warning. Every way in refuses it, and the reverse: an alias that
a policy's model already has."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from gateway import services
from gateway.models import GatewayConfig
from gateway.tests.conftest import ACTOR
from governance import services as governance_services
from governance.models import RoutingPolicy

pytestmark = pytest.mark.django_db
JSON = "application/json"
API = "/api/gateway/routing-policies"
ALIAS_SMART = (
    "'smart' is the alias of this organization's smart routing: no deployment can take that name"
)


@pytest.fixture
def alias_smart(org_a):
    services.gateway_config_set(
        actor=ACTOR, org=org_a, smart_tiers=["lite", "pro"], auto_model_alias="smart"
    )


def _policy(org, models, name="s2", strategy="smart"):
    return governance_services.routing_policy_save(
        actor=ACTOR, org=org, name=name, strategy=strategy, models=models
    )


# ------------------------------------------------------------------------------ REST
def test_rest_create_refuses_the_alias_as_a_tier(alice_client, alias_smart, charlie_client):
    put = alice_client.put(
        "/api/gateway/config",
        {"smart_tiers": ["lite", "pro"], "auto_model_alias": "smart"},
        content_type=JSON,
    )
    assert put.status_code == 200, put.content
    refused = alice_client.post(
        API, {"name": "s3", "strategy": "smart", "models": ["lite", "smart"]}, content_type=JSON
    )
    assert refused.status_code == 400, refused.content
    message = refused.json()["models"][0]
    assert message.startswith(ALIAS_SMART), message
    assert "or change the alias under Routing" in message
    # a name like it: no deployment may take that one either
    alike = alice_client.post(
        API, {"name": "s3", "strategy": "smart", "models": ["lite", "SMART"]}, content_type=JSON
    )
    assert alike.status_code == 400
    assert alike.json()["models"][0].startswith(
        "'SMART' looks like 'smart', the alias of this organization's smart routing"
    )
    # any strategy: a failover policy's model is looked up by name as well
    failover = alice_client.post(
        API, {"name": "f", "strategy": "failover", "models": ["smart"]}, content_type=JSON
    )
    assert failover.status_code == 400 and failover.json()["models"][0].startswith(ALIAS_SMART)
    assert not RoutingPolicy.objects.exists()
    # the outsider's org has no alias `smart`: its own policy is its business
    other = charlie_client.post(
        API, {"name": "s3", "strategy": "smart", "models": ["lite", "smart"]}, content_type=JSON
    )
    assert other.status_code == 201, other.content
    ok = alice_client.post(
        API, {"name": "s3", "strategy": "smart", "models": ["lite", "pro"]}, content_type=JSON
    )
    assert ok.status_code == 201, ok.content


def test_rest_patch_and_put_refuse_it(alice_client, org_a, alias_smart):
    policy = _policy(org_a, ["lite", "pro"])
    url = f"{API}/{policy.id}"
    patched = alice_client.patch(url, {"models": ["smart", "pro"]}, content_type=JSON)
    assert patched.status_code == 400 and patched.json()["models"][0].startswith(ALIAS_SMART)
    put = alice_client.put(
        url, {"name": "s2", "strategy": "smart", "models": ["lite", "smart"]}, content_type=JSON
    )
    assert put.status_code == 400 and put.json()["models"][0].startswith(ALIAS_SMART)
    assert RoutingPolicy.objects.get(pk=policy.pk).model_names == ["lite", "pro"]


def test_the_alias_is_not_checked_while_the_org_default_is_off(alice_client, org_a):
    """With no tiers the alias means nothing: a deployment named so is served as usual."""
    services.gateway_config_set(actor=ACTOR, org=org_a, smart_tiers=[], auto_model_alias="smart")
    created = alice_client.post(
        API, {"name": "s3", "strategy": "smart", "models": ["lite", "smart"]}, content_type=JSON
    )
    assert created.status_code == 201, created.content
    # turning the org default on now is refused: the policy's tier would lose its name
    on = alice_client.put(
        "/api/gateway/config", {"smart_tiers": ["lite", "pro"]}, content_type=JSON
    )
    assert on.status_code == 400, on.content
    assert on.json()["auto_model_alias"] == [
        "'smart' is already a model of the routing policy 's3'; pick an alias that no model "
        "or tier is named."
    ]
    assert GatewayConfig.objects.get(org=org_a).smart_tiers == []


# ------------------------------------------------------------------------------ the reverse
def test_config_put_refuses_an_alias_a_policy_lists(alice_client, org_a):
    _policy(org_a, ["lite", "smart"])
    _policy(org_a, ["gpt", "Claude"], name="f", strategy="failover")
    put = alice_client.put(
        "/api/gateway/config",
        {"smart_tiers": ["lite", "pro"], "auto_model_alias": "smart"},
        content_type=JSON,
    )
    assert put.status_code == 400, put.content
    assert put.json()["auto_model_alias"] == [
        "'smart' is already a model of the routing policy 's2'; pick an alias that no model "
        "or tier is named."
    ]
    alike = alice_client.put(
        "/api/gateway/config",
        {"smart_tiers": ["lite", "pro"], "auto_model_alias": "claude"},
        content_type=JSON,
    )
    assert alike.status_code == 400
    assert alike.json()["auto_model_alias"][0].startswith(
        "'claude' looks like 'Claude', a model of the routing policy 'f'"
    )
    assert not GatewayConfig.objects.filter(org=org_a, auto_model_alias="smart").exists()
    ok = alice_client.put(
        "/api/gateway/config",
        {"smart_tiers": ["lite", "pro"], "auto_model_alias": "auto"},
        content_type=JSON,
    )
    assert ok.status_code == 200, ok.content


# ------------------------------------------------------------------------------ config files
def test_apply_config_refuses_it_at_its_path(tmp_path, org_a, alias_smart):
    path = tmp_path / "bonito.yaml"
    path.write_text(
        f"orgs:\n  - slug: {org_a.slug}\n    name: {org_a.name}\n"
        "    routing_policies:\n"
        "      - {name: s3, strategy: smart, models: [lite, smart]}\n"
    )
    with pytest.raises(CommandError) as refused:
        call_command("apply_config", str(path), stdout=StringIO(), stderr=StringIO())
    assert f"orgs[0].routing_policies[0].models: {ALIAS_SMART}" in str(refused.value), refused.value
    assert not RoutingPolicy.objects.exists()


def test_apply_config_refuses_the_alias_a_policy_lists(tmp_path, org_a):
    path = tmp_path / "bonito.yaml"
    path.write_text(
        f"orgs:\n  - slug: {org_a.slug}\n    name: {org_a.name}\n"
        "    routing_policies:\n"
        "      - {name: s3, strategy: smart, models: [lite, smart]}\n"
        "    gateway:\n      smart_tiers: [lite, pro]\n      auto_model_alias: smart\n"
    )
    with pytest.raises(CommandError) as refused:
        call_command("apply_config", str(path), stdout=StringIO(), stderr=StringIO())
    assert (
        "orgs[0].gateway.auto_model_alias: 'smart' is already a model of the routing policy "
        "'s3'" in str(refused.value)
    ), refused.value
    assert not RoutingPolicy.objects.exists()  # all of the file or none of it


def test_rest_config_apply_refuses_it(alice_client, alias_smart):
    applied = alice_client.post(
        "/api/gateway/config/apply",
        {"yaml": "routing_policies:\n  - {name: s3, strategy: smart, models: [lite, smart]}\n"},
        content_type=JSON,
    )
    assert applied.status_code == 400, applied.content
    assert ALIAS_SMART in str(applied.json())
    assert not RoutingPolicy.objects.exists()


# ------------------------------------------------------------------------------ dashboard
def test_the_dashboard_forms_refuse_it_beside_the_field(alice_client, org_a, alias_smart):
    url = f"/o/{org_a.slug}/routing/"
    new = alice_client.post(url, {"name": "s3", "strategy": "smart", "models": "lite, smart"})
    assert new.status_code == 400
    page = new.content.decode()
    form = page[page.index('id="new-routing-policy"') :]
    beside = form[form.index('name="models"') :][:3000]
    assert "&#x27;smart&#x27; is the alias of this organization&#x27;s smart routing" in beside
    assert not RoutingPolicy.objects.exists()

    policy = _policy(org_a, ["lite", "pro"])
    edit = alice_client.post(
        f"/o/{org_a.slug}/routing/{policy.id}/",
        {"strategy": "smart", "models": "smart, pro", "is_active": "on", "aggressiveness": "50"},
    )
    assert edit.status_code == 400
    assert "the alias of this organization&#x27;s smart routing" in edit.content.decode()
    assert RoutingPolicy.objects.get(pk=policy.pk).model_names == ["lite", "pro"]

    # the org default's form, the other way round: an alias the policy lists
    def org_form_posts(tiers, alias):
        return alice_client.post(
            url,
            {
                "form": "org_smart",
                "smart_tiers": tiers,
                "auto_model_alias": alias,
                "aggressiveness": "50",
            },
        )

    org_form = org_form_posts("lite, pro", "lite")
    assert org_form.status_code == 400
    assert "&#x27;lite&#x27; is already one of the organization&#x27;s smart tiers" in (
        org_form.content.decode()
    )
    services.gateway_config_set(actor=ACTOR, org=org_a, smart_tiers=["a", "b"])
    org_form = org_form_posts("a, b", "pro")
    assert org_form.status_code == 400
    assert "&#x27;pro&#x27; is already a model of the routing policy &#x27;s2&#x27;" in (
        org_form.content.decode()
    )
    assert GatewayConfig.objects.get(org=org_a).auto_model_alias == "smart"


def test_the_admin_refuses_it(admin_client, org_a, alias_smart):
    from bonito.tests.admin_forms import form_data

    policy = _policy(org_a, ["lite", "pro"])
    url = f"/admin/governance/routingpolicy/{policy.pk}/change/"
    response = admin_client.post(
        url, form_data(admin_client.get(url), model_names='["lite", "smart"]')
    )
    assert response.status_code == 302
    messages = [str(m) for m in admin_client.get(response.url).context["messages"]]
    assert any(ALIAS_SMART in m for m in messages), messages
    assert RoutingPolicy.objects.get(pk=policy.pk).model_names == ["lite", "pro"]


def test_charlie_cannot_see_alice_s_routing(charlie_client, org_a, alias_smart):
    assert charlie_client.get(f"/o/{org_a.slug}/routing/").status_code == 404
