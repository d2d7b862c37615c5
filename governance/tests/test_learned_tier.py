"""The learned classifier is a feature of the tier (the product: `rules` is the Free tier's,
`learned` is Pro): TierLimit.learned_routing, edited by platform admins, by default no for
Free and yes for Pro and Enterprise (a missing row, or the flag left empty, means the
default). Every way in refuses it, as the classifier or as the A/B arm, for an org whose
tier lacks it, with a message naming the tiers that have it. Saved before a downgrade, it
is never refused on a request: the gateway scores those prompts with rules, and the
Routing page says so."""

from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from gateway import services
from gateway.models import GatewayConfig
from gateway.snapshot_builder import build_snapshot
from gateway.tests.conftest import ACTOR
from gateway.tests.test_tier_quotas import _set as set_tier_limit
from governance import services as governance_services
from governance.models import RoutingPolicy
from orgs import services as org_services
from orgs.models import TierLimit, tier_includes_learned

pytestmark = pytest.mark.django_db
JSON = "application/json"
API = "/api/gateway/routing-policies"
REFUSED = "The learned classifier is on the Pro and Enterprise tiers; this organization is on Free"
LEARNED_AB = {"share": 0.2, "classifier": "learned"}


def _post_policy(client, smart):
    return client.post(
        API,
        {"name": "saver", "strategy": "smart", "models": ["lite", "pro"], "smart": smart},
        content_type=JSON,
    )


def _set_learned(tier, value):
    set_tier_limit(tier, learned_routing=value)  # the tier's other quotas kept


# ------------------------------------------------------------------------------ the tiers
def test_the_tiers_defaults_and_the_migration_s_values(db):
    assert [tier_includes_learned(t) for t in ("free", "pro", "enterprise")] == [
        False,
        True,
        True,
    ]
    TierLimit.objects.all().delete()  # no row: the tier's default
    assert [tier_includes_learned(t) for t in ("free", "pro", "enterprise")] == [
        False,
        True,
        True,
    ]
    import importlib

    migration = importlib.import_module("orgs.migrations.0012_tierlimit_learned_routing")
    assert migration.LEARNED == {"free": False, "pro": True, "enterprise": True}


# ------------------------------------------------------------------------------ every way in
def test_rest_refuses_a_free_org_the_learned_classifier_and_arm(charlie_client, org_b):
    refused = _post_policy(charlie_client, {"classifier": "learned"})
    assert refused.status_code == 400
    assert refused.json()["smart"][0].startswith(REFUSED)
    arm = _post_policy(charlie_client, {"ab": LEARNED_AB})
    assert arm.status_code == 400
    assert arm.json()["smart"][0].startswith(f"smart.ab.classifier: {REFUSED}")
    assert not RoutingPolicy.objects.filter(org=org_b).exists()
    # rules is the Free tier's
    created = _post_policy(
        charlie_client, {"classifier": "rules", "ab": {"share": 0.2, "classifier": "strong"}}
    )
    assert created.status_code == 201, created.content
    patched = charlie_client.patch(
        f"{API}/{created.json()['id']}", {"smart": {"classifier": "learned"}}, content_type=JSON
    )
    assert patched.status_code == 400 and patched.json()["smart"][0].startswith(REFUSED)


def test_the_config_put_and_apply_refuse_it(charlie_client, org_b):
    put = charlie_client.put(
        "/api/gateway/config",
        {"smart_tiers": ["lite", "pro"], "smart": {"classifier": "learned"}},
        content_type=JSON,
    )
    assert put.status_code == 400 and put.json()["smart"][0].startswith(REFUSED)
    applied = charlie_client.post(
        "/api/gateway/config/apply",
        {
            "yaml": "routing_policies:\n  - {name: saver, strategy: smart, models: [lite, pro],"
            " smart: {classifier: learned}}\n"
        },
        content_type=JSON,
    )
    assert applied.status_code == 400
    assert REFUSED in str(applied.json())
    assert not RoutingPolicy.objects.filter(org=org_b).exists()
    assert not GatewayConfig.objects.filter(org=org_b).exclude(smart={}).exists()


def test_apply_config_refuses_it_at_its_path(tmp_path, org_b):
    path = tmp_path / "bonito.yaml"
    path.write_text(
        f"orgs:\n  - slug: {org_b.slug}\n    name: Globex\n"
        "    gateway:\n      smart_tiers: [lite, pro]\n"
        f"      smart: {{ab: {{share: 0.2, classifier: learned}}}}\n"
    )
    with pytest.raises(CommandError) as refused:
        call_command("apply_config", str(path), stdout=StringIO(), stderr=StringIO())
    assert "orgs[0].gateway.smart" in str(refused.value) and REFUSED in str(refused.value)


def test_apply_config_raising_the_tier_in_the_same_file_allows_it(tmp_path, org_b):
    path = tmp_path / "bonito.yaml"
    path.write_text(
        f"orgs:\n  - slug: {org_b.slug}\n    name: Globex\n    tier: pro\n"
        "    routing_policies:\n"
        "      - {name: saver, strategy: smart, models: [lite, pro], smart: {classifier: learned}}\n"
    )
    call_command("apply_config", str(path), stdout=StringIO(), stderr=StringIO())
    assert RoutingPolicy.objects.get(org=org_b).smart == {"classifier": "learned"}


def test_the_dashboard_forms_refuse_it_beside_the_field(charlie_client, org_b):
    url = f"/o/{org_b.slug}/routing/"
    new = charlie_client.post(
        url,
        {"name": "saver", "strategy": "smart", "models": "lite, pro", "classifier": "learned"},
    )
    assert new.status_code == 400
    page = new.content.decode()
    form = page[page.index('id="new-routing-policy"') :]
    beside = form[form.index('name="classifier"') :]
    assert "The learned classifier is on the Pro and Enterprise tiers" in beside[:3000]
    org_form = charlie_client.post(
        url,
        {
            "form": "org_smart",
            "smart_tiers": "lite, pro",
            "auto_model_alias": "auto",
            "classifier": "learned",
            "aggressiveness": "50",
        },
    )
    assert org_form.status_code == 400
    assert "The learned classifier is on the Pro and Enterprise tiers" in org_form.content.decode()
    assert not RoutingPolicy.objects.filter(org=org_b).exists()


def _save_learned(org):
    governance_services.routing_policy_save(
        actor=ACTOR,
        org=org,
        name="s",
        strategy="smart",
        models=["a", "b"],
        smart={"classifier": "learned"},
    )


def test_a_platform_admin_can_grant_it_to_a_tier_and_take_it_from_another(org_a, org_b):
    _set_learned("free", True)
    _save_learned(org_b)
    _set_learned("pro", False)
    with pytest.raises(ValidationError) as refused:
        _save_learned(org_a)
    assert refused.value.message_dict["smart"][0].startswith(
        "The learned classifier is on the Free and Enterprise tiers; this organization is on Pro"
    )
    _set_learned("pro", None)  # empty: the tier's default again
    _save_learned(org_a)


# ------------------------------------------------------------------------------ a downgrade
def test_a_downgraded_org_keeps_its_policy_served_with_rules_and_told(alice_client, org_a):
    spec = {
        "classifier": "learned",
        "thresholds": [0.3],
        "ab": {"share": 0.2, "classifier": "rules"},
        "within": "cost_optimized",
    }
    governance_services.routing_policy_save(
        actor=ACTOR, org=org_a, name="s", strategy="smart", models=["a", "b"], smart=spec
    )
    services.gateway_config_set(
        actor=ACTOR,
        org=org_a,
        smart_tiers=["a", "b"],
        smart={"ab": {"share": 0.1, "classifier": "learned"}, "aggressiveness": 0.4},
    )
    served = build_snapshot().orgs[org_a.id]
    assert served.routing_policies["s"].smart.classifier == "learned"
    assert served.smart.ab_arm == "learned"

    org_services.org_update(actor=ACTOR, org=org_a, tier="free")
    served = build_snapshot().orgs[org_a.id]
    policy = served.routing_policies["s"].smart
    # scored by rules; the A/B arm that is now the classifier is dropped; the rest as saved
    assert (policy.classifier, policy.thresholds, policy.ab_share) == ("rules", (0.3,), 0.0)
    assert policy.within == "cost_optimized"
    assert (served.smart.classifier, served.smart.ab_share) == ("rules", 0.0)
    assert RoutingPolicy.objects.get(name="s").smart == spec  # nothing saved changed

    page = alice_client.get(f"/o/{org_a.slug}/routing/").content.decode()
    said = "the learned classifier is not on the Free tier: until it is, served with rules"
    assert page.count(said) == 2, page  # the policy's row and the org default's line
    # a save that keeps learned is refused; one choosing rules is taken
    keep = alice_client.patch(
        f"{API}/{RoutingPolicy.objects.get(name='s').id}",
        {"smart": {"thresholds": [0.4]}},
        content_type=JSON,
    )
    assert keep.status_code == 400 and "this organization is on Free" in keep.json()["smart"][0]
    switch = alice_client.patch(
        f"{API}/{RoutingPolicy.objects.get(name='s').id}",
        {"smart": {"classifier": "rules", "ab": None}},
        content_type=JSON,
    )
    assert switch.status_code == 200, switch.content
    page = alice_client.get(f"/o/{org_a.slug}/routing/").content.decode()
    assert page.count(said) == 1


def test_a_downgraded_org_can_disable_its_learned_policy_and_is_told_what_to_change(
    alice_client, org_a
):
    """A save that leaves the saved learned settings as they are (disabling the policy,
    other models) is taken; one that changes them and keeps learned is refused, saying to
    switch the classifier (or the A/B arm). Disabling was refused, with no fix named."""
    spec = {"classifier": "learned", "thresholds": [0.3]}
    policy = governance_services.routing_policy_save(
        actor=ACTOR, org=org_a, name="s", strategy="smart", models=["a", "b"], smart=spec
    )
    arm = governance_services.routing_policy_save(
        actor=ACTOR,
        org=org_a,
        name="arm",
        strategy="smart",
        models=["a", "b"],
        smart={"ab": {"share": 0.2, "classifier": "learned"}},
    )
    org_services.org_update(actor=ACTOR, org=org_a, tier="free")
    url = f"{API}/{policy.id}"
    off = alice_client.patch(url, {"is_active": False}, content_type=JSON)
    assert off.status_code == 200, off.content
    assert RoutingPolicy.objects.get(pk=policy.pk).is_active is False
    moved = alice_client.patch(url, {"models": ["a", "c"]}, content_type=JSON)
    assert moved.status_code == 200, moved.content
    assert RoutingPolicy.objects.get(pk=policy.pk).smart == spec
    page = alice_client.post(
        f"/o/{org_a.slug}/routing/{policy.pk}/",
        {"strategy": "smart", "models": "a, c", "classifier": "learned", "thresholds": "0.3"},
    )
    assert page.status_code == 302  # the Edit page's save of it as it is
    for body, fix in (
        ({"smart": {"thresholds": [0.4]}}, "set smart.classifier to rules"),
        ({"smart": {"aggressiveness": 0.7, "thresholds": None}}, "set smart.classifier to rules"),
    ):
        refused = alice_client.patch(url, body, content_type=JSON)
        assert refused.status_code == 400
        assert fix in refused.json()["smart"][0], refused.json()
    refused = alice_client.patch(
        f"{API}/{arm.id}", {"smart": {"ab": {"share": 0.3}}}, content_type=JSON
    )
    assert refused.status_code == 400
    assert "remove the A/B test (ab: null)" in refused.json()["smart"][0]
    assert (
        alice_client.patch(f"{API}/{arm.id}", {"is_active": False}, content_type=JSON).status_code
        == 200
    )


@pytest.mark.parametrize(
    ("spec", "said", "fix"),
    [
        ({"classifier": "learned"}, "the learned classifier and served with rules", "Switch it"),
        (
            {"ab": {"share": 0.2, "classifier": "learned"}},
            "an A/B arm of the learned classifier, not served",
            "Remove its A/B test",
        ),
    ],
)
def test_re_calibrating_a_downgraded_org_s_learned_settings_says_why_not(org_a, spec, said, fix):
    """It counted the ratings of `learned` scores, which a downgraded org no longer has,
    and told the admin to send feedback they had sent."""
    from billing.smart_calibration import smart_recalibrate

    governance_services.routing_policy_save(
        actor=ACTOR, org=org_a, name="s", strategy="smart", models=["a", "b"], smart=spec
    )
    services.gateway_config_set(actor=ACTOR, org=org_a, smart_tiers=["a", "b"], smart=spec)
    org_services.org_update(actor=ACTOR, org=org_a, tier="free")
    for name, label in (("s", "s"), ("", "the org default")):
        with pytest.raises(ValidationError) as refused:
            smart_recalibrate(actor=ACTOR, org=org_a, name=name, min_rated=1)
        message = refused.value.messages[0]
        assert message.startswith(f"{label} is saved with {said}: {REFUSED}"), message
        assert f"{fix}" in message and "POST /v1/feedback" not in message
    out = StringIO()
    with pytest.raises(CommandError) as refused:
        call_command("smart_recalibrate", org=org_a.slug, policy="s", stdout=out)
    assert said in str(refused.value)
