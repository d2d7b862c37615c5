"""A prompt past a deployment's context window moves on to the next deployment (the next
tier up, for smart routing) instead of failing: when the provider says so (OpenAI's
`context_length_exceeded`, Anthropic's, Bedrock's and Gemini's wordings), and before any
call when the prompt's counted tokens exceed the window LiteLLM's map gives the model
(docs/gateway.md *Routing*, docs/smart-routing.md)."""

import openai
import pytest

from gateway.tests.conftest import ACTOR, anthropic_deployment, refresh_snapshot, usage_rows
from gateway.tests.fake_upstream import Behaviour

EASY = "Translate 'good morning' into French."

# How providers word it (the fake answers each as an OpenAI-shaped 400 error).
TOO_LONG = [
    (
        "This model's maximum context length is 128000 tokens. However, your messages "
        "resulted in 1048000 tokens. Please reduce the length of the messages.",
        "context_length_exceeded",
    ),
    ("prompt is too long: 208310 tokens > 200000 maximum", None),
    ("Input is too long for requested model.", None),
    (
        "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
        None,
    ),
    ("Your input exceeds the context window of this model.", "context_length_exceeded"),
]


def _deploy(acme, name, upstream, provider="fake"):
    from gateway import services

    services.deployment_save(
        actor=ACTOR,
        org=acme.org,
        model_name=name,
        provider=acme.providers[provider],
        upstream_model=upstream,
        input_price_per_mtok=1.0,
        output_price_per_mtok=2.0,
    )


def _smart_client(acme, tiers, thresholds):
    from gateway import services
    from governance import services as gov

    policy = gov.routing_policy_save(
        actor=ACTOR,
        org=acme.org,
        name="tiers",
        strategy="smart",
        models=tiers,
        smart={"thresholds": thresholds},
    )
    _key, raw = services.api_key_create(actor=ACTOR, org=acme.org, name="t", routing_policy=policy)
    refresh_snapshot()
    return openai.OpenAI(base_url=acme.base_url, api_key=raw, max_retries=0)


def _three_tiers(acme, upstreams=("ctx-lite", "ctx-mid", "ctx-pro")):
    for name, upstream in zip(("lite", "mid", "pro"), upstreams, strict=True):
        _deploy(acme, name, upstream)
    # Every prompt scores below the first threshold: the cheap tier.
    return _smart_client(acme, ["lite", "mid", "pro"], [0.999, 0.9999])


def _calls(acme, upstream):
    return sum(1 for r in acme.fake.requests if r["body"].get("model") == upstream)


def _ask(client, text=EASY, stream=False, model="auto"):
    messages = [{"role": "user", "content": text}]
    if not stream:
        return client.chat.completions.with_raw_response.create(model=model, messages=messages)
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=messages, stream=True
    )
    text = "".join(
        c.choices[0].delta.content or "" for c in raw.parse() if c.choices and c.choices[0].delta
    )
    assert text
    return raw


def _chat_rows(acme):
    return [r for r in usage_rows(acme.org) if r.endpoint == "chat"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("message", "code"), TOO_LONG)
def test_a_tier_that_says_the_prompt_is_too_long_fails_over_up(acme, gw, stream, message, code):
    client = _three_tiers(acme)
    for upstream in ("ctx-lite", "ctx-mid"):
        acme.fake.behaviours[upstream] = Behaviour(
            status=400, error_message=message, error_code=code
        )
    response = _ask(client, stream=stream)
    assert response.headers["x-bonito-route-tier"] == "lite"
    assert response.headers["x-bonito-model-used"] == "pro"
    # Each tier below was asked once: its answer holds in every round.
    assert [_calls(acme, u) for u in ("ctx-lite", "ctx-mid", "ctx-pro")] == [1, 1, 1]
    [row] = _chat_rows(acme)
    assert (row.status, row.model_used, row.route_tier) == ("success", "pro", "lite")


@pytest.mark.parametrize("stream", [False, True])
def test_when_no_tier_holds_the_prompt_the_client_gets_the_providers_error(acme, gw, stream):
    client = _three_tiers(acme)
    for upstream in ("ctx-lite", "ctx-mid", "ctx-pro"):
        acme.fake.behaviours[upstream] = Behaviour(
            status=400, error_message="prompt is too long: 208310 tokens > 200000 maximum"
        )
    with pytest.raises(openai.BadRequestError) as info:
        _ask(client, stream=stream)
    assert info.value.status_code == 400
    assert info.value.body["code"] == "context_length_exceeded"  # whatever the provider's
    assert "prompt is too long" in info.value.body["message"]
    assert [_calls(acme, u) for u in ("ctx-lite", "ctx-mid", "ctx-pro")] == [1, 1, 1]
    [row] = _chat_rows(acme)
    assert (row.status, row.http_status) == ("rejected", 400)
    assert row.cost == 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_failover_list_moves_on_from_a_deployment_whose_window_is_too_small(acme, gw, stream):
    """Plain (not smart) routing: ha-chat's primary says the prompt is too long, the
    secondary serves it; no health cost to the primary (the next request tries it first)."""
    client = openai.OpenAI(base_url=acme.base_url, api_key=acme.raw, max_retries=0)
    acme.fake.behaviours["primary-model"] = Behaviour(
        status=400,
        error_message="This model's maximum context length is 8192 tokens.",
        error_code="context_length_exceeded",
    )
    for _ in range(4):  # past the 3 failures in a row that would cool a deployment down
        assert _ask(client, stream=stream, model="ha-chat").headers["x-bonito-model-used"]
    assert _calls(acme, "primary-model") == 4
    assert _calls(acme, "secondary-model") == 4
    rows = _chat_rows(acme)
    assert len(rows) == 4
    assert {(r.status, r.provider) for r in rows} == {("success", "fake2")}


def test_other_400s_are_still_the_clients_and_not_retried(acme, gw):
    """A 400 that is not about the context window is the request's fault: passed on at
    once, the next deployment not tried."""
    client = openai.OpenAI(base_url=acme.base_url, api_key=acme.raw, max_retries=0)
    acme.fake.behaviours["primary-model"] = Behaviour(
        status=400, error_message="Invalid value for 'temperature'.", error_code="invalid_value"
    )
    with pytest.raises(openai.BadRequestError) as info:
        _ask(client, model="ha-chat")
    assert info.value.body["code"] == "invalid_value"
    assert _calls(acme, "secondary-model") == 0
    assert len(_chat_rows(acme)) == 1


# ---------------------------------------------------------------- known windows, no call
# "gpt-4" reads 8,192 prompt tokens, "gpt-3.5-turbo" 16,385, "gpt-4.1" 1,047,576
# (LiteLLM's bundled map); " word" is one token.
LONG = "word " * 12_000  # 12,000 tokens: past gpt-4's window, within gpt-3.5-turbo's


@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_past_a_tiers_known_window_skips_it_without_a_call(acme, gw, stream):
    client = _three_tiers(acme, ("gpt-4", "gpt-3.5-turbo", "gpt-4.1"))
    response = _ask(client, LONG, stream=stream)
    assert response.headers["x-bonito-route-tier"] == "lite"
    assert response.headers["x-bonito-model-used"] == "mid"
    assert [_calls(acme, u) for u in ("gpt-4", "gpt-3.5-turbo", "gpt-4.1")] == [0, 1, 0]
    [row] = _chat_rows(acme)
    assert (row.status, row.model_used) == ("success", "mid")
    # A short prompt still goes to the cheap tier.
    assert _ask(client, stream=stream).headers["x-bonito-model-used"] == "lite"


def test_a_deployment_whose_window_is_unknown_is_not_skipped(acme, gw):
    client = _three_tiers(acme, ("ctx-lite-unknown", "gpt-3.5-turbo", "gpt-4.1"))
    assert _ask(client, LONG).headers["x-bonito-model-used"] == "lite"


def test_when_no_known_window_holds_it_only_the_largest_is_asked(acme, gw):
    """The count is the gateway's (its tokenizer, the text only): the provider with the
    largest window has the last word, one call, not one per deployment."""
    _deploy(acme, "small", "gpt-4")
    _deploy(acme, "small", "gpt-3.5-turbo", provider="fake2")
    refresh_snapshot()
    client = openai.OpenAI(base_url=acme.base_url, api_key=acme.raw, max_retries=0)
    acme.fake.behaviours["gpt-3.5-turbo"] = Behaviour(
        status=400,
        error_message="This model's maximum context length is 16385 tokens.",
        error_code="context_length_exceeded",
    )
    with pytest.raises(openai.BadRequestError) as info:
        _ask(client, "word " * 20_000, model="small")
    assert info.value.body["code"] == "context_length_exceeded"
    assert (_calls(acme, "gpt-4"), _calls(acme, "gpt-3.5-turbo")) == (0, 1)
    [row] = _chat_rows(acme)
    assert (row.status, row.http_status) == ("rejected", 400)


def test_embeddings_are_not_skipped_by_their_total_size(acme, gw):
    """An embeddings request's inputs are embedded one by one: their total is no prompt."""
    client = openai.OpenAI(base_url=acme.base_url, api_key=acme.raw, max_retries=0)
    # text-embedding-3-small reads 8,191 tokens per input; these are 3 x 5,000.
    result = client.embeddings.create(model="embed-small", input=["word " * 5000] * 3)
    assert len(result.data) == 3


# ---------------------------------------------------------------- through LiteLLM
@pytest.mark.parametrize("stream", [False, True])
def test_an_anthropic_deployment_that_says_too_long_fails_over_through_litellm(acme, gw, stream):
    """Anthropic via LiteLLM (its ContextWindowExceededError, or the words it kept) on
    /v1/chat/completions, then a tier on another provider serves it."""
    anthropic_deployment(acme, "claude-lite", "claude-ctx-small")
    _deploy(acme, "pro", "ctx-pro")
    acme.fake.behaviours["claude-ctx-small"] = Behaviour(
        status=400, error_message="prompt is too long: 208310 tokens > 200000 maximum"
    )
    client = _smart_client(acme, ["claude-lite", "pro"], [0.999])
    response = _ask(client, stream=stream)
    assert response.headers["x-bonito-model-used"] == "pro"
    assert _calls(acme, "claude-ctx-small") == 1
    [row] = _chat_rows(acme)
    assert (row.status, row.model_used) == ("success", "pro")


def test_messages_api_fails_over_up_too(acme, gw):
    import httpx

    client = _three_tiers(acme)
    acme.fake.behaviours["ctx-lite"] = Behaviour(
        status=400, error_message="Input is too long for requested model."
    )
    r = httpx.post(
        acme.base_url + "/messages",
        headers={"x-api-key": client.api_key, "anthropic-version": "2023-06-01"},
        json={"model": "auto", "max_tokens": 50, "messages": [{"role": "user", "content": EASY}]},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-bonito-model-used"] == "mid"
    [row] = [x for x in usage_rows(acme.org) if x.endpoint == "messages"]
    assert (row.status, row.model_used) == ("success", "mid")


@pytest.mark.parametrize("stream", [False, True])
def test_native_anthropic_messages_fail_over_up_too(acme, gw, stream):
    """/v1/messages passed through to Anthropic, whose 400 says `prompt is too long`: the
    next tier (translated, on another provider) serves it."""
    import anthropic

    anthropic_deployment(acme, "claude-lite", "claude-ctx-small")
    _deploy(acme, "pro", "ctx-pro")
    acme.fake.behaviours["claude-ctx-small"] = Behaviour(
        status=400, error_message="prompt is too long: 208310 tokens > 200000 maximum"
    )
    raw = _smart_client(acme, ["claude-lite", "pro"], [0.999]).api_key
    client = anthropic.Anthropic(base_url=acme.url, api_key=raw, max_retries=0)
    messages = [{"role": "user", "content": EASY}]
    if stream:
        with client.messages.stream(model="auto", max_tokens=50, messages=messages) as s:
            assert s.get_final_text()
    else:
        assert client.messages.create(model="auto", max_tokens=50, messages=messages).content
    assert (_calls(acme, "claude-ctx-small"), _calls(acme, "ctx-pro")) == (1, 1)
    [row] = [x for x in usage_rows(acme.org) if x.endpoint == "messages"]
    assert (row.status, row.model_used) == ("success", "pro")
