"""GET /v1/models lists the models a key may call: the org's smart routing alias (`auto`)
included while smart routing is on and the key reaches one of its tiers (it was missing,
so `models.retrieve("auto")` was a 404 for a model every chat request could use, and a
key scoped to the alias listed nothing)."""

import openai
import pytest

from gateway import services
from gateway.tests.conftest import ACTOR, refresh_snapshot, smart_tier_deployments, usage_rows


def _tiers(acme):
    smart_tier_deployments(acme)


def _client(raw, acme):
    return openai.OpenAI(base_url=acme.base_url, api_key=raw, max_retries=0)


def _listed(client):
    return sorted(m.id for m in client.models.list())


def test_the_alias_is_listed_and_retrieved_while_smart_routing_is_on(acme, gw):
    _tiers(acme)
    refresh_snapshot()
    client = _client(acme.raw, acme)
    assert "auto" not in _listed(client)  # off: it does not exist
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("auto")
    services.gateway_config_set(actor=ACTOR, org=acme.org, smart_tiers=["smart-lite", "smart-pro"])
    refresh_snapshot()
    assert "auto" in _listed(client)
    assert client.models.retrieve("auto").id == "auto"
    answer = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content
    services.gateway_config_set(
        actor=ACTOR,
        org=acme.org,
        smart_tiers=["smart-lite", "smart-pro"],
        auto_model_alias="cheapest",
    )
    refresh_snapshot()
    names = _listed(client)
    assert "cheapest" in names and "auto" not in names
    assert len(usage_rows(acme.org)) == 6  # each request one row


def test_a_key_scoped_to_the_alias_lists_it(acme, gw):
    _tiers(acme)
    services.gateway_config_set(actor=ACTOR, org=acme.org, smart_tiers=["smart-lite", "smart-pro"])
    _key, raw = services.api_key_create(
        actor=ACTOR, org=acme.org, name="auto-only", allowed_models=["auto"]
    )
    refresh_snapshot()
    assert _listed(_client(raw, acme)) == ["auto"]


def test_the_alias_is_not_listed_for_a_key_that_reaches_no_tier(acme, gw):
    _tiers(acme)
    services.gateway_config_set(actor=ACTOR, org=acme.org, smart_tiers=["smart-lite", "smart-pro"])
    _key, raw = services.api_key_create(
        actor=ACTOR, org=acme.org, name="small-only", allowed_models=["chat-small"]
    )
    refresh_snapshot()
    client = _client(raw, acme)
    assert _listed(client) == ["chat-small"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("auto")


def test_the_alias_is_matched_exactly_and_a_model_named_like_it_is_refused_as_such(acme, gw):
    """Model names are matched exactly (OpenAI-compatible): with the alias `auto`, a request
    for `AUTO` is no smart routing (a 404), and a deployment named `AUTO` is refused as
    looking like the alias, as a model looking like another is, not as being it (the
    message said "'AUTO' is the alias", which the gateway did not agree with)."""
    from django.core.exceptions import ValidationError

    _tiers(acme)
    services.gateway_config_set(actor=ACTOR, org=acme.org, smart_tiers=["smart-lite", "smart-pro"])
    refresh_snapshot()
    client = _client(acme.raw, acme)
    hi = [{"role": "user", "content": "hi"}]
    assert client.chat.completions.create(model="auto", messages=hi).choices
    for name in ("AUTO", "Auto"):
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model=name, messages=hi)
        with pytest.raises(ValidationError) as refused:
            services.deployment_save(
                actor=ACTOR,
                org=acme.org,
                model_name=name,
                provider=acme.providers["fake"],
                upstream_model="m",
            )
        [message] = refused.value.message_dict["model_name"]
        assert message.startswith(f"'{name}' looks like 'auto', the alias"), message
        assert "matched exactly" in message and f"'{name}' is the alias" not in message
