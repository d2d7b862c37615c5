"""The Anthropic Messages API on /v1/messages, driven by the official anthropic SDK against
a live gateway: passed through to an Anthropic deployment (a fake Anthropic upstream),
translated to chat completions for an OpenAI-compatible one, both provider paths."""

import asyncio
import concurrent.futures
import time

import anthropic
import httpx
import orjson
import pytest

from gateway import services
from gateway.tests.conftest import ACTOR, anthropic_deployment, refresh_snapshot, usage_rows
from gateway.tests.fake_upstream import Behaviour

UPSTREAM = {"claude": "claude-3-5-haiku-latest", "chat-small": "gpt-4o-mini"}
TOOLS = [
    {
        "name": "get_weather",
        "description": "The weather in a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def claude(acme):
    """acme plus an Anthropic connection (to the fake's Anthropic endpoints) serving `claude`."""
    anthropic_deployment(
        acme, "claude", UPSTREAM["claude"], input_price_per_mtok=1, output_price_per_mtok=5
    )
    return acme


@pytest.fixture(params=["claude", "chat-small"])
def model(request):
    """An Anthropic deployment (native, or LiteLLM's Anthropic call) and an OpenAI-compatible
    one (translated): the SDK must not see a difference."""
    return request.param


def client(acme, key=None, **kw):
    return anthropic.Anthropic(
        base_url=acme.url, api_key=key or acme.raw, max_retries=0, timeout=20, **kw
    )


def native(model, mode):
    return model == "claude" and mode == "passthrough"


def sent(acme):
    """What the upstream was sent by the gateway (the last request)."""
    return acme.fake.requests[-1]


def post(acme, body, headers=None, path="/v1/messages", content=None):
    headers = {"x-api-key": acme.raw, "anthropic-version": "2023-06-01", **(headers or {})}
    if content is not None:
        return httpx.post(acme.url + path, content=content, headers=headers, timeout=20)
    return httpx.post(acme.url + path, json=body, headers=headers, timeout=20)


# ------------------------------------------------------------------ messages
def test_a_message(claude, mode, model):
    message = client(claude).messages.create(model=model, max_tokens=100, messages=HI)
    assert message.type == "message" and message.role == "assistant"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "word0 word1 word2 word3 word4"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 5)
    upstream = sent(claude)
    assert upstream["body"]["model"] == UPSTREAM[model]  # the upstream id, not the public name
    if model == "claude":
        assert upstream["endpoint"] == "messages"
        assert upstream["headers"]["x-api-key"] == "sk-ant-fake-upstream-credential"
        if mode == "passthrough":
            version = client(claude).default_headers["anthropic-version"]
            assert upstream["headers"]["anthropic-version"] == version  # the client's
        assert upstream["body"]["max_tokens"] == 100
    else:
        assert upstream["endpoint"] == "chat"
        assert upstream["body"]["messages"] == [{"role": "user", "content": "hi"}]
    assert acme_key_not_sent(claude)
    [row] = usage_rows(claude.org)
    assert (row.endpoint, row.status, row.http_status) == ("messages", "success", 200)
    assert (row.model_requested, row.model_used) == (model, model)
    assert (row.input_tokens, row.output_tokens) == (11, 5)
    if model == "claude":
        assert float(row.cost) == pytest.approx((11 * 1 + 5 * 5) / 1e6)


def acme_key_not_sent(acme) -> bool:
    """The client's bn- key never reaches a provider."""
    return all(acme.raw not in str(r["headers"]) for r in acme.fake.requests)


def test_the_stream_helper(claude, mode, model):
    with client(claude).messages.stream(model=model, max_tokens=100, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "word0 word1 word2 word3 word4"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5
    [row] = usage_rows(claude.org)
    assert (row.endpoint, row.status, row.input_tokens, row.output_tokens) == (
        "messages",
        "success",
        11,
        5,
    )
    assert row.ttft_ms is not None


def test_create_with_stream_true_sends_anthropic_events(claude, mode, model):
    events = list(
        client(claude).messages.create(model=model, max_tokens=100, messages=HI, stream=True)
    )
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert types[-2] == "message_delta" and events[-2].delta.stop_reason == "end_turn"
    assert "content_block_start" in types and "content_block_stop" in types
    deltas = [e.delta.text for e in events if e.type == "content_block_delta"]
    assert "".join(deltas) == "word0 word1 word2 word3 word4"
    with httpx.stream(
        "POST",
        claude.url + "/v1/messages",
        json={"model": model, "max_tokens": 10, "messages": HI, "stream": True},
        headers={"x-api-key": claude.raw},
        timeout=20,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = list(response.iter_lines())
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event:")]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert len(usage_rows(claude.org)) == 2


def test_tools_round_trip(claude, mode, model):
    c = client(claude)
    first = c.messages.create(
        model=model,
        max_tokens=100,
        tools=TOOLS,
        tool_choice={"type": "auto"},
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    assert first.stop_reason == "tool_use"
    [call] = [b for b in first.content if b.type == "tool_use"]
    assert (call.name, call.input) == ("get_weather", {"city": "Paris"})
    upstream = sent(claude)["body"]
    if model == "chat-small":
        assert upstream["tools"][0]["function"]["name"] == "get_weather"
        assert upstream["tools"][0]["function"]["parameters"] == TOOLS[0]["input_schema"]
        assert upstream["tool_choice"] == "auto"
    else:
        assert upstream["tools"][0]["name"] == "get_weather"
    second = c.messages.create(
        model=model,
        max_tokens=100,
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "18°C, sunny"},
                    {"type": "text", "text": "Thanks!"},
                ],
            },
        ],
    )
    assert second.content
    upstream = sent(claude)["body"]
    if model == "chat-small":
        assistant, tool, user = upstream["messages"][1:]
        assert assistant["tool_calls"][0]["id"] == call.id
        assert assistant["tool_calls"][0]["function"]["name"] == "get_weather"
        assert tool == {"role": "tool", "tool_call_id": call.id, "content": "18°C, sunny"}
        assert user == {"role": "user", "content": [{"type": "text", "text": "Thanks!"}]}
        assert upstream["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    elif native(model, mode):
        assert upstream["messages"][2]["content"][0]["type"] == "tool_result"
        assert upstream["tool_choice"] == {"type": "tool", "name": "get_weather"}
    assert len(usage_rows(claude.org)) == 2


def _chat_tool_stream() -> bytes:
    """An OpenAI-compatible stream of one tool call, its arguments in two pieces."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    call = {"index": 0, "id": "call_1", "type": "function"}
    deltas = [
        {
            "role": "assistant",
            "tool_calls": [{**call, "function": {"name": "get_weather", "arguments": ""}}],
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
    ]
    chunks = [
        {**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas
    ]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    chunks.append({**base, "choices": [], "usage": usage})
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def test_a_streamed_tool_call(claude, mode, model):
    if model == "chat-small":
        claude.fake.behaviours[UPSTREAM[model]] = Behaviour(
            raw_response=("text/event-stream", _chat_tool_stream())
        )
    with client(claude).messages.stream(
        model=model, max_tokens=100, tools=TOOLS, messages=HI
    ) as stream:
        final = stream.get_final_message()
    [call] = [b for b in final.content if b.type == "tool_use"]
    assert (call.name, call.input) == ("get_weather", {"city": "Paris"})
    assert final.stop_reason == "tool_use"
    [row] = usage_rows(claude.org)
    assert row.status == "success"


@pytest.mark.parametrize("system", ["You are terse.", [{"type": "text", "text": "You are terse."}]])
def test_a_system_prompt(claude, mode, model, system):
    client(claude).messages.create(model=model, max_tokens=10, system=system, messages=HI)
    upstream = sent(claude)["body"]
    if model == "chat-small":
        assert upstream["messages"][0] == {"role": "system", "content": "You are terse."}
    elif native(model, mode):
        assert upstream["system"] == system  # as sent


def test_image_blocks(claude, mode, model):
    content = [
        {"type": "text", "text": "What is this?"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
    ]
    client(claude).messages.create(
        model=model, max_tokens=10, messages=[{"role": "user", "content": content}]
    )
    upstream = sent(claude)["body"]
    if model == "chat-small":
        parts = upstream["messages"][0]["content"]
        assert parts[1] == {
            "type": "image_url",
            "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
        }
        assert parts[2] == {
            "type": "image_url",
            "image_url": {"url": "https://example.com/cat.png"},
        }
    elif native(model, mode):
        assert upstream["messages"][0]["content"] == content


def test_sampling_fields_are_carried(claude, mode, model):
    client(claude).messages.create(
        model=model,
        max_tokens=10,
        messages=HI,
        # (this SDK version no longer names the sampling fields; the API takes them)
        extra_body={"temperature": 0.2, "top_p": 0.9, "top_k": 5},
        stop_sequences=["END"],
        metadata={"user_id": "user-42"},
    )
    upstream = sent(claude)["body"]
    if model == "chat-small":
        assert (upstream["temperature"], upstream["top_p"], upstream["top_k"]) == (0.2, 0.9, 5)
        assert upstream["stop"] == ["END"] and upstream["user"] == "user-42"
        assert upstream["max_tokens"] == 10
    elif native(model, mode):
        assert upstream["stop_sequences"] == ["END"] and upstream["top_k"] == 5
        assert upstream["metadata"] == {"user_id": "user-42"}


# ------------------------------------------------------------------ count_tokens
def test_count_tokens(claude, mode, model):
    counted = client(claude).messages.count_tokens(model=model, messages=HI, system="Be brief.")
    if native(model, mode):
        assert counted.input_tokens == 13  # Anthropic's own count
        assert sent(claude)["endpoint"] == "count_tokens"
    else:
        assert counted.input_tokens > 0  # ours: no provider call
        assert all(r["endpoint"] != "chat" for r in claude.fake.requests)
    [row] = usage_rows(claude.org)
    assert (row.endpoint, row.status, row.cost) == ("count_tokens", "success", 0)
    assert (row.input_tokens, row.output_tokens) == (counted.input_tokens, 0)


def test_count_tokens_of_an_unknown_model_is_404(claude):
    with pytest.raises(anthropic.NotFoundError):
        client(claude).messages.count_tokens(model="nope", messages=HI)
    [row] = usage_rows(claude.org)
    assert (row.endpoint, row.status, row.http_status) == ("count_tokens", "rejected", 404)


def test_a_translated_stream_ending_in_an_error_event_counts_the_prompt(claude, mode):
    """A translated stream's message_start says input_tokens 0 (a placeholder): however
    the stream ends before the final usage (here an upstream error chunk), the prompt is
    counted from what was sent, never billed zero."""
    words = b"".join(
        b'data: {"choices": [{"index": 0, "delta": {"content": "w' + str(i).encode() + b' "}}]}\n\n'
        for i in range(3)
    )
    broken = words + b'data: {"error": {"message": "upstream fell over"}}\n\n'
    claude.fake.behaviours[UPSTREAM["chat-small"]] = Behaviour(
        raw_response=("text/event-stream", broken)
    )
    prompt = [{"role": "user", "content": "count me " * 50}]
    with httpx.stream(
        "POST",
        claude.url + "/v1/messages",
        json={"model": "chat-small", "max_tokens": 10, "messages": prompt, "stream": True},
        headers={"x-api-key": claude.raw},
        timeout=20,
    ) as response:
        lines = list(response.iter_lines())
    assert [x for x in lines if x.startswith("event:")][-1] == "event: error"
    [row] = usage_rows(claude.org)
    # (LiteLLM raises on the error chunk: the stream breaks rather than ending in an event)
    assert (row.status, row.http_status) == ("error", 502)
    assert row.error_type in ("stream_error", "stream_broken")
    assert row.input_tokens >= 100 and row.output_tokens >= 3 and row.cost > 0


def test_count_tokens_takes_from_the_rate_limits(claude, mode, model):
    """count_tokens calls Anthropic (or runs the tokenizer): one request from the rpm
    buckets; past them an Anthropic-shaped 429 with no upstream call."""
    from gateway.models import ApiKey

    ApiKey.objects.filter(pk=claude.key.pk).update(rpm_limit=1)
    refresh_snapshot()
    c = client(claude)
    c.messages.count_tokens(model=model, messages=HI)
    before = len(claude.fake.requests)
    with pytest.raises(anthropic.RateLimitError) as info:
        c.messages.count_tokens(model=model, messages=HI)
    assert info.value.body["error"]["type"] == "rate_limit_error"
    assert int(info.value.response.headers["retry-after"]) >= 1
    assert len(claude.fake.requests) == before
    assert [(r.status, r.http_status) for r in usage_rows(claude.org)] == [
        ("success", 200),
        ("rejected", 429),
    ]


def test_count_tokens_takes_its_estimate_from_the_token_limits(claude, mode, model):
    from gateway.models import ApiKey

    ApiKey.objects.filter(pk=claude.key.pk).update(tpm_limit=1000)
    refresh_snapshot()
    big = [{"role": "user", "content": "count me " * 2000}]  # ~6000 tokens estimated
    with pytest.raises(anthropic.RateLimitError, match="tokens"):
        client(claude).messages.count_tokens(model=model, messages=big)
    assert claude.fake.requests == []
    assert client(claude).messages.count_tokens(model=model, messages=HI).input_tokens > 0


def test_count_tokens_of_a_large_body_is_counted_off_the_event_loop(claude, mode):
    """A large body is tokenized in a thread: the same count as ours of a small one."""
    text = "count me " * 20_000  # ~180 kB
    big = client(claude).messages.count_tokens(
        model="chat-small", messages=[{"role": "user", "content": text}]
    )
    from gateway.dataplane import anthropic_api

    body = {"model": "chat-small", "messages": [{"role": "user", "content": text}]}
    assert big.input_tokens == anthropic_api.count_input(anthropic_api.to_chat(body)[0], body)


def test_count_tokens_validates_as_messages_does(claude, mode):
    document = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
    }
    with_document = [{"role": "user", "content": [document]}]
    for model in ("chat-small", "claude"):
        for bad in (-1, 0, 1.5, "10", True):
            response = post(
                claude,
                {"model": model, "messages": HI, "max_tokens": bad},
                path="/v1/messages/count_tokens",
            )
            assert response.status_code == 400, (model, bad, response.text)
            assert response.json()["error"]["type"] == "invalid_request_error"
            assert "max_tokens" in response.json()["error"]["message"]
    with pytest.raises(anthropic.BadRequestError, match="document"):  # as /v1/messages says
        client(claude).messages.count_tokens(model="chat-small", messages=with_document)
    assert claude.fake.requests == []
    if mode == "passthrough":  # an Anthropic deployment takes it as it is
        counted = client(claude).messages.count_tokens(model="claude", messages=with_document)
        assert counted.input_tokens > 0 and sent(claude)["endpoint"] == "count_tokens"
    else:  # LiteLLM's Anthropic call is a translation too: refused as /v1/messages refuses it
        with pytest.raises(anthropic.BadRequestError, match="document"):
            client(claude).messages.create(model="claude", max_tokens=5, messages=with_document)
        with pytest.raises(anthropic.BadRequestError, match="document"):
            client(claude).messages.count_tokens(model="claude", messages=with_document)


# ------------------------------------------------------------------ keys and errors
@pytest.mark.parametrize("header", ["x-api-key", "authorization"])
def test_either_key_header_works(claude, header):
    value = claude.raw if header == "x-api-key" else f"Bearer {claude.raw}"
    response = httpx.post(
        claude.url + "/v1/messages",
        json={"model": "claude", "max_tokens": 10, "messages": HI},
        headers={header: value, "anthropic-version": "2023-06-01"},
        timeout=20,
    )
    assert response.status_code == 200 and response.json()["type"] == "message"


@pytest.mark.parametrize("key", [None, "bn-" + "x" * 38, "sk-ant-not-ours"])
def test_a_wrong_or_missing_key_is_401_in_anthropic_shape(claude, key):
    headers = {"anthropic-version": "2023-06-01"} | ({"x-api-key": key} if key else {})
    response = httpx.post(
        claude.url + "/v1/messages",
        json={"model": "claude", "max_tokens": 10, "messages": HI},
        headers=headers,
        timeout=20,
    )
    assert response.status_code == 401
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert body["error"]["message"]
    if key:
        with pytest.raises(anthropic.AuthenticationError):
            client(claude, key).messages.create(model="claude", max_tokens=10, messages=HI)
    assert usage_rows() == [] and claude.fake.requests == []


def test_rate_limit_is_a_rate_limit_error(claude, mode):
    from gateway.models import ApiKey

    ApiKey.objects.filter(pk=claude.key.pk).update(rpm_limit=1)
    refresh_snapshot()
    c = client(claude)
    c.messages.create(model="claude", max_tokens=10, messages=HI)
    with pytest.raises(anthropic.RateLimitError) as info:
        c.messages.create(model="claude", max_tokens=10, messages=HI)
    assert info.value.body["error"]["type"] == "rate_limit_error"
    assert int(info.value.response.headers["retry-after"]) >= 1
    assert [r.status for r in usage_rows(claude.org)] == ["success", "rejected"]


def test_spend_cap_and_key_scope_apply(claude):
    from governance import services as gov

    _key, narrow = services.api_key_create(
        actor=ACTOR, org=claude.org, name="narrow", allowed_models=["chat-small"]
    )
    refresh_snapshot()
    with pytest.raises(anthropic.PermissionDeniedError):
        client(claude, narrow).messages.create(model="claude", max_tokens=10, messages=HI)
    gov.policy_set(actor=ACTOR, org=claude.org, monthly_spend_cap_usd=0)
    refresh_snapshot()
    with pytest.raises(anthropic.RateLimitError, match="spend cap"):
        client(claude).messages.create(model="claude", max_tokens=10, messages=HI)
    assert claude.fake.requests == []
    assert [(r.status, r.http_status) for r in usage_rows(claude.org)] == [
        ("rejected", 403),
        ("rejected", 429),
    ]


def test_unknown_model_is_not_found(claude):
    with pytest.raises(anthropic.NotFoundError) as info:
        client(claude).messages.create(model="claude-9", max_tokens=10, messages=HI)
    assert info.value.body["error"]["type"] == "not_found_error"


def test_a_bad_body_is_a_bad_request(claude):
    with pytest.raises(anthropic.BadRequestError, match="temperature"):
        client(claude).messages.create(
            model="claude", max_tokens=10, messages=HI, extra_body={"temperature": 3}
        )


BAD_BODIES = [
    (b"{not json", "JSON"),
    (b"[]", "object"),
    (b'"text"', "object"),
    (b"", "empty"),
    (b'{"model": "claude", "messages": [{"role": "user", "content": "x"}]}', "max_tokens"),
    (b'{"model": "claude", "max_tokens": "10", "messages": []}', "max_tokens"),
    (b'{"model": "claude", "max_tokens": true, "messages": []}', "max_tokens"),
    (
        b'{"model": "claude", "max_tokens": 0, "messages": [{"role":"user","content":"x"}]}',
        "max_tokens",
    ),
    (b'{"model": "claude", "max_tokens": 5}', "messages"),
    (b'{"model": "claude", "max_tokens": 5, "messages": []}', "messages"),
    (b'{"model": "claude", "max_tokens": 5, "messages": "hi"}', "messages"),
    (
        b'{"model": "claude", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}',
        "role",
    ),
    (b'{"model": "claude", "max_tokens": 5, "messages": [{"role": "user"}]}', "content"),
    (
        b'{"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": 7}]}',
        "content",
    ),
    (
        b'{"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text"}]}]}',
        "text",
    ),
    (
        b'{"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "ftp"}}]}]}',
        "source",
    ),
    (
        b'{"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": []}]}]}',
        "input",
    ),
    (b'{"model": 5, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}', "model"),
    (b'{"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}', "model"),
    (
        b'{"model": "claude", "max_tokens": 5, "system": 5, "messages": [{"role": "user", "content": "x"}]}',
        "system",
    ),
    (
        b'{"model": "claude", "max_tokens": 5, "stream": "yes", "messages": [{"role": "user", "content": "x"}]}',
        "stream",
    ),
    (
        b'{"model": "claude", "max_tokens": 5, "top_k": -1, "messages": [{"role": "user", "content": "x"}]}',
        "top_k",
    ),
    (
        b'{"model": "claude", "max_tokens": 5, "stop_sequences": [1], "messages": [{"role": "user", "content": "x"}]}',
        "stop_sequences",
    ),
    (
        b'{"model": "claude", "max_tokens": 5, "tools": [{"name": "t"}], "messages": [{"role": "user", "content": "x"}]}',
        "input_schema",
    ),
    (
        b'{"model": "claude", "max_tokens": 5, "tool_choice": {"type": "some"}, "messages": [{"role": "user", "content": "x"}]}',
        "tool_choice",
    ),
    (
        b'{"model": "claude", "max_tokens": 5, "metadata": [], "messages": [{"role": "user", "content": "x"}]}',
        "metadata",
    ),
    (
        b'{"model": "claude", "max_tokens": 5, "messages": ' + b"[" * 200 + b"]" * 200 + b"}",
        "nested",
    ),
]


def test_bad_input_is_an_anthropic_shaped_400_never_a_500(claude):
    for raw, says in BAD_BODIES:
        response = post(claude, None, content=raw)
        assert response.status_code == 400, (raw, response.text)
        body = response.json()
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        assert says.lower() in body["error"]["message"].lower(), (raw, body)
    rows = usage_rows(claude.org)  # a valid key: one row each, none reached a provider
    assert len(rows) == len(BAD_BODIES)
    assert {(r.status, r.http_status, r.endpoint) for r in rows} == {("rejected", 400, "messages")}
    assert claude.fake.requests == []
    for raw, _says in BAD_BODIES[:4]:
        response = post(claude, None, content=raw, path="/v1/messages/count_tokens")
        assert response.status_code == 400 and response.json()["type"] == "error"


def test_an_oversized_body_is_413_in_anthropic_shape(claude, settings):
    from gateway import runtime

    limit = runtime.gateway().max_body_bytes
    big = b'{"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "'
    big += b"x" * (limit + 10) + b'"}]}'
    response = post(claude, None, content=big)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"
    with pytest.raises(anthropic.APIStatusError) as info:
        client(claude).messages.create(
            model="claude", max_tokens=5, messages=[{"role": "user", "content": "x" * limit}]
        )
    assert info.value.status_code == 413
    assert [r.http_status for r in usage_rows(claude.org)] == [413, 413]


def test_a_provider_error_keeps_its_class(claude, mode):
    claude.fake.behaviours[UPSTREAM["claude"]] = Behaviour(
        status=400, error_message="prompt is too long"
    )
    with pytest.raises(anthropic.BadRequestError) as info:
        client(claude).messages.create(model="claude", max_tokens=10, messages=HI)
    assert info.value.body["error"]["type"] == "invalid_request_error"
    if mode == "passthrough":  # (LiteLLM keeps its own words for it)
        assert "prompt is too long" in info.value.body["error"]["message"]
    [row] = usage_rows(claude.org)
    assert (row.status, row.http_status) == ("rejected", 400)


def test_what_chat_cannot_carry_is_refused_for_a_translated_model(claude):
    document = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
    }
    with pytest.raises(anthropic.BadRequestError, match="document"):
        client(claude).messages.create(
            model="chat-small", max_tokens=10, messages=[{"role": "user", "content": [document]}]
        )
    assert claude.fake.requests == []
    client(claude).messages.create(  # an Anthropic deployment takes it as it is
        model="claude", max_tokens=10, messages=[{"role": "user", "content": [document]}]
    )
    assert sent(claude)["body"]["messages"][0]["content"] == [document]


def test_failover_and_fallbacks_apply(claude, mode):
    claude.fake.behaviours["primary-model"] = Behaviour(status=500)
    message = client(claude).messages.with_raw_response.create(
        model="ha-chat", max_tokens=10, messages=HI
    )
    assert message.headers["x-bonito-provider"] == "fake2"
    assert message.parse().content[0].text.startswith("word0")
    [row] = usage_rows(claude.org)
    assert (row.status, row.deployment) == ("success", "fake2/secondary-model")


def test_an_overloaded_anthropic_deployment_fails_over(claude):
    services.gateway_config_set(actor=ACTOR, org=claude.org, fallback_models=["chat-small"])
    refresh_snapshot()
    claude.fake.behaviours[UPSTREAM["claude"]] = Behaviour(status=529, error_message="busy")
    message = client(claude).messages.create(model="claude", max_tokens=10, messages=HI)
    assert message.content[0].text.startswith("word0")
    [row] = usage_rows(claude.org)
    assert (row.status, row.model_used) == ("success", "chat-small")


# ------------------------------------------------------------------ streams: usage exact
def test_a_stream_without_reported_usage_is_counted(claude, mode, model):
    claude.fake.behaviours[UPSTREAM[model]] = Behaviour(stream_chunks=6, report_usage=False)
    with client(claude).messages.stream(model=model, max_tokens=100, messages=HI) as stream:
        assert "".join(stream.text_stream).startswith("word0")
    [row] = usage_rows(claude.org)
    assert row.status == "success"
    assert row.output_tokens >= 6 and row.input_tokens > 0


def test_a_mid_stream_reset_ends_with_an_error_event(claude, model):
    claude.fake.behaviours[UPSTREAM[model]] = Behaviour(stream_chunks=10, reset_after_chunks=3)
    with httpx.stream(
        "POST",
        claude.url + "/v1/messages",
        json={"model": model, "max_tokens": 10, "messages": HI, "stream": True},
        headers={"x-api-key": claude.raw},
        timeout=20,
    ) as response:
        lines = list(response.iter_lines())
    events = [line for line in lines if line.startswith("event:")]
    assert events[-1] == "event: error" and "event: message_stop" not in events
    [row] = usage_rows(claude.org)
    assert (row.status, row.http_status) == ("error", 502)
    assert row.output_tokens >= 1
    assert row.input_tokens > 0  # the prompt was sent: it is billed


def test_a_client_disconnect_records_a_499(claude, mode, model):
    claude.fake.behaviours[UPSTREAM[model]] = Behaviour(stream_chunks=50, chunk_delay=0.1)

    async def read_two_then_leave():
        async with (
            httpx.AsyncClient(timeout=30) as http,
            http.stream(
                "POST",
                claude.url + "/v1/messages",
                json={"model": model, "max_tokens": 100, "messages": HI, "stream": True},
                headers={"x-api-key": claude.raw},
            ) as response,
        ):
            seen = 0
            async for line in response.aiter_lines():
                if line.startswith("event: content_block_delta"):
                    seen += 1
                    if seen == 2:
                        break

    asyncio.run(read_two_then_leave())
    deadline, rows = time.time() + 5, []
    while not rows and time.time() < deadline:
        rows = usage_rows(claude.org)
        time.sleep(0.05)
    [row] = rows
    assert (row.status, row.error_type, row.http_status) == ("error", "client_disconnected", 499)
    assert 2 <= row.output_tokens < 50
    assert row.input_tokens > 0 and row.cost > 0  # the prompt was sent: it is billed


def test_every_request_is_exactly_one_row(claude, mode):
    """Many concurrent requests of every kind: one row each, tokens summing exactly."""
    c = client(claude)

    def one(i):
        model = ("claude", "chat-small")[i % 2]
        if i % 3 == 0:
            with c.messages.stream(model=model, max_tokens=10, messages=HI) as stream:
                return stream.get_final_message().usage.output_tokens
        if i % 3 == 1:
            return c.messages.create(model=model, max_tokens=10, messages=HI).usage.output_tokens
        c.messages.count_tokens(model=model, messages=HI)
        return 0

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outputs = list(pool.map(one, range(30)))
    rows = usage_rows(claude.org)
    assert len(rows) == 30
    assert sum(r.output_tokens for r in rows) == sum(outputs) == 20 * 5
    assert sorted({r.endpoint for r in rows}) == ["count_tokens", "messages"]
    assert len({r.id for r in rows}) == 30


def test_auto_is_smart_routed(claude):
    from gateway.tests.test_smart_routing import EASY, HARD, _between, _tiers

    _tiers(claude)
    services.gateway_config_set(
        actor=ACTOR,
        org=claude.org,
        smart_tiers=["smart-lite", "smart-pro"],
        smart={"thresholds": [_between()]},
    )
    refresh_snapshot()
    c = client(claude)
    used = []
    for text in (EASY, HARD):
        response = c.messages.with_raw_response.create(
            model="auto", max_tokens=10, messages=[{"role": "user", "content": text}]
        )
        assert response.parse().content[0].text.startswith("word0")
        used.append(response.headers["x-bonito-model-used"])
    assert used == ["smart-lite", "smart-pro"]
    rows = usage_rows(claude.org)
    assert [(r.endpoint, r.model_requested, r.route_tier) for r in rows] == [
        ("messages", "auto", "smart-lite"),
        ("messages", "auto", "smart-pro"),
    ]


def _anthropic_sse(*events) -> bytes:
    return b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events
    )


START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 11, "output_tokens": 1},
    },
}
TEXT_START = {
    "type": "content_block_start",
    "index": 0,
    "content_block": {"type": "text", "text": ""},
}
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def test_an_error_event_after_the_answer_began_ends_the_stream(claude):
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "Hel"},
    }
    claude.fake.behaviours[UPSTREAM["claude"]] = Behaviour(
        raw_response=("text/event-stream", _anthropic_sse(START, TEXT_START, delta, OVERLOADED))
    )
    with httpx.stream(
        "POST",
        claude.url + "/v1/messages",
        json={"model": "claude", "max_tokens": 10, "messages": HI, "stream": True},
        headers={"x-api-key": claude.raw},
        timeout=20,
    ) as response:
        assert response.status_code == 200
        lines = list(response.iter_lines())
    assert [x for x in lines if x.startswith("event:")][-1] == "event: error"
    assert '"overloaded_error"' in lines[lines.index("event: error") + 1]
    [row] = usage_rows(claude.org)
    assert (row.status, row.http_status, row.error_type) == ("error", 502, "stream_error")
    assert row.input_tokens == 11 and row.output_tokens >= 1


def test_an_error_event_before_any_output_fails_over(claude):
    services.gateway_config_set(actor=ACTOR, org=claude.org, fallback_models=["chat-small"])
    refresh_snapshot()
    claude.fake.behaviours[UPSTREAM["claude"]] = Behaviour(
        raw_response=("text/event-stream", _anthropic_sse(START, OVERLOADED))
    )
    with client(claude).messages.stream(model="claude", max_tokens=10, messages=HI) as stream:
        assert "".join(stream.text_stream) == "word0 word1 word2 word3 word4"
    [row] = usage_rows(claude.org)
    assert (row.status, row.model_used) == ("success", "chat-small")


def test_the_clients_beta_header_reaches_anthropic(claude):
    client(claude).messages.create(
        model="claude",
        max_tokens=10,
        messages=HI,
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    )
    assert sent(claude)["headers"]["anthropic-beta"] == "prompt-caching-2024-07-31"
    client(claude).messages.create(model="chat-small", max_tokens=10, messages=HI)
    assert "anthropic-beta" not in sent(claude)["headers"]  # a translated call has none
