"""The Routing page's warning of a smart tier dearer than the top one, said by every way
in: REST's create and update of a routing policy and the gateway settings' PUT answer with
`warnings`, apply_config prints them and the REST config apply returns them. A warning,
never a refusal: the settings are saved all the same."""

import io

import pytest
from django.core.management import call_command

from billing.tests.test_smart_loss import WARNING, priced  # noqa: F401
from gateway import services
from gateway.tests.conftest import ACTOR

pytestmark = pytest.mark.django_db
API = "/api/gateway/routing-policies"


def _post(client, body):
    return client.post(API, body, content_type="application/json")


def _patch(client, policy_id, body):
    return client.patch(f"{API}/{policy_id}", body, content_type="application/json")


def test_rest_creating_a_smart_policy_returns_the_warning_and_saves_it(alice_client, priced):  # noqa: F811
    from governance.models import RoutingPolicy

    created = _post(alice_client, {"name": "saver", "strategy": "smart", "models": ["lite", "pro"]})
    assert created.status_code == 201
    [warning] = created.json()["warnings"]
    assert warning.startswith(WARNING)
    assert RoutingPolicy.objects.get(name="saver").model_names == ["lite", "pro"]
    # every lower tier dearer than the top one is said, in tier order
    both = _post(
        alice_client, {"name": "two", "strategy": "smart", "models": ["lite", "mid", "pro"]}
    )
    assert [w.startswith(WARNING) for w in both.json()["warnings"]] == [True]
    fine = _post(alice_client, {"name": "fine", "strategy": "smart", "models": ["mid", "pro"]})
    assert fine.status_code == 201 and fine.json()["warnings"] == []


def test_rest_updating_a_policy_returns_the_warnings_of_what_it_saved(alice_client, priced):  # noqa: F811
    policy = _post(alice_client, {"name": "saver", "strategy": "smart", "models": ["mid", "pro"]})
    pid = policy.json()["id"]
    assert policy.json()["warnings"] == []
    worse = _patch(alice_client, pid, {"models": ["lite", "pro"]})
    assert worse.status_code == 200 and worse.json()["warnings"][0].startswith(WARNING)
    # a change of something else keeps the tiers, and the warning
    again = _patch(alice_client, pid, {"smart": {"aggressiveness": 0.7}})
    assert again.json()["warnings"][0].startswith(WARNING)
    put = alice_client.put(
        f"{API}/{pid}",
        {"name": "saver", "strategy": "smart", "models": ["mid", "pro"]},
        content_type="application/json",
    )
    assert put.status_code == 200 and put.json()["warnings"] == []
    # another strategy routes by no tiers: nothing to warn of
    failover = _patch(alice_client, pid, {"strategy": "failover", "models": ["lite", "pro"]})
    assert failover.status_code == 200 and failover.json()["warnings"] == []


def test_a_refused_save_answers_its_error_without_warnings(alice_client, priced):  # noqa: F811
    refused = _post(
        alice_client,
        {"name": "saver", "strategy": "smart", "models": ["lite", "pro"], "smart": {"x": 1}},
    )
    assert refused.status_code == 400 and "warnings" not in refused.json()


def test_an_outsider_gets_no_warning_of_another_org_s_prices(
    alice_client,
    charlie_client,
    priced,  # noqa: F811
):
    mine = _post(alice_client, {"name": "saver", "strategy": "smart", "models": ["lite", "pro"]})
    theirs = _post(
        charlie_client, {"name": "saver", "strategy": "smart", "models": ["lite", "pro"]}
    )
    # No deployments there: each tier is said to have none, and no price of the other org's.
    assert theirs.status_code == 201
    warnings = theirs.json()["warnings"]
    assert len(warnings) == 2 and all("has no active deployment" in w for w in warnings)
    assert not any("costs more" in w or "$" in w for w in warnings)
    assert _patch(charlie_client, mine.json()["id"], {"models": ["mid", "pro"]}).status_code == 404


def test_the_gateway_settings_put_returns_the_org_default_s_warning(alice_client, priced):  # noqa: F811
    from gateway.models import GatewayConfig

    response = alice_client.put(
        "/api/gateway/config", {"smart_tiers": ["lite", "pro"]}, content_type="application/json"
    )
    assert response.status_code == 200
    assert response.json()["warnings"][0].startswith(WARNING)
    assert GatewayConfig.objects.get().smart_tiers == ["lite", "pro"]
    ordered = alice_client.put(
        "/api/gateway/config", {"smart_tiers": ["mid", "pro"]}, content_type="application/json"
    )
    assert ordered.json()["warnings"] == []
    assert "warnings" not in alice_client.get("/api/gateway/config").json()


FILE = """orgs:
  - slug: {slug}
    name: Acme
    providers:
      - {{name: q, kind: mock}}
    deployments:
      - {{model: cheap, provider: q, upstream_model: c, input_price_per_mtok: 9, output_price_per_mtok: 20}}
      - {{model: top, provider: q, upstream_model: t, input_price_per_mtok: 1, output_price_per_mtok: 2}}
    routing_policies:
      - {{name: plain, strategy: failover, models: [cheap, top]}}
      - {{name: saver, strategy: smart, models: [{tiers}]}}
    gateway:
      smart_tiers: [{tiers}]
"""


def test_apply_config_prints_the_warnings_and_applies_the_file(tmp_path, org_a):
    from gateway.models import GatewayConfig
    from governance.models import RoutingPolicy

    path = tmp_path / "bonito.yaml"
    path.write_text(FILE.format(slug=org_a.slug, tiers="cheap, top"))
    out, err = io.StringIO(), io.StringIO()
    call_command("apply_config", str(path), stdout=out, stderr=err)
    assert RoutingPolicy.objects.get(name="saver").model_names == ["cheap", "top"]
    assert GatewayConfig.objects.get(org=org_a).smart_tiers == ["cheap", "top"]
    lines = err.getvalue().splitlines()
    said = "The tier 'cheap' costs more than the top tier 'top' ($9 in, $20 out per million"
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"Warning: {path}: orgs[0].routing_policies[1] (saver): {said}")
    assert lines[1].startswith(f"Warning: {path}: orgs[0].gateway.smart_tiers: {said}")
    assert "Applied" in out.getvalue()

    path.write_text(FILE.format(slug=org_a.slug, tiers="top, cheap"))
    err = io.StringIO()
    call_command("apply_config", str(path), stdout=io.StringIO(), stderr=err)
    assert err.getvalue() == ""


def test_the_rest_config_apply_returns_the_warnings_of_a_dry_run_too(alice_client, org_a):
    from governance.models import RoutingPolicy

    text = FILE.format(slug=org_a.slug, tiers="cheap, top")
    dry = alice_client.post(
        "/api/gateway/config/apply",
        {"yaml": text, "dry_run": True},
        content_type="application/json",
    )
    assert dry.status_code == 200, dry.content
    assert [w.split(":")[0] for w in dry.json()["warnings"]] == [
        "routing_policies[1] (saver)",
        "gateway.smart_tiers",
    ]
    assert not RoutingPolicy.objects.filter(org=org_a, name="saver").exists()
    applied = alice_client.post(
        "/api/gateway/config/apply", {"yaml": text}, content_type="application/json"
    )
    assert applied.json()["warnings"] == dry.json()["warnings"]
    ordered = FILE.format(slug=org_a.slug, tiers="top, cheap")
    fine = alice_client.post(
        "/api/gateway/config/apply", {"yaml": ordered}, content_type="application/json"
    )
    assert fine.status_code == 200 and "warnings" not in fine.json()  # only when some
    assert services.smart_tier_price_warnings(org_a, ["cheap", "top"])  # as the page says


# ------------------------------------------------------------------ tiers nothing serves
UNSERVED = "has no active deployment"


def test_rest_warns_of_tiers_no_active_deployment_serves(alice_client, priced):  # noqa: F811
    """REST said nothing of a tier named by no deployment (a typo) while its prompts went
    another way or got a 503; only the Routing page marked it."""
    response = _post(
        alice_client, {"name": "ghost", "strategy": "smart", "models": ["lite", "nope"]}
    )
    assert response.status_code == 201
    [warning] = response.json()["warnings"]
    assert warning.startswith("The tier 'nope' has no active deployment") and "lite" not in warning
    fixed = _patch(alice_client, response.json()["id"], {"models": ["mid", "pro"]})
    assert fixed.json()["warnings"] == []
    put = alice_client.put(
        "/api/gateway/config", {"smart_tiers": ["nope-a", "pro"]}, content_type="application/json"
    )
    assert [w.split(" has")[0] for w in put.json()["warnings"]] == ["The tier 'nope-a'"]


def test_apply_config_and_the_dashboard_warn_of_them_too(alice_client, org_a, priced, tmp_path):  # noqa: F811
    from io import StringIO

    from django.core.management import call_command

    path = tmp_path / "c.yaml"
    path.write_text(
        f"orgs:\n  - slug: {org_a.slug}\n    routing_policies:\n"
        "      - {name: ghost, strategy: smart, models: [nope-x, pro]}\n"
    )
    err = StringIO()
    call_command("apply_config", str(path), stdout=StringIO(), stderr=err)
    assert "routing_policies[0] (ghost): The tier 'nope-x' has no active deployment" in (
        err.getvalue()
    )
    page = alice_client.post(
        f"/o/{org_a.slug}/routing/",
        {"name": "ghost2", "strategy": "smart", "models": "lite, nope-y", "aggressiveness": "50"},
        follow=True,
    ).content.decode()
    assert "The tier &#x27;nope-y&#x27; has no active deployment" in page


# ------------------------------------------------------------------ tiers that are not chat
NOT_CHAT = "not a chat model"


def test_a_tier_served_only_by_embedding_or_image_models_is_warned_of(alice_client, org_a, priced):  # noqa: F811
    """An embedding model named as a tier was saved without a word: every prompt scored
    for it was refused upstream (or failed over). Said wherever tiers are saved, from what
    LiteLLM's map says the upstream model is for; a tier with a chat deployment beside it,
    or models the map does not know (vLLM's, a fine-tune), is not warned of."""
    for name, upstream in (
        ("embed", "text-embedding-3-small"),
        ("pics", "gpt-image-1"),
        ("mixed", "text-embedding-3-large"),
        ("mixed", "gpt-4o-mini"),
    ):
        services.deployment_create(
            actor=ACTOR, org=org_a, model_name=name, provider=priced, upstream_model=upstream
        )
    response = _post(
        alice_client,
        {"name": "odd", "strategy": "smart", "models": ["embed", "pics", "mixed", "pro"]},
    )
    assert response.status_code == 201  # a warning, never a refusal
    warnings = [w for w in response.json()["warnings"] if NOT_CHAT in w]
    assert warnings == [
        "The tier 'embed' is served by 'text-embedding-3-small' (embedding), not a chat model: "
        "the chat requests smart routing sends it would be refused upstream. A tier is a chat "
        "model's name.",
        "The tier 'pics' is served by 'gpt-image-1' (image generation), not a chat model: the "
        "chat requests smart routing sends it would be refused upstream. A tier is a chat "
        "model's name.",
    ]
    put = alice_client.put(
        "/api/gateway/config", {"smart_tiers": ["embed", "pro"]}, content_type="application/json"
    )
    assert [w.split(" is served")[0] for w in put.json()["warnings"]] == ["The tier 'embed'"]
    page = alice_client.post(
        f"/o/{org_a.slug}/routing/",
        {"name": "odd2", "strategy": "smart", "models": "embed, pro", "aggressiveness": "50"},
        follow=True,
    ).content.decode()
    assert "The tier &#x27;embed&#x27; is served by" in page


def test_an_unserved_tier_that_looks_like_a_model_names_it(alice_client, priced):  # noqa: F811
    """ "d\\u0435mo" (a Cyrillic е) as a tier beside the deployment "demo" was warned of
    only as unserved: its hard prompts then got a 503 naming a tier drawn like the model
    that exists (an outside check)."""
    response = _post(
        alice_client, {"name": "alike", "strategy": "smart", "models": ["lite", "pr\u043e"]}
    )
    [warning] = response.json()["warnings"]
    assert "It looks like the model 'pro' (only case, width, spacing or a look-alike" in warning
    put = alice_client.put(
        "/api/gateway/config", {"smart_tiers": ["LITE", "pro"]}, content_type="application/json"
    )
    assert "It looks like the model 'lite'" in put.json()["warnings"][0]
