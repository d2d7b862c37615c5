"""Every /v1 API names in its answer's `model` the model that answered, not the name the
client asked for (`auto`, an rt- key's anything): chat and completions as the provider
said it, Anthropic Messages (streamed `message_start` and whole) and the Responses API
the same way (docs/gateway.md *Anthropic Messages API*)."""

import anthropic
import openai
import pytest

from gateway.tests.conftest import (
    ACTOR,
    anthropic_deployment,
    refresh_snapshot,
    smart_tier_deployments,
)
from gateway.tests.test_smart_routing import EASY

HI = [{"role": "user", "content": EASY}]


@pytest.fixture
def tiers(acme):
    """The org default's smart tiers: everything scores the cheap one (`tier-lite`, an
    OpenAI-compatible deployment, translated for Messages); `claude-tier` (Anthropic,
    native for Messages) is the only tier of the second set."""
    from gateway import services

    smart_tier_deployments(acme, ("tier-lite", "tier-pro"))
    services.gateway_config_set(
        actor=ACTOR,
        org=acme.org,
        smart_tiers=["tier-lite", "tier-pro"],
        smart={"thresholds": [0.999]},
    )
    refresh_snapshot()
    return acme


def _anthropic(acme, key=None):
    return anthropic.Anthropic(base_url=acme.url, api_key=key or acme.raw, max_retries=0)


def _openai(acme, key=None):
    return openai.OpenAI(base_url=acme.base_url, api_key=key or acme.raw, max_retries=0)


def test_chat_names_the_model_that_answered(tiers, mode):
    raw = _openai(tiers).chat.completions.with_raw_response.create(model="auto", messages=HI)
    assert raw.headers["x-bonito-model-used"] == "tier-lite"
    assert raw.parse().model == "tier-lite-upstream"


@pytest.mark.parametrize("stream", [False, True])
def test_messages_name_the_model_that_answered_not_auto(tiers, mode, stream):
    client = _anthropic(tiers)
    if stream:
        with client.messages.stream(model="auto", max_tokens=50, messages=HI) as s:
            events = list(s)
        [start] = [e for e in events if e.type == "message_start"]
        assert start.message.model == "tier-lite-upstream"
        assert s.get_final_message().model == "tier-lite-upstream"
    else:
        message = client.messages.create(model="auto", max_tokens=50, messages=HI)
        assert message.model == "tier-lite-upstream"


@pytest.mark.parametrize("stream", [False, True])
def test_messages_from_an_anthropic_deployment_name_its_model(acme, mode, stream):
    """Native (Anthropic's answer, its model id) or LiteLLM's call: the same name, through
    an rt- key whose client named a model of its own."""
    from gateway import services
    from governance import services as gov

    anthropic_deployment(acme, "claude-tier", "claude-3-5-haiku-latest")
    policy = gov.routing_policy_save(
        actor=ACTOR, org=acme.org, name="c", strategy="failover", models=["claude-tier"]
    )
    _key, raw = services.api_key_create(actor=ACTOR, org=acme.org, name="c", routing_policy=policy)
    refresh_snapshot()
    client = _anthropic(acme, raw)
    if stream:
        with client.messages.stream(model="anything", max_tokens=50, messages=HI) as s:
            events = list(s)
        [start] = [e for e in events if e.type == "message_start"]
        assert start.message.model.startswith("claude-3-5-haiku")
    else:
        message = client.messages.create(model="anything", max_tokens=50, messages=HI)
        assert message.model.startswith("claude-3-5-haiku")


@pytest.mark.parametrize("stream", [False, True])
def test_responses_name_the_model_that_answered_not_auto(tiers, mode, stream):
    client = _openai(tiers)
    if stream:
        events = list(client.responses.create(model="auto", input=EASY, stream=True))
        models = {e.response.model for e in events if hasattr(e, "response")}
        assert models == {"tier-lite-upstream"}
    else:
        assert client.responses.create(model="auto", input=EASY).model == "tier-lite-upstream"
