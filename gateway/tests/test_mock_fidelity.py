"""The built-in mock (the demo org's models) answers as a model would the fields a client
checks first: `n` choices, `max_tokens` (cut, finish_reason "length"), `stop`, and
embeddings' `dimensions` and `encoding_format: base64`. It answered one choice of the
whole text, finish_reason "stop", whatever was asked, and 16 floats always."""

import base64
import struct

import openai
import pytest

from gateway import services
from gateway.tests.conftest import ACTOR, refresh_snapshot, usage_rows


@pytest.fixture
def demo(acme):
    mock = services.provider_save(actor=ACTOR, org=acme.org, name="mocky", kind="mock")
    for name, upstream in (("demo-chat", "mock-chat"), ("demo-embed", "mock-embed")):
        services.deployment_save(
            actor=ACTOR, org=acme.org, model_name=name, provider=mock, upstream_model=upstream
        )
    refresh_snapshot()
    acme.client = openai.OpenAI(base_url=acme.base_url, api_key=acme.raw, max_retries=0)
    return acme


HI = [{"role": "user", "content": "hi"}]


def test_n_choices(demo):
    answer = demo.client.chat.completions.create(model="demo-chat", messages=HI, n=3)
    assert [c.index for c in answer.choices] == [0, 1, 2]
    one = demo.client.chat.completions.create(model="demo-chat", messages=HI)
    assert answer.usage.completion_tokens == 3 * one.usage.completion_tokens
    [first, second] = [r for r in usage_rows(demo.org)]
    assert first.output_tokens == 3 * second.output_tokens
    text = demo.client.completions.create(model="demo-chat", prompt="hi", n=2)
    assert len(text.choices) == 2


def test_max_tokens_cuts_the_answer(demo):
    answer = demo.client.chat.completions.create(model="demo-chat", messages=HI, max_tokens=2)
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].message.content == "Hello from"
    assert answer.usage.completion_tokens == 2
    full = demo.client.chat.completions.create(model="demo-chat", messages=HI, max_tokens=500)
    assert full.choices[0].finish_reason == "stop"
    legacy = demo.client.completions.create(model="demo-chat", prompt="hi", max_tokens=1)
    assert (legacy.choices[0].text, legacy.choices[0].finish_reason) == ("Hello", "length")


def test_stop_sequences(demo):
    answer = demo.client.chat.completions.create(model="demo-chat", messages=HI, stop=["mock"])
    assert answer.choices[0].message.content == "Hello from Bonito's "


@pytest.mark.parametrize("n", [1, 2])
def test_streams_honour_n_and_max_tokens(demo, n):
    chunks = list(
        demo.client.chat.completions.create(
            model="demo-chat",
            messages=HI,
            n=n,
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts, finishes = {}, {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == dict.fromkeys(range(n), "Hello from Bonito's")
    assert finishes == dict.fromkeys(range(n), "length")
    assert chunks[-1].usage.completion_tokens == 3 * n
    [row] = usage_rows(demo.org)
    assert (row.status, row.output_tokens) == ("success", 3 * n)


def test_a_stop_at_the_first_word_streams_an_empty_answer(demo):
    chunks = list(
        demo.client.chat.completions.create(
            model="demo-chat", messages=HI, stop=["Hello"], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_embeddings_dimensions_and_base64(demo):
    default = demo.client.embeddings.create(model="demo-embed", input="hi", encoding_format="float")
    assert len(default.data[0].embedding) == 16
    wide = demo.client.embeddings.create(
        model="demo-embed", input=["hi", "there"], dimensions=64, encoding_format="float"
    )
    assert [len(d.embedding) for d in wide.data] == [64, 64]
    assert wide.data[0].embedding[:16] == default.data[0].embedding  # the same text's
    # The SDK asks for base64 when no format is given, and decodes it.
    decoded = demo.client.embeddings.create(model="demo-embed", input="hi", dimensions=8)
    assert len(decoded.data[0].embedding) == 8
    raw = demo.client.embeddings.with_raw_response.create(
        model="demo-embed", input="hi", encoding_format="base64"
    )
    packed = raw.http_response.json()["data"][0]["embedding"]
    floats = struct.unpack("<16f", base64.b64decode(packed))
    assert [round(f, 6) for f in floats] == default.data[0].embedding
    with pytest.raises(openai.BadRequestError) as info:
        demo.client.embeddings.create(model="demo-embed", input="hi", dimensions=2**31 - 1)
    assert info.value.body["param"] == "dimensions"
    assert len(usage_rows(demo.org)) == 5


TOOLS = [
    {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}},
]


@pytest.mark.parametrize(
    "choice,called",
    [("required", "lookup"), ({"type": "function", "function": {"name": "other"}}, "other")],
)
def test_a_required_or_named_tool_is_called(demo, choice, called):
    answer = demo.client.chat.completions.create(
        model="demo-chat", messages=HI, tools=TOOLS, tool_choice=choice
    )
    [call] = answer.choices[0].message.tool_calls
    assert (call.function.name, call.function.arguments) == (called, "{}")
    assert answer.choices[0].finish_reason == "tool_calls"
    chunks = list(
        demo.client.chat.completions.create(
            model="demo-chat", messages=HI, tools=TOOLS, tool_choice=choice, stream=True
        )
    )
    names = [
        t.function.name
        for c in chunks
        for ch in c.choices
        for t in ch.delta.tool_calls or ()
        if t.function and t.function.name
    ]
    assert names == [called]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    rows = usage_rows(demo.org)
    assert [r.status for r in rows] == ["success", "success"]
    assert all(r.output_tokens > 0 for r in rows)


def test_tool_choice_auto_answers_text(demo):
    answer = demo.client.chat.completions.create(
        model="demo-chat", messages=HI, tools=TOOLS, tool_choice="auto"
    )
    assert answer.choices[0].message.content.startswith("Hello from")


def test_the_anthropic_sdk_gets_a_tool_use_block(demo):
    import httpx

    response = httpx.post(
        demo.url + "/v1/messages",
        headers={"x-api-key": demo.raw, "anthropic-version": "2023-06-01"},
        json={
            "model": "demo-chat",
            "max_tokens": 50,
            "messages": HI,
            "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "lookup"},
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    message = response.json()
    assert message["stop_reason"] == "tool_use"
    assert [(b["type"], b["name"]) for b in message["content"]] == [("tool_use", "lookup")]


def test_json_mode_answers_json(demo):
    import json

    answer = demo.client.chat.completions.create(
        model="demo-chat", messages=HI, response_format={"type": "json_object"}
    )
    assert json.loads(answer.choices[0].message.content)["message"].startswith("Hello")
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "population": {"type": "integer"},
            "capital": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "kind": {"enum": ["town", "city"]},
            "where": {"type": "object", "properties": {"lat": {"type": "number"}}},
        },
        "required": ["city", "population"],
    }
    answer = demo.client.chat.completions.create(
        model="demo-chat",
        messages=HI,
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
    )
    data = json.loads(answer.choices[0].message.content)
    assert data["population"] == 0 and data["capital"] is False and data["tags"] == []
    assert data["kind"] == "town" and data["where"] == {"lat": 0}
    assert isinstance(data["city"], str)
    chunks = list(
        demo.client.chat.completions.create(
            model="demo-chat", messages=HI, response_format={"type": "json_object"}, stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text)["message"].startswith("Hello")


@pytest.mark.parametrize(
    "schema",
    [
        {"type": {}},
        {"type": [{"type": "x"}, None]},
        {"properties": {"a": {"type": []}, "b": {"anyOf": [{"type": {"t": 1}}]}}},
        {"type": "object", "properties": {"deep": {"$ref": "#"}}, "anyOf": "x"},
    ],
)
def test_a_schema_of_any_shape_is_never_a_500(demo, schema):
    answer = demo.client.chat.completions.create(
        model="demo-chat",
        messages=HI,
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
    )
    assert answer.choices[0].message.content


@pytest.mark.parametrize(
    "extra",
    [
        {"n": 2, "max_tokens": 3},
        {"tools": TOOLS, "tool_choice": "required"},
        {"response_format": {"type": "json_object"}, "stop": ["x"]},
    ],
)
def test_the_mocks_answers_are_in_openais_shape(demo, extra):
    import httpx
    import orjson

    from gateway.tests.openai_schema import assert_openai_schema

    def post(**more):
        return httpx.post(
            demo.base_url + "/chat/completions",
            json={"model": "demo-chat", "messages": HI, **extra, **more},
            headers={"Authorization": f"Bearer {demo.raw}"},
            timeout=30,
        )

    assert_openai_schema(post().json(), "CreateChatCompletionResponse")
    streamed = post(stream=True, stream_options={"include_usage": True}).text
    events = [e[6:] for e in streamed.split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        assert_openai_schema(orjson.loads(event), "CreateChatCompletionStreamResponse")
    embedded = httpx.post(
        demo.base_url + "/embeddings",
        json={"model": "demo-embed", "input": ["a"], "dimensions": 4},  # (the spec: floats)
        headers={"Authorization": f"Bearer {demo.raw}"},
        timeout=30,
    )
    assert_openai_schema(embedded.json(), "CreateEmbeddingResponse")
