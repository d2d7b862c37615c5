"""Every /v1 body validates against OpenAI's published OpenAPI spec, on both provider paths
(pass-through and LiteLLM): completions, chat (text and tool calls), embeddings, models,
stream chunks, and every error, so typed clients that validate responses work unchanged."""

import httpx
import orjson
import pytest

from gateway.tests.conftest import usage_rows
from gateway.tests.fake_upstream import Behaviour
from gateway.tests.openai_schema import assert_openai_schema, openai_schema_errors

CHAT = {"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
REQUESTS = {
    "chat": ("chat/completions", CHAT, "CreateChatCompletionResponse"),
    "chat_tools": ("chat/completions", {**CHAT, "tools": TOOLS}, "CreateChatCompletionResponse"),
    "chat_max_tokens": (
        "chat/completions",
        {**CHAT, "max_tokens": 5, "temperature": 0},
        "CreateChatCompletionResponse",
    ),
    "completions": (
        "completions",
        {"model": "chat-small", "prompt": "Say hi"},
        "CreateCompletionResponse",
    ),
    "embeddings": (
        "embeddings",
        {"model": "embed-small", "input": ["a", "b"]},
        "CreateEmbeddingResponse",
    ),
    "embedding_one": (
        "embeddings",
        {"model": "embed-small", "input": "a"},
        "CreateEmbeddingResponse",
    ),
}
STREAMS = {
    "chat": ("chat/completions", CHAT, "CreateChatCompletionStreamResponse"),
    "chat_usage": (
        "chat/completions",
        {**CHAT, "stream_options": {"include_usage": True}},
        "CreateChatCompletionStreamResponse",
    ),
    "chat_tools": (
        "chat/completions",
        {**CHAT, "tools": TOOLS},
        "CreateChatCompletionStreamResponse",
    ),
    # A completions stream's chunks are CreateCompletionResponse objects (OpenAI's spec).
    "completions": (
        "completions",
        {"model": "chat-small", "prompt": "Say hi"},
        "CreateCompletionResponse",
    ),
}


def _post(acme, path, body):
    return httpx.post(
        f"{acme.base_url}/{path}",
        json=body,
        headers={"Authorization": f"Bearer {acme.raw}"},
        timeout=60,
    )


@pytest.mark.parametrize("case", REQUESTS)
def test_every_response_validates(acme, mode, case):
    path, body, schema = REQUESTS[case]
    response = _post(acme, path, body)
    assert response.status_code == 200, response.text
    assert_openai_schema(response.json(), schema)
    assert len(usage_rows(acme.org)) == 1


def _events(acme, path, body):
    with httpx.stream(
        "POST",
        f"{acme.base_url}/{path}",
        json={**body, "stream": True},
        headers={"Authorization": f"Bearer {acme.raw}"},
        timeout=60,
    ) as response:
        assert response.status_code == 200
        raw = b"".join(response.iter_bytes())
    events = [e for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    return [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-1]]


@pytest.mark.parametrize("case", STREAMS)
def test_every_stream_chunk_validates(acme, mode, case):
    path, body, schema = STREAMS[case]
    chunks = _events(acme, path, body)
    assert len(chunks) >= 2
    for chunk in chunks:
        if path == "completions":
            # The spec has no chunk schema for completions: a chunk is a
            # CreateCompletionResponse whose finish_reason is null until the last (as
            # OpenAI's own stream sends it), and a usage chunk has no choices.
            chunk = {
                **chunk,
                "choices": [
                    {**c, "finish_reason": c["finish_reason"] or "stop"} for c in chunk["choices"]
                ],
            }
        assert_openai_schema(chunk, schema)
    finishes = [c["finish_reason"] for chunk in chunks for c in chunk["choices"]]
    assert finishes[-1] in ("stop", "tool_calls", "length")
    has_usage = [chunk for chunk in chunks if chunk.get("usage")]
    if "stream_options" in body:
        assert len(has_usage) == 1 and has_usage[0]["choices"] == []
    assert len(usage_rows(acme.org)) == 1


def test_models_validate(acme, mode):
    headers = {"Authorization": f"Bearer {acme.raw}"}
    listed = httpx.get(acme.base_url + "/models", headers=headers, timeout=30)
    assert_openai_schema(listed.json(), "ListModelsResponse")
    one = httpx.get(acme.base_url + "/models/chat-small", headers=headers, timeout=30)
    assert_openai_schema(one.json(), "Model")


ERRORS = [
    # (what, method, path, body, headers, status)
    ("no key", "POST", "chat/completions", CHAT, {}, 401),
    ("bad json", "POST", "chat/completions", b"{", None, 400),
    ("unknown model", "POST", "chat/completions", {**CHAT, "model": "nope"}, None, 404),
    ("unknown path", "GET", "nope", None, None, 404),
    ("wrong method", "GET", "chat/completions", None, None, 405),
    ("unknown model card", "GET", "models/nope", None, None, 404),
    ("bad parameter", "POST", "chat/completions", {**CHAT, "n": -1}, None, 400),
    ("bad encoding", "POST", "chat/completions", CHAT, {"Content-Encoding": "br"}, 415),
]


@pytest.mark.parametrize("case", ERRORS, ids=[e[0] for e in ERRORS])
def test_every_gateway_error_validates(acme, case):
    _what, method, path, body, headers, status = case
    if headers is None or "Authorization" not in headers and status != 401:
        headers = {"Authorization": f"Bearer {acme.raw}", **(headers or {})}
    content = body if isinstance(body, bytes) else orjson.dumps(body) if body else None
    response = httpx.request(
        method, f"{acme.base_url}/{path}", content=content, headers=headers, timeout=30
    )
    assert response.status_code == status, response.text
    assert_openai_schema(response.json(), "ErrorResponse")


@pytest.mark.parametrize("status", [400, 429, 500])
def test_provider_errors_validate_on_both_paths(acme, mode, status):
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(status=status, error_code="boom")
    response = _post(acme, "chat/completions", CHAT)
    assert response.status_code >= 400
    assert_openai_schema(response.json(), "ErrorResponse")


def test_the_helper_catches_what_openai_does_not_send():
    """The checker itself: the departures from the spec LiteLLM's bodies had."""
    good = {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi", "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
    }
    assert openai_schema_errors(good, "CreateChatCompletionResponse") == []
    message = good["choices"][0]["message"]
    for broken in (
        {**good, "choices": [{**good["choices"][0], "logprobs": "x"}]},
        {**good, "choices": [{k: v for k, v in good["choices"][0].items() if k != "logprobs"}]},
        {**good, "choices": [{**good["choices"][0], "message": {**message, "extra": 1}}]},
        {**good, "choices": [{**good["choices"][0], "message": {"role": "assistant"}}]},
        {**good, "object": "chat.completion.chunk"},
    ):
        assert openai_schema_errors(broken, "CreateChatCompletionResponse")
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "x"}}],
    }
    assert openai_schema_errors(chunk, "CreateChatCompletionStreamResponse")  # no finish_reason
    chunk["choices"][0]["finish_reason"] = None
    assert openai_schema_errors(chunk, "CreateChatCompletionStreamResponse") == []
