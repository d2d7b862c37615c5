"""Names hold no invisible or text-direction characters (docs/security.md, "Names"): a
U+202E RIGHT-TO-LEFT OVERRIDE, a zero-width space or an isolate makes a name display as
another (Trojan Source) in the dashboard, the audit log and the CLI. Every name and label
is refused with the field named, by every service and every way in (dashboard, REST,
apply_config, the admin); names in other scripts, accents and emoji are kept."""

import json

import pytest
from django.core.exceptions import ValidationError

from bonito.tests.admin_forms import form_data
from core.text import name_cleaned, name_error
from gateway import services
from gateway.models import ApiKey, Deployment, GatewayConfig, ProviderConnection
from gateway.tests.conftest import ACTOR
from governance import services as governance_services
from governance.models import Policy, RoutingPolicy
from orgs import services as org_services
from orgs.models import Organization, PersonalAccessToken, Team, User

pytestmark = pytest.mark.django_db

JSON = "application/json"
# Each draws nothing, or reorders what is drawn around it.
INVISIBLE = {
    "\u202e": "U+202E (RIGHT-TO-LEFT OVERRIDE)",
    "\u202d": "U+202D (LEFT-TO-RIGHT OVERRIDE)",
    "\u2066": "U+2066 (LEFT-TO-RIGHT ISOLATE)",
    "\u2069": "U+2069 (POP DIRECTIONAL ISOLATE)",
    "\u200f": "U+200F (RIGHT-TO-LEFT MARK)",
    "\u061c": "U+061C (ARABIC LETTER MARK)",
    "\u200b": "U+200B (ZERO WIDTH SPACE)",
    "\u200d": "U+200D (ZERO WIDTH JOINER)",  # between Latin letters it only hides
    "\u2060": "U+2060 (WORD JOINER)",
    "\ufeff": "U+FEFF (ZERO WIDTH NO-BREAK SPACE)",
    "\u00ad": "U+00AD (SOFT HYPHEN)",
    "\U000e0041": "U+E0041 (TAG LATIN CAPITAL LETTER A)",
    "\u3164": "U+3164 (HANGUL FILLER)",
    "\ufe0f": "U+FE0F (VARIATION SELECTOR-16)",  # after a Latin letter: no emoji to select
}
# Names people write: other scripts, accents, emoji, and the zero-width (non-)joiners that
# Persian, Devanagari and emoji sequences need.
FINE = [
    "Équipe données",
    "日本語チーム",
    "فريق البيانات",
    "می\u200cخواهم",
    "क्\u200dष",
    "🚀 launch",
    "👩\u200d💻 devs",
    "🏳\ufe0f\u200d🌈 pride",
    "葛\U000e0100城",  # an ideographic variation sequence
]


@pytest.fixture
def setup(org_a, alice):
    provider = services.provider_create(actor=ACTOR, org=org_a, name="p", kind="mock")
    for model in ("small", "big"):
        services.deployment_create(
            actor=ACTOR, org=org_a, model_name=model, provider=provider, upstream_model="mock"
        )
    team = org_services.team_create(actor=ACTOR, org=org_a, name="Platform")
    key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="backend")
    return {"org": org_a, "user": alice, "provider": provider, "team": team, "key": key}


def _writes(s):
    org, provider = s["org"], s["provider"]

    def deployment(**names):
        fields = {"model_name": "chat", "upstream_model": "mock", "region": "", **names}
        return services.deployment_create(actor=ACTOR, org=org, provider=provider, **fields)

    def smart_policy(name="tiers", models=("small", "big")):
        return governance_services.routing_policy_create(
            actor=ACTOR, org=org, name=name, strategy="smart", models=list(models)
        )

    def config(**fields):
        return services.gateway_config_set(actor=ACTOR, org=org, **fields)

    def policy(**fields):
        return governance_services.policy_set(actor=ACTOR, org=org, **fields)

    return {
        "key name": ("name", lambda n: services.api_key_create(actor=ACTOR, org=org, name=n)),
        "key rename": (
            "name",
            lambda n: services.api_key_update(actor=ACTOR, key=s["key"], name=n),
        ),
        "team": ("name", lambda n: org_services.team_create(actor=ACTOR, org=org, name=n)),
        "team rename": (
            "name",
            lambda n: org_services.team_update(actor=ACTOR, team=s["team"], name=n),
        ),
        "team description": (
            "description",
            lambda n: org_services.team_create(actor=ACTOR, org=org, name="T", description=n),
        ),
        "team description edit": (
            "description",
            lambda n: org_services.team_update(
                actor=ACTOR, team=s["team"], name="Platform", description=n
            ),
        ),
        "token": (
            "name",
            lambda n: org_services.pat_create(actor=ACTOR, user=s["user"], org=org, name=n),
        ),
        "org": ("name", lambda n: org_services.org_create(actor=ACTOR, name=n, slug="new-org")),
        "org rename": ("name", lambda n: org_services.org_update(actor=ACTOR, org=org, name=n)),
        "user": (
            "name",
            lambda n: org_services.user_create(actor=ACTOR, email="new@acme.test", name=n),
        ),
        "user rename": (
            "name",
            lambda n: org_services.user_update(actor=ACTOR, user=s["user"], name=n),
        ),
        "provider": (
            "name",
            lambda n: services.provider_create(actor=ACTOR, org=org, name=n, kind="mock"),
        ),
        "model name": ("model_name", lambda n: deployment(model_name=n)),
        "upstream model": ("upstream_model", lambda n: deployment(upstream_model=n)),
        "region": ("region", lambda n: deployment(region=n)),
        "routing policy": ("name", lambda n: smart_policy(name=n)),
        "routing policy tier": ("models", lambda n: smart_policy(models=["small", n])),
        "smart tiers": ("smart_tiers", lambda n: config(smart_tiers=["small", n])),
        "smart alias": (
            "auto_model_alias",
            lambda n: config(smart_tiers=["small", "big"], auto_model_alias=n),
        ),
        "fallback models": ("fallback_models", lambda n: config(fallback_models=[n])),
        "enabled providers": ("enabled_providers", lambda n: config(enabled_providers=[n])),
        **{
            f"policy {field}": (field, lambda n, field=field: policy(**{field: [n]}))
            for field in governance_services.POLICY_FIELDS
            if field.startswith(("allowed", "denied"))
        },
        "key allowed models": (
            "allowed_models",
            lambda n: services.api_key_create(actor=ACTOR, org=org, name="k", allowed_models=[n]),
        ),
        "key allowed providers": (
            "allowed_providers",
            lambda n: services.api_key_create(
                actor=ACTOR, org=org, name="k", allowed_providers=[n]
            ),
        ),
    }


WRITES = [
    "key name",
    "key rename",
    "team",
    "team rename",
    "team description",
    "team description edit",
    "token",
    "org",
    "org rename",
    "user",
    "user rename",
    "provider",
    "model name",
    "upstream model",
    "region",
    "routing policy",
    "routing policy tier",
    "smart tiers",
    "smart alias",
    "fallback models",
    "enabled providers",
    "policy allowed_models",
    "policy denied_models",
    "policy allowed_providers",
    "policy denied_providers",
    "policy allowed_regions",
    "key allowed models",
    "key allowed providers",
]


def _state(org):
    """Everything a refused write must leave as it was."""
    config = GatewayConfig.objects.filter(org=org).first()
    policy = Policy.objects.filter(org=org).first()
    return (
        sorted(ApiKey.objects.values_list("name", "allowed_models", "allowed_providers")),
        sorted(Team.objects.values_list("name", "description")),
        sorted(PersonalAccessToken.objects.values_list("name", flat=True)),
        sorted(Organization.objects.values_list("name", flat=True)),
        sorted(User.objects.values_list("name", flat=True)),
        sorted(ProviderConnection.objects.values_list("name", flat=True)),
        sorted(Deployment.objects.values_list("model_name", "upstream_model", "region")),
        sorted(RoutingPolicy.objects.values_list("name", flat=True)),
        config and (config.smart_tiers, config.auto_model_alias, config.fallback_models),
        config and config.enabled_providers,
        policy and [getattr(policy, f) for f in governance_services.POLICY_FIELDS],
    )


def test_the_writes_are_all_covered():
    assert sorted(WRITES) == sorted(_writes({"org": None, "provider": None}))


@pytest.mark.parametrize("write", WRITES)
@pytest.mark.parametrize("char", list(INVISIBLE), ids=lambda c: f"U+{ord(c):04X}")
def test_every_write_refuses_an_invisible_character_naming_the_field(setup, write, char):
    field, save = _writes(setup)[write]
    before = _state(setup["org"])
    with pytest.raises(ValidationError) as exc:
        save(f"ops{char}prod")
    assert list(exc.value.message_dict) == [field]
    (message,) = exc.value.message_dict[field]
    assert INVISIBLE[char] in message and "display as another" in message
    assert char not in message  # shown escaped, never drawn
    assert _state(setup["org"]) == before


@pytest.mark.parametrize(
    "write", ["key name", "team", "model name", "smart tiers", "policy denied_models"]
)
def test_an_unpaired_surrogate_is_refused(setup, write):
    field, save = _writes(setup)[write]
    with pytest.raises(ValidationError) as exc:
        save("ops\ud800")
    assert list(exc.value.message_dict) == [field]
    assert "unpaired surrogate" in exc.value.message_dict[field][0]


@pytest.mark.parametrize("write", ["key name", "team", "team rename", "org rename", "user"])
@pytest.mark.parametrize("name", FINE)
def test_names_in_every_script_are_kept(setup, write, name):
    _field, save = _writes(setup)[write]
    result = save(f" {name} ")
    obj = result[0] if isinstance(result, tuple) else result
    assert obj.name == name


@pytest.mark.parametrize("name", FINE)
def test_model_names_and_tiers_in_every_script_are_kept(setup, name):
    org = setup["org"]
    services.deployment_create(
        actor=ACTOR, org=org, provider=setup["provider"], model_name=name, upstream_model="m"
    )
    config = services.gateway_config_set(actor=ACTOR, org=org, smart_tiers=["small", name])
    assert config.smart_tiers == ["small", name]
    assert Deployment.objects.filter(model_name=name).exists()


def test_the_rule_itself():
    assert name_error("a\u202eb").code == "invisible_character"
    assert name_error("\u200dab") is not None  # a joiner with nothing to join
    assert name_error("ab\u200c") is not None
    assert name_error("1\ufe0f\u20e3 one") is None  # a keycap emoji
    assert name_error("a\nb").code == "control_character"
    # An IdP's display name is cleaned, not refused (the sign-in must work).
    assert name_cleaned("Eve\u202e \u200bAdmin\n(IT)") == "Eve Admin (IT)"


# ------------------------------------------------------------------------------ the ways in
SPOOF = "gpt-4o\u202e"


def test_rest_answers_400_naming_the_field(alice_client, setup):
    before = _state(setup["org"])
    cases = [
        ("post", "/api/gateway/keys", {"name": SPOOF}, "name"),
        ("post", "/api/gateway/keys", {"name": "k", "allowed_models": [SPOOF]}, "allowed_models"),
        ("post", "/api/gateway/teams", {"name": SPOOF}, "name"),
        ("patch", f"/api/gateway/teams/{setup['team'].pk}", {"name": SPOOF}, "name"),
        ("post", "/api/tokens", {"name": SPOOF}, "name"),
        (
            "post",
            "/api/gateway/deployments",
            {"model_name": SPOOF, "provider": "p", "upstream_model": "m"},
            "model_name",
        ),
        (
            "post",
            "/api/gateway/routing-policies",
            {"name": "tiers", "strategy": "smart", "models": ["small", SPOOF]},
            "models",
        ),
        ("put", "/api/gateway/config", {"smart_tiers": ["small", SPOOF]}, "smart_tiers"),
        ("put", "/api/gateway/config", {"auto_model_alias": "au\u200bto"}, "auto_model_alias"),
        ("put", "/api/gateway/config", {"fallback_models": [SPOOF]}, "fallback_models"),
        ("put", "/api/gateway/policy", {"denied_models": [SPOOF]}, "denied_models"),
    ]
    for method, path, body, field in cases:
        response = getattr(alice_client, method)(path, body, content_type=JSON)
        assert response.status_code == 400, (path, body, response.content)
        assert list(response.json()) == [field], (path, response.json())
        assert "U+" in json.dumps(response.json())
    assert _state(setup["org"]) == before


def test_an_outsider_gets_404_not_the_rule(charlie_client, setup):
    response = charlie_client.patch(
        f"/api/gateway/teams/{setup['team'].pk}", {"name": SPOOF}, content_type=JSON
    )
    assert response.status_code == 404


def test_apply_config_names_where(alice_client, setup):
    before = _state(setup["org"])
    for yaml in (
        'gateway:\n  smart_tiers: [small, "b\\u202eig"]\n',
        'routing_policies:\n  - name: tiers\n    strategy: smart\n    models: [small, "b\\u2066ig"]\n',
        'deployments:\n  - model: "ch\\u200bat"\n    provider: p\n    upstream_model: m\n',
        'policy:\n  allowed_models: ["sm\\ufeffall"]\n',
        'teams:\n  - name: "Plat\\u202eform"\n',
    ):
        response = alice_client.post("/api/gateway/config/apply", {"yaml": yaml}, content_type=JSON)
        assert response.status_code == 400, (yaml, response.content)
        assert "display as another" in response.json()["yaml"][0], yaml
    assert _state(setup["org"]) == before


def test_the_dashboard_says_which_field(alice_client, setup):
    org = setup["org"]
    before = _state(org)
    smart = alice_client.post(
        f"/o/{org.slug}/routing/",
        {"form": "org_smart", "smart_tiers": f"small, {SPOOF}", "aggressiveness": "50"},
    )
    policy = alice_client.post(
        f"/o/{org.slug}/routing/",
        {"name": "tiers", "strategy": "smart", "models": f"small, {SPOOF}"},
    )
    key = alice_client.post(f"/o/{org.slug}/keys/", {"name": SPOOF})
    team = alice_client.post(f"/o/{org.slug}/team/teams/", {"name": SPOOF})
    for response, label in ((smart, "Tiers"), (policy, "Models"), (key, "Name"), (team, "Name")):
        [message] = [str(m) for m in response.context["messages"]]
        assert message.startswith(f"{label}: ") and "U+202E" in message, message
    assert _state(org) == before


def test_the_admin_shows_the_refusal(admin_client, setup):
    org = setup["org"]
    rp = governance_services.routing_policy_create(
        actor=ACTOR, org=org, name="tiers", strategy="smart", models=["small", "big"]
    )
    url = f"/admin/governance/routingpolicy/{rp.pk}/change/"
    response = admin_client.post(
        url, form_data(admin_client.get(url), model_names=json.dumps(["small", SPOOF]))
    )
    assert response.status_code == 302
    shown = [str(m) for m in admin_client.get(response.url).context["messages"]]
    assert any("U+202E" in m for m in shown), shown
    assert RoutingPolicy.objects.get(pk=rp.pk).model_names == ["small", "big"]


def test_accepting_an_invitation_refuses_a_spoofing_name(client, setup):
    org = setup["org"]
    _inv, token = org_services.invitation_create(
        actor=ACTOR, org=org, email="newbie@acme.test", role="member"
    )
    url = f"/invite/{token}/"
    response = client.post(url, {"name": "Alice\u202e", "password": "a-long-new-password-1"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "U+202E (RIGHT-TO-LEFT OVERRIDE)" in html
    assert not User.objects.filter(email="newbie@acme.test").exists()
    response = client.post(url, {"name": "Алиса 🚀", "password": "a-long-new-password-1"})
    assert response.status_code == 302
    assert User.objects.get(email="newbie@acme.test").name == "Алиса 🚀"


def test_the_admin_refuses_a_spoofing_user_or_team_name(admin_client, setup):
    for url in (
        f"/admin/orgs/user/{setup['user'].pk}/change/",
        f"/admin/orgs/team/{setup['team'].pk}/change/",
    ):
        response = admin_client.post(url, form_data(admin_client.get(url), name=SPOOF))
        assert response.status_code == 302, url
        shown = [str(m) for m in admin_client.get(response.url).context["messages"]]
        assert any("U+202E" in m for m in shown), (url, shown)
    assert User.objects.get(pk=setup["user"].pk).name == setup["user"].name
    assert Team.objects.get(pk=setup["team"].pk).name == "Platform"
