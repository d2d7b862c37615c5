"""Names that look alike (docs/security.md, "Names"): a name is stored in NFC, so "café"
typed as e + U+0301 is the same name as "café"; a new model, provider, team or routing
policy name that differs from one the org has only by case, width or spacing is refused
(a person picking one in a list cannot tell them apart); very long names are refused with
the field named, never a database error. Key names may repeat: a key is told by its secret's
masked prefix and last four characters."""

import unicodedata

import pytest
from django.core.exceptions import ValidationError

from gateway import services
from gateway.models import ApiKey, Deployment
from gateway.tests.conftest import ACTOR
from governance import services as governance_services
from governance.models import RoutingPolicy
from orgs import services as org_services
from orgs.models import Team

pytestmark = pytest.mark.django_db

JSON = "application/json"
NFC, NFD = "caf\u00e9", "cafe\u0301"


@pytest.fixture
def provider(org_a):
    return services.provider_create(actor=ACTOR, org=org_a, name="openai", kind="mock")


def _deploy(org, provider, model_name, upstream="m", **fields):
    return services.deployment_create(
        actor=ACTOR,
        org=org,
        provider=provider,
        model_name=model_name,
        upstream_model=upstream,
        **fields,
    )


def test_a_decomposed_name_is_the_same_model(org_a, provider):
    assert NFC != NFD and unicodedata.normalize("NFC", NFD) == NFC
    _deploy(org_a, provider, NFD, upstream="a")
    _deploy(org_a, provider, NFC, upstream="b")  # a second deployment of the same model
    assert set(Deployment.objects.values_list("model_name", flat=True)) == {NFC}
    key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="k", allowed_models=[NFD])
    assert key.allowed_models == [NFC]
    policy = governance_services.policy_set(actor=ACTOR, org=org_a, denied_models=[NFD])
    assert policy.denied_models == [NFC]
    rp = governance_services.routing_policy_create(
        actor=ACTOR, org=org_a, name="w", strategy="weighted", models=[NFD, "x"], weights={NFD: 3}
    )
    assert rp.model_names == [NFC, "x"] and rp.weights == {NFC: 3}


def test_the_same_deployment_in_nfd_is_refused_as_taken(org_a, provider):
    _deploy(org_a, provider, NFC)
    with pytest.raises(ValidationError) as exc:
        _deploy(org_a, provider, NFD)
    assert exc.value.message_dict == {"upstream_model": [services.DEPLOYMENT_TAKEN]}


@pytest.mark.parametrize(
    "typed",
    [
        "GPT-4o",
        "ＧＰＴ-4o",
        "gpt-4O",
        "gpt-\uff14o",
        "gpt-4\u043e",  # a Cyrillic о
        "g\u0440t-4o",  # a Cyrillic р
        "gpt-4\u03bf",  # a Greek omicron
    ],
)
def test_a_model_name_differing_only_by_case_or_width_is_refused(org_a, provider, typed):
    _deploy(org_a, provider, "gpt-4o")
    with pytest.raises(ValidationError) as exc:
        _deploy(org_a, provider, typed, upstream="other")
    [message] = exc.value.message_dict["model_name"]
    assert "looks like this organization's model 'gpt-4o'" in message
    assert list(Deployment.objects.values_list("model_name", flat=True)) == ["gpt-4o"]


def test_a_model_can_still_be_renamed_to_its_own_other_case(org_a, provider):
    d = _deploy(org_a, provider, "GPT-4o")
    services.deployment_save(
        actor=ACTOR,
        org=org_a,
        deployment=d,
        model_name="gpt-4o",
        provider=provider,
        upstream_model="m",
    )
    assert Deployment.objects.get().model_name == "gpt-4o"


def test_look_alikes_stored_before_the_rule_keep_working(org_a, provider):
    """Rows saved before this rule (or around it) may already look alike: each keeps
    taking deployments under its exact name."""
    Deployment.objects.create(org=org_a, provider=provider, model_name="A", upstream_model="m")
    Deployment.objects.create(org=org_a, provider=provider, model_name="a", upstream_model="m")
    _deploy(org_a, provider, "a", upstream="n")
    assert Deployment.objects.filter(model_name="a").count() == 2


def test_a_trailing_space_or_a_double_space_is_the_same_model(org_a, provider):
    _deploy(org_a, provider, "big model")
    _deploy(org_a, provider, " big model ", upstream="n")  # trimmed: the same name
    with pytest.raises(ValidationError) as exc:
        _deploy(org_a, provider, "big  model", upstream="o")
    assert "looks like" in exc.value.message_dict["model_name"][0]


def test_provider_team_and_policy_names_differing_only_by_case_are_refused(org_a, provider):
    with pytest.raises(ValidationError) as exc:
        services.provider_create(actor=ACTOR, org=org_a, name="OpenAI", kind="mock")
    assert "looks like the provider 'openai'" in exc.value.message_dict["name"][0]
    org_services.team_create(actor=ACTOR, org=org_a, name="Research")
    support = org_services.team_create(actor=ACTOR, org=org_a, name="Support")
    for save in (
        lambda: org_services.team_create(actor=ACTOR, org=org_a, name="research"),
        lambda: org_services.team_create(actor=ACTOR, org=org_a, name="Ｒesearch"),
        lambda: org_services.team_update(actor=ACTOR, team=support, name="RESEARCH"),
    ):
        with pytest.raises(ValidationError) as exc:
            save()
        assert "looks like the team 'Research'" in exc.value.message_dict["name"][0]
    with pytest.raises(ValidationError) as exc:  # a Cyrillic е
        org_services.team_create(actor=ACTOR, org=org_a, name="R\u0435search")
    assert "looks like the team 'Research'" in exc.value.message_dict["name"][0]
    # A team may change the case of its own name.
    assert org_services.team_update(actor=ACTOR, team=support, name="SUPPORT").name == "SUPPORT"
    governance_services.routing_policy_create(actor=ACTOR, org=org_a, name="prod", models=["a"])
    with pytest.raises(ValidationError) as exc:
        governance_services.routing_policy_create(actor=ACTOR, org=org_a, name="Prod", models=["a"])
    assert "looks like the routing policy 'prod'" in exc.value.message_dict["name"][0]
    assert sorted(Team.objects.values_list("name", flat=True)) == ["Research", "SUPPORT"]
    assert list(RoutingPolicy.objects.values_list("name", flat=True)) == ["prod"]


def test_names_in_cyrillic_and_greek_sit_side_by_side(org_a, provider):
    names = ["Отдел продаж", "Отдел кадров", "Ομάδα", "Team"]
    for name in names:
        org_services.team_create(actor=ACTOR, org=org_a, name=name)
        _deploy(org_a, provider, name)
    assert sorted(Team.objects.values_list("name", flat=True)) == sorted(names)
    assert Deployment.objects.count() == len(names)


def test_the_smart_alias_may_not_look_like_a_model(org_a, provider):
    for model in ("small", "big"):
        _deploy(org_a, provider, model)
    with pytest.raises(ValidationError) as exc:
        services.gateway_config_set(
            actor=ACTOR, org=org_a, smart_tiers=["small", "big"], auto_model_alias="Small"
        )
    said = exc.value.message_dict["auto_model_alias"][0]
    assert "'Small' looks like 'small', a deployment's public name" in said
    services.gateway_config_set(actor=ACTOR, org=org_a, smart_tiers=["small", "big"])
    with pytest.raises(ValidationError) as exc:
        _deploy(org_a, provider, "AUTO")
    assert "'AUTO' looks like 'auto', the alias of this organization's smart routing" in str(
        exc.value
    )
    with pytest.raises(ValidationError) as exc:
        _deploy(org_a, provider, "auto")
    assert "'auto' is the alias of this organization's smart routing" in str(exc.value)


def test_key_names_may_repeat(org_a):
    """A key is told apart by its masked secret (bn-…abcd), shown beside its name."""
    first, _ = services.api_key_create(actor=ACTOR, org=org_a, name="backend")
    second, _ = services.api_key_create(actor=ACTOR, org=org_a, name="Backend")
    third, _ = services.api_key_create(actor=ACTOR, org=org_a, name="backend")
    assert len({first.masked, second.masked, third.masked}) == 3
    assert ApiKey.objects.filter(name="backend").count() == 2


# ------------------------------------------------------------------------------ long names
LONG = "m" * 201


@pytest.mark.parametrize(
    "field, save",
    [
        ("smart_tiers", lambda org: services.gateway_config_set(actor=ACTOR, org=org, smart_tiers=["a", LONG])),
        ("fallback_models", lambda org: services.gateway_config_set(actor=ACTOR, org=org, fallback_models=[LONG])),
        ("auto_model_alias", lambda org: services.gateway_config_set(actor=ACTOR, org=org, auto_model_alias=LONG)),
        ("models", lambda org: governance_services.routing_policy_create(actor=ACTOR, org=org, name="p", models=[LONG])),
        ("denied_models", lambda org: governance_services.policy_set(actor=ACTOR, org=org, denied_models=[LONG])),
        ("allowed_regions", lambda org: governance_services.policy_set(actor=ACTOR, org=org, allowed_regions=["r" * 10_000])),
        ("name", lambda org: services.api_key_create(actor=ACTOR, org=org, name="k" * 121)),
        ("name", lambda org: org_services.team_create(actor=ACTOR, org=org, name="t" * 121)),
        ("name", lambda org: governance_services.routing_policy_create(actor=ACTOR, org=org, name="p" * 64, models=["a"])),
    ],
)  # fmt: skip
def test_a_name_too_long_is_refused_on_its_field(org_a, field, save):
    with pytest.raises(ValidationError) as exc:
        save(org_a)
    assert list(exc.value.message_dict) == [field]


def test_a_name_too_long_over_rest_is_a_400(alice_client, org_a):
    for path, method, body, field in (
        ("/api/gateway/routing-policies", "post", {"name": "p", "models": ["m" * 10_000]}, "models"),
        ("/api/gateway/config", "put", {"smart_tiers": ["a", "m" * 10_000]}, "smart_tiers"),
        ("/api/gateway/policy", "put", {"allowed_models": ["m" * 10_000]}, "allowed_models"),
    ):  # fmt: skip
        response = getattr(alice_client, method)(path, body, content_type=JSON)
        assert response.status_code == 400 and list(response.json()) == [field], path
