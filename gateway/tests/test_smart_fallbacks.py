"""Smart routing falls back to the org's fallback models like plain routing does: when no
tier from the chosen one up has a deployment the key may use, the request is served by a
fallback model the key may use instead of failing with a 503 (docs/smart-routing.md)."""

import openai
import pytest

from gateway.tests.conftest import ACTOR, refresh_snapshot, usage_rows
from gateway.tests.test_smart_routing import EASY, _ask, _smart_key, _tiers


def _top_tier_off(acme):
    from gateway.models import Deployment

    Deployment.objects.filter(org=acme.org, model_name="smart-pro").update(is_active=False)


def _fallbacks(acme, models):
    from gateway import services

    services.gateway_config_set(actor=ACTOR, org=acme.org, fallback_models=models)


def test_a_smart_request_whose_tiers_have_no_deployment_is_served_by_a_fallback(acme, gw):
    _tiers(acme)
    _top_tier_off(acme)
    _fallbacks(acme, ["chat-small"])
    client = _smart_key(acme, {"thresholds": [1e-6]})  # everything scores the top tier
    response = _ask(client, EASY)
    assert response.headers["x-bonito-route-tier"] == "smart-pro"
    assert response.headers["x-bonito-model-used"] == "chat-small"
    [row] = [r for r in usage_rows(acme.org) if r.endpoint == "chat"]
    assert (row.status, row.route_tier, row.model_used) == ("success", "smart-pro", "chat-small")
    # No top-tier deployment to price the same tokens on: no savings claimed for it.
    assert row.cost_top_tier is None


def test_the_org_default_falls_back_too(acme, gw):
    from gateway import services

    _tiers(acme)
    _top_tier_off(acme)
    _fallbacks(acme, ["chat-small"])
    services.gateway_config_set(
        actor=ACTOR,
        org=acme.org,
        smart_tiers=["smart-lite", "smart-pro"],
        smart={"thresholds": [1e-6]},
    )
    refresh_snapshot()
    client = openai.OpenAI(base_url=acme.base_url, api_key=acme.raw, max_retries=0)
    assert _ask(client, EASY).headers["x-bonito-model-used"] == "chat-small"


def test_a_fallback_the_key_may_not_use_is_not_tried(acme, gw):
    """The same permission rules as plain routing's fallbacks: a key scoped to some models
    (or an org policy denying the fallback) never reaches another model through them."""
    from gateway import services
    from governance import services as gov

    _tiers(acme)
    _top_tier_off(acme)
    _fallbacks(acme, ["chat-small"])
    policy = gov.routing_policy_save(
        actor=ACTOR,
        org=acme.org,
        name="scoped",
        strategy="smart",
        models=["smart-lite", "smart-pro"],
        smart={"thresholds": [1e-6]},
    )
    _key, raw = services.api_key_create(
        actor=ACTOR,
        org=acme.org,
        name="scoped",
        routing_policy=policy,
        allowed_models=["smart-pro"],
    )
    refresh_snapshot()
    client = openai.OpenAI(base_url=acme.base_url, api_key=raw, max_retries=0)
    with pytest.raises(openai.InternalServerError) as info:
        _ask(client, EASY)
    assert info.value.status_code == 503
    assert info.value.body["code"] == "no_deployment"
    # The org denies it: not for an unscoped key either.
    gov.policy_set(actor=ACTOR, org=acme.org, denied_models=["chat-small"])
    refresh_snapshot()
    with pytest.raises(openai.InternalServerError):
        _ask(_smart_key(acme, {"thresholds": [1e-6]}, name="open"), EASY)
    assert "chat-small" not in {r.model_used for r in usage_rows(acme.org)}


def test_a_fallback_that_is_a_lower_tier_is_not_a_way_down(acme, gw):
    """A prompt never fails over down to a cheaper tier, even when that tier is also one of
    the org's fallback models."""
    _tiers(acme)
    _top_tier_off(acme)
    _fallbacks(acme, ["smart-lite"])
    client = _smart_key(acme, {"thresholds": [1e-6]})
    with pytest.raises(openai.InternalServerError) as info:
        _ask(client, EASY)
    assert info.value.status_code == 503
    assert "smart-lite" not in {r.model_used for r in usage_rows(acme.org)}


def test_a_key_refused_every_tier_it_would_use_is_told_so_not_sent_to_a_fallback(acme, gw):
    """As plain routing: a model the key may not use is a 403 that says so; the fallbacks
    are for tiers that cannot serve, not a way around the key's scope."""
    from gateway import services
    from governance import services as gov

    _tiers(acme)
    _fallbacks(acme, ["chat-small"])
    policy = gov.routing_policy_save(
        actor=ACTOR,
        org=acme.org,
        name="lite-only",
        strategy="smart",
        models=["smart-lite", "smart-pro"],
        smart={"thresholds": [1e-6]},
    )
    _key, raw = services.api_key_create(
        actor=ACTOR,
        org=acme.org,
        name="lite-only",
        routing_policy=policy,
        allowed_models=["smart-lite", "chat-small"],
    )
    refresh_snapshot()
    client = openai.OpenAI(base_url=acme.base_url, api_key=raw, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as info:
        _ask(client, EASY)
    assert "smart-pro" in info.value.body["message"]
