"""Smart routing keywords (smart.keywords, the rules classifier's lists) are visible text,
as names are (docs/security.md, "Names"): a bidi override, a zero-width space or a control
character makes a keyword read as another in the settings, the audit log and the CLI. Every
way in refuses one, naming the category and the code point: the services (so the REST API,
apply_config and the admin), for a routing policy and the org's smart routing alike.
Keywords saved before the rule are kept by a save that keeps them (the dashboard has no
field for keywords and must not become unable to save)."""

import json

import pytest
from django.core.exceptions import ValidationError

from gateway import services
from gateway.models import GatewayConfig
from gateway.tests.conftest import ACTOR
from governance import services as governance_services
from governance.models import RoutingPolicy

from .test_names_invisible import INVISIBLE

pytestmark = pytest.mark.django_db
JSON = "application/json"
CONTROL = {"\n": "U+000A", "\t": "U+0009", "\x1b": "U+001B", "\x85": "U+0085"}
# Keywords people write: other scripts and the joiners they need.
FINE = ["intégrale", "積分", "می\u200cخواهم", "क्\u200dष", "step by step"]


@pytest.fixture
def org(org_a):
    provider = services.provider_create(actor=ACTOR, org=org_a, name="p", kind="mock")
    for model in ("small", "big"):
        services.deployment_create(
            actor=ACTOR, org=org_a, model_name=model, provider=provider, upstream_model="mock"
        )
    return org_a


def _saves(org):
    return {
        "routing policy": lambda spec: governance_services.routing_policy_save(
            actor=ACTOR,
            org=org,
            name="tiers",
            strategy="smart",
            models=["small", "big"],
            smart=spec,
        ),
        "org smart routing": lambda spec: services.gateway_config_set(
            actor=ACTOR, org=org, smart_tiers=["small", "big"], smart=spec
        ),
    }


def _stored():
    config = GatewayConfig.objects.first()
    return (
        sorted(json.dumps(p.smart) for p in RoutingPolicy.objects.all()),
        config and json.dumps(config.smart),
    )


@pytest.mark.parametrize("way", ["routing policy", "org smart routing"])
@pytest.mark.parametrize("char", [*INVISIBLE, *CONTROL], ids=lambda c: f"U+{ord(c):04X}")
def test_a_keyword_with_a_hidden_character_is_refused_naming_it(org, way, char):
    before = _stored()
    with pytest.raises(ValidationError) as exc:
        _saves(org)[way]({"keywords": {"code": ["kubernetes", f"kube{char}ctl"]}})
    (message,) = exc.value.message_dict["smart"]
    named = INVISIBLE.get(char) or CONTROL[char]
    assert message.startswith("smart.keywords.code: ") and named in message, message
    assert char not in message  # shown escaped, never drawn
    assert _stored() == before


@pytest.mark.parametrize("way", ["routing policy", "org smart routing"])
def test_keywords_in_every_script_are_kept(org, way):
    _saves(org)[way]({"keywords": {"math": FINE}})
    saved = (
        RoutingPolicy.objects.get().smart
        if way == "routing policy"
        else GatewayConfig.objects.get().smart
    )
    assert saved["keywords"]["math"] == FINE


def test_rest_and_apply_config_answer_400_naming_the_code_point(alice_client, org):
    before = _stored()
    spec = {"keywords": {"reasoning": ["why\u202e"]}}
    policy = alice_client.post(
        "/api/gateway/routing-policies",
        {"name": "tiers", "strategy": "smart", "models": ["small", "big"], "smart": spec},
        content_type=JSON,
    )
    config = alice_client.put(
        "/api/gateway/config", {"smart_tiers": ["small", "big"], "smart": spec}, content_type=JSON
    )
    for response in (policy, config):
        assert response.status_code == 400, response.content
        assert list(response.json()) == ["smart"]
        assert "U+202E (RIGHT-TO-LEFT OVERRIDE)" in response.json()["smart"][0]
    for yaml in (
        "gateway:\n  smart_tiers: [small, big]\n  smart:\n    keywords:\n"
        '      code: ["ku\\u200bbe"]\n',
        "routing_policies:\n  - name: tiers\n    strategy: smart\n    models: [small, big]\n"
        '    smart:\n      keywords:\n        code: ["ku\\u2066be"]\n',
    ):
        response = alice_client.post("/api/gateway/config/apply", {"yaml": yaml}, content_type=JSON)
        assert response.status_code == 400, (yaml, response.content)
        assert "smart.keywords.code" in response.json()["yaml"][0], response.json()
        assert "U+2" in response.json()["yaml"][0]
    assert _stored() == before


def test_keywords_saved_before_the_rule_do_not_block_a_save(alice_client, org):
    """A policy saved before the rule keeps its keywords through the dashboard's save
    (which has no keyword field and sends them back as stored) and a REST save that keeps
    them; a new hidden keyword beside them is still refused."""
    old = {"classifier": "rules", "keywords": {"code": ["ku\u202ebe"]}}
    rp = governance_services.routing_policy_save(
        actor=ACTOR, org=org, name="tiers", strategy="smart", models=["small", "big"]
    )
    RoutingPolicy.objects.filter(pk=rp.pk).update(smart=old)  # as saved before the rule
    page = alice_client.post(
        f"/o/{org.slug}/routing/{rp.pk}/",
        {
            "strategy": "smart",
            "models": "small, big",
            "classifier": "rules",
            "aggressiveness": "30",
            "is_active": "on",
        },
    )
    assert page.status_code == 302, page.content.decode()[:2000]
    assert RoutingPolicy.objects.get(pk=rp.pk).smart["keywords"] == old["keywords"]
    with pytest.raises(ValidationError):
        governance_services.routing_policy_save(
            actor=ACTOR,
            org=org,
            name="tiers",
            strategy="smart",
            models=["small", "big"],
            smart={"keywords": {"code": ["ku\u202ebe", "he\u200blm"]}},
        )
