"""The Responses API on /v1 (issue 18), driven by the official openai SDK against a live
gateway: passed through to a provider that has it (an ``openai`` connection with
pass-through on) and translated to chat completions for the rest, both giving the same
answers, events and usage rows; state only where the upstream keeps it."""

import asyncio
import base64
import contextlib
import time
from dataclasses import replace
from decimal import Decimal

import httpx
import openai
import orjson
import pytest

from gateway import services
from gateway.dataplane import responses_api
from gateway.tests.conftest import ACTOR, openai_provider, refresh_snapshot, usage_rows
from gateway.tests.fake_upstream import Behaviour
from gateway.tests.test_dataplane_memory import acme as memory_org
from gateway.tests.test_dataplane_memory import (
    body_of,
    error_of,
    rig,  # noqa: F401 (the in-memory gateway fixture)
)

WORDS = "word0 word1 word2 word3 word4"
TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]


def client(acme, key=None):
    return openai.OpenAI(base_url=acme.base_url, api_key=key or acme.raw, max_retries=0, timeout=20)


@pytest.fixture
def oai(acme):
    """An ``openai`` connection (it has a Responses API) on the fake upstream, priced."""
    provider = openai_provider(acme)
    services.deployment_save(
        actor=ACTOR,
        org=acme.org,
        model_name="gpt",
        provider=provider,
        upstream_model="gpt-4o-mini",
        input_price_per_mtok=1,
        output_price_per_mtok=2,
    )
    refresh_snapshot()
    return acme


# Each case: the model asked for and whether the fake is asked its Responses API. The
# openai connection is passed through with pass-through on and translated (by LiteLLM)
# with it off; the openai_compatible one is translated on both paths.
@pytest.fixture(params=["gpt", "chat-small"])
def model(request, oai, mode):
    return request.param


def _native(model, mode) -> bool:
    return model == "gpt" and mode == "passthrough"


def _sent(acme):
    """The fake's one request of this call: what the gateway sent upstream."""
    return [r for r in acme.fake.requests if r["endpoint"] in ("chat", "responses")][-1]


def test_text(oai, mode, model):
    response = client(oai).responses.create(model=model, input="hi")
    assert response.output_text == WORDS
    assert response.object == "response" and response.status == "completed"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (11, 5)
    sent = _sent(oai)
    assert sent["endpoint"] == ("responses" if _native(model, mode) else "chat")
    assert sent["body"]["model"] == "gpt-4o-mini"
    if sent["endpoint"] == "chat":
        assert sent["body"]["messages"] == [{"role": "user", "content": "hi"}]
        assert response.id.startswith(responses_api.TRANSLATED_PREFIX)
    else:
        assert sent["body"]["input"] == "hi"
        assert sent["headers"]["Authorization"] == "Bearer sk-fake-openai-credential"
        assert response.id.startswith(responses_api.NATIVE_PREFIX)
    [row] = usage_rows(oai.org)
    assert (row.endpoint, row.status, row.http_status) == ("responses", "success", 200)
    assert (row.model_requested, row.model_used) == (model, model)
    assert (row.input_tokens, row.output_tokens) == (11, 5)
    if model == "gpt":
        assert row.cost == Decimal("0.00002100")  # 11 x 1 + 5 x 2 per million


def test_instructions_and_multi_turn_input(oai, mode, model):
    turns = [
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": [{"type": "input_text", "text": "What is this?"}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "A cat."}],
        },
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "And this?"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
            ],
        },
    ]
    response = client(oai).responses.create(
        model=model,
        instructions="Be brief.",
        input=turns,
        max_output_tokens=50,
        temperature=0.2,
    )
    assert response.output_text == WORDS
    assert response.instructions == "Be brief."
    body = _sent(oai)["body"]
    if _native(model, mode):
        assert (body["instructions"], body["input"]) == ("Be brief.", turns)
        assert body["max_output_tokens"] == 50
        return
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": "A cat."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        },
    ]
    assert body["max_tokens"] == 50 and body["temperature"] == 0.2


EVENT_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def _squeeze(types):
    """The event types with runs of the same one made one (the deltas)."""
    return [t for i, t in enumerate(types) if i == 0 or types[i - 1] != t]


def test_streaming_sends_the_typed_events_in_order(oai, mode, model):
    events = list(client(oai).responses.create(model=model, input="hi", stream=True))
    assert _squeeze([e.type for e in events]) == EVENT_ORDER
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == WORDS
    [done] = [e for e in events if e.type == "response.output_text.done"]
    assert done.text == WORDS
    completed = events[-1].response
    assert completed.output_text == WORDS and completed.status == "completed"
    assert (completed.usage.input_tokens, completed.usage.output_tokens) == (11, 5)
    assert events[0].response.id == completed.id
    [row] = usage_rows(oai.org)
    assert (row.endpoint, row.status, row.input_tokens, row.output_tokens) == (
        "responses",
        "success",
        11,
        5,
    )
    assert row.ttft_ms is not None
    if not _native(model, mode):  # the gateway asked the chat upstream for usage
        assert _sent(oai)["body"]["stream_options"] == {"include_usage": True}


def test_the_sdk_stream_helper_assembles_the_final_response(oai, mode, model):
    with client(oai).responses.stream(model=model, input="hi") as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == WORDS and final.output_text == WORDS
    assert len(usage_rows(oai.org)) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_function_tools_round_trip(oai, mode, model, stream):
    c = client(oai)
    first = c.responses.create(model=model, input="Weather in Paris?", tools=TOOLS, stream=stream)
    if stream:
        events = list(first)
        types = [e.type for e in events]
        assert "response.function_call_arguments.delta" in types
        [args_done] = [e for e in events if e.type == "response.function_call_arguments.done"]
        assert args_done.arguments == '{"city": "Paris"}'
        first = events[-1].response
    [call] = first.output
    assert (call.type, call.name, call.arguments) == (
        "function_call",
        "get_weather",
        '{"city": "Paris"}',
    )
    sent = _sent(oai)["body"]
    if not _native(model, mode):
        assert sent["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "The weather in a city.",
                    "parameters": TOOLS[0]["parameters"],
                },
            }
        ]
    second = c.responses.create(
        model=model,
        tools=TOOLS,
        tool_choice="auto",
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"},
        ],
    )
    assert second.output_text == WORDS
    sent = _sent(oai)["body"]
    if not _native(model, mode):
        assert sent["messages"][1].get("content") is None  # (LiteLLM leaves out a null)
        sent["messages"][1].pop("content", None)
        assert sent["messages"][1:] == [
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": call.call_id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.call_id, "content": "sunny, 21C"},
        ]
    assert [r.status for r in usage_rows(oai.org)] == ["success", "success"]


def test_json_schema_output_becomes_chats_response_format(oai):
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    client(oai).responses.create(
        model="chat-small",
        input="json please",
        text={"format": {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}},
    )
    assert _sent(oai)["body"]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema, "strict": True},
    }


# ------------------------------------------------------------------ state
def test_previous_response_id_retrieve_input_items_and_delete_where_the_upstream_keeps_them(
    oai, gw
):
    c = client(oai)
    first = c.responses.create(model="gpt", input="My name is Ann.")
    second = c.responses.create(
        model="gpt", input="What is my name?", previous_response_id=first.id
    )
    upstream_first = responses_api.unwrap_id(first.id)[2]
    assert _sent(oai)["body"]["previous_response_id"] == upstream_first  # the upstream's id
    assert second.output_text == WORDS + " turn2"  # the fake saw the kept first turn
    assert second.previous_response_id == first.id  # ours, never the upstream's

    kept = c.responses.retrieve(first.id)
    assert (kept.id, kept.output_text) == (first.id, WORDS)
    items = c.responses.input_items.list(second.id)
    assert [i.content[0].text for i in items.data] == ["What is my name?", WORDS, "My name is Ann."]
    c.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(first.id)
    rows = usage_rows(oai.org)
    assert [(r.endpoint, r.http_status) for r in rows] == [
        ("responses", 200),
        ("responses", 200),
        ("responses.get", 200),
        ("responses.input_items", 200),
        ("responses.delete", 200),
        ("responses.get", 404),
    ]
    assert {r.model_requested for r in rows} == {"gpt"}


def test_store_false_is_passed_on_and_nothing_is_kept(oai, gw):
    c = client(oai)
    response = c.responses.create(model="gpt", input="secret", store=False)
    assert _sent(oai)["body"]["store"] is False
    assert oai.fake.responses == {}
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(response.id)


def test_translated_responses_are_not_stored_and_say_so(oai, mode):
    c = client(oai)
    first = c.responses.create(model="chat-small", input="hi")
    assert first.id.startswith(responses_api.TRANSLATED_PREFIX) and first.store is False
    with pytest.raises(openai.BadRequestError) as info:
        c.responses.create(model="chat-small", input="again", previous_response_id=first.id)
    assert info.value.body["param"] == "previous_response_id"
    assert "not stored" in info.value.body["message"]
    for call in (
        lambda: c.responses.retrieve(first.id),
        lambda: c.responses.delete(first.id),
        lambda: c.responses.input_items.list(first.id),
    ):
        with pytest.raises(openai.NotFoundError) as info:
            call()
        assert "not stored" in info.value.body["message"]
    assert len([r for r in oai.fake.requests if r["endpoint"] != "chat"]) == 0


def test_a_previous_response_on_another_provider_is_a_clear_400(oai, gw):
    c = client(oai)
    first = c.responses.create(model="gpt", input="hi")
    with pytest.raises(openai.BadRequestError) as info:
        c.responses.create(model="chat-small", input="more", previous_response_id=first.id)
    assert "'oai'" in info.value.body["message"]


def test_another_orgs_response_id_is_not_found(oai, gw, org_b, charlie):
    """Org B on the same upstream with the same credential (so the upstream itself would
    answer): its key still finds nothing of org A's."""
    provider = services.provider_save(
        actor=ACTOR,
        org=org_b,
        name="oai",
        kind="openai",
        api_base=oai.fake.url,
        credentials={"api_key": "sk-fake-openai-credential"},
    )
    services.deployment_save(
        actor=ACTOR, org=org_b, model_name="gpt", provider=provider, upstream_model="gpt-4o-mini"
    )
    _key, raw_b = services.api_key_create(actor=ACTOR, org=org_b, name="b")
    refresh_snapshot()
    mine = client(oai).responses.create(model="gpt", input="org A's secret")
    theirs = client(oai, raw_b)
    asked = len(oai.fake.requests)
    for call in (
        lambda: theirs.responses.retrieve(mine.id),
        lambda: theirs.responses.delete(mine.id),
        lambda: theirs.responses.input_items.list(mine.id),
        lambda: theirs.responses.create(model="gpt", input="?", previous_response_id=mine.id),
    ):
        with pytest.raises(openai.NotFoundError) as info:
            call()
        assert "org A" not in str(info.value.body)
    assert len(oai.fake.requests) == asked  # never asked upstream
    # A forged id naming org A's org and deployment is refused the same way.
    org_a_id, dep_id, upstream = responses_api.unwrap_id(mine.id)
    assert org_a_id == oai.org.id
    with pytest.raises(openai.NotFoundError):
        theirs.responses.retrieve(responses_api.wrap_id(org_b.id, dep_id, upstream))
    assert client(oai).responses.retrieve(mine.id).output_text == WORDS
    assert [r.http_status for r in usage_rows(org_b)] == [404] * 5


@pytest.mark.parametrize(
    "rid",
    [
        "resp_unknown",
        responses_api.NATIVE_PREFIX,
        responses_api.NATIVE_PREFIX + "!!!not-base64",
        responses_api.NATIVE_PREFIX + base64.urlsafe_b64encode(b'{"a": 1}').decode(),
        responses_api.NATIVE_PREFIX + base64.urlsafe_b64encode(b"[1, 2]").decode(),
        responses_api.NATIVE_PREFIX + "A" * 600,
        "resp_" + "é" * 20,
    ],
)
def test_garbage_response_ids_are_not_found(oai, rid):
    with pytest.raises(openai.NotFoundError):
        client(oai).responses.retrieve(rid)
    with pytest.raises(openai.NotFoundError):
        client(oai).responses.create(model="gpt", input="x", previous_response_id=rid)


def _forged(oai, upstream_id: str) -> str:
    """A resp_bn_ id of this org and its gpt deployment naming ``upstream_id``."""
    from gateway.models import Deployment

    dep = Deployment.objects.get(org=oai.org, model_name="gpt")
    return responses_api.wrap_id(oai.org.id, dep.id, upstream_id)


@pytest.mark.parametrize(
    "upstream_id",
    [
        ".",
        "..",
        "a/b",
        "../models",
        "x?limit=1",
        "x#y",
        "%2f",
        "a%2F..",
        "a b",
        "a.b",
        "é",
        "x" * 201,
        "resp\n1",
    ],
)
def test_forged_ids_naming_other_paths_are_not_found_and_call_nobody(oai, gw, upstream_id):
    rid = _forged(oai, upstream_id)
    c = client(oai)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(rid)
    with pytest.raises(openai.NotFoundError):
        c.responses.delete(rid)
    with pytest.raises(openai.NotFoundError):
        c.responses.input_items.list(rid)
    with pytest.raises(openai.NotFoundError):
        c.responses.create(model="gpt", input="x", previous_response_id=rid)
    assert oai.fake.requests == []
    assert responses_api.unwrap_id(_forged(oai, "resp_abc-123_X")) is not None  # plain: fine


def test_stored_response_calls_take_from_the_rate_limits(oai, gw):
    """GET, DELETE and input_items call the provider: each takes one request from the
    key's rpm bucket, and past it is refused (429, OpenAI's shape) with no upstream call."""
    _k, slow = services.api_key_create(actor=ACTOR, org=oai.org, name="slow", rpm_limit=2)
    refresh_snapshot()
    c = client(oai, slow)
    first = c.responses.create(model="gpt", input="hi")
    c.responses.retrieve(first.id)
    calls = [
        lambda: c.responses.retrieve(first.id),
        lambda: c.responses.input_items.list(first.id),
        lambda: c.responses.delete(first.id),
    ]
    before = len(oai.fake.requests)
    for call in calls:
        with pytest.raises(openai.RateLimitError) as info:
            call()
        assert info.value.body["code"] == "rate_limit_exceeded"
        assert int(info.value.response.headers["retry-after"]) >= 1
    assert len(oai.fake.requests) == before
    rows = usage_rows(oai.org)
    assert [(r.endpoint, r.http_status) for r in rows] == [
        ("responses", 200),
        ("responses.get", 200),
        ("responses.get", 429),
        ("responses.input_items", 429),
        ("responses.delete", 429),
    ]


# ------------------------------------------------------------------ errors
def test_sdk_errors(oai, mode):
    with pytest.raises(openai.AuthenticationError):
        client(oai, "bn-wrong").responses.create(model="gpt", input="hi")
    with pytest.raises(openai.BadRequestError) as info:
        client(oai).responses.create(model="gpt", input="hi", temperature=5)
    assert info.value.body["param"] == "temperature"
    with pytest.raises(openai.NotFoundError):
        client(oai).responses.create(model="no-such-model", input="hi")
    rows = usage_rows(oai.org)
    assert [(r.status, r.http_status) for r in rows] == [("rejected", 400), ("rejected", 404)]


# (web_search is priced per call from LiteLLM's map: test_context_pricing.py)
BUILT_IN_TOOLS = [
    {"type": "file_search", "vector_store_ids": ["vs_1"]},
    {"type": "code_interpreter", "container": {"type": "auto"}},
    {"type": "image_generation"},
    {"type": "computer_use_preview", "display_width": 800, "display_height": 600},
    {"type": "mcp", "server_label": "x", "server_url": "https://mcp.example"},
    {"type": "local_shell"},
]


@pytest.mark.parametrize("tool", BUILT_IN_TOOLS, ids=lambda t: t["type"])
def test_built_in_tools_with_per_call_fees_are_a_clear_400_on_every_path(oai, mode, tool):
    """OpenAI charges per call for its built-in tools, a fee Bonito cannot price: refused on
    every path (pass-through included), never served unmetered; no upstream call."""
    c = client(oai)
    for model in ("chat-small", "gpt"):
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as info:
                c.responses.create(
                    model=model, input="news?", tools=[TOOLS[0], tool], stream=stream
                )
            assert info.value.body["param"] == "tools[1].type"
            assert tool["type"] in info.value.body["message"]
            assert "per call" in info.value.body["message"]
    assert oai.fake.requests == []
    rows = usage_rows(oai.org)
    assert [(r.status, r.http_status) for r in rows] == [("rejected", 400)] * 4


@pytest.mark.parametrize("stream", [False, True])
def test_background_is_refused_on_every_path(oai, mode, model, stream):
    """A background response is billed by the provider when it runs, after the request
    (OpenAI answers it queued, with no usage): it would be unmetered, so it is refused."""
    with pytest.raises(openai.BadRequestError) as info:
        client(oai).responses.create(model=model, input="hi", background=True, stream=stream)
    assert info.value.body["param"] == "background"
    assert "meter" in info.value.body["message"]
    assert oai.fake.requests == []
    [row] = usage_rows(oai.org)
    assert (row.endpoint, row.status, row.http_status) == ("responses", "rejected", 400)
    client(oai).responses.create(model=model, input="hi", background=False)  # false is fine


def _post(acme, raw, path="/responses", **kw):
    return httpx.post(
        acme.base_url + path,
        content=raw,
        headers={"Authorization": f"Bearer {acme.raw}", "Content-Type": "application/json"},
        timeout=20,
        **kw,
    )


BAD_BODIES = [
    (b"", None),
    (b"not json", None),
    (b"[1, 2]", None),
    (b'{"input": "hi"}', "model"),
    (b'{"model": "gpt"}', "input"),
    (b'{"model": "gpt", "input": 123}', "input"),
    (b'{"model": "gpt", "input": [1]}', "input[0]"),
    (b'{"model": "gpt", "input": [{"content": "x"}]}', "input[0].role"),
    (b'{"model": "gpt", "input": [{"role": "wizard", "content": "x"}]}', "input[0].role"),
    (b'{"model": "gpt", "input": [{"role": "user"}]}', "input[0].content"),
    (b'{"model": "gpt", "input": [{"role": "user", "content": 5}]}', "input[0].content"),
    (b'{"model": "gpt", "input": [{"role": "user", "content": [{}]}]}', "input[0].content[0].type"),
    (
        b'{"model": "gpt", "input": [{"type": "function_call_output", "output": "x"}]}',
        "input[0].call_id",
    ),
    (b'{"model": "gpt", "input": [{"type": "function_call", "call_id": "c"}]}', "input[0].name"),
    (b'{"model": "gpt", "input": "x", "instructions": 1}', "instructions"),
    (b'{"model": "gpt", "input": "x", "max_output_tokens": 0}', "max_output_tokens"),
    (b'{"model": "gpt", "input": "x", "max_output_tokens": true}', "max_output_tokens"),
    (b'{"model": "gpt", "input": "x", "temperature": "hot"}', "temperature"),
    (b'{"model": "gpt", "input": "x", "stream": "yes"}', "stream"),
    (b'{"model": "gpt", "input": "x", "tools": {}}', "tools"),
    (b'{"model": "gpt", "input": "x", "tools": [{"type": "function"}]}', "tools[0].name"),
    (b'{"model": "gpt", "input": "x", "tool_choice": 3}', "tool_choice"),
    (b'{"model": "gpt", "input": "x", "text": "json"}', "text"),
    (b'{"model": "gpt", "input": "x", "text": {"format": {"type": "xml"}}}', "text.format.type"),
    (
        b'{"model": "gpt", "input": "x", "text": {"format": {"type": "json_schema", "name": "a"}}}',
        "text.format.schema",
    ),
    (b'{"model": "gpt", "input": "x", "previous_response_id": 7}', "previous_response_id"),
    (b'{"model": "gpt", "input": "x", "api_base": "http://evil"}', "api_base"),
    (b'{"model": "gpt", "input": "x", "truncation": "some"}', "truncation"),
]


@pytest.mark.parametrize(("raw", "param"), BAD_BODIES)
def test_malformed_bodies_are_openai_shaped_400s(oai, raw, param):
    response = _post(oai, raw)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"]
    assert oai.fake.requests == []
    [row] = usage_rows(oai.org)
    assert (row.endpoint, row.status, row.http_status) == ("responses", "rejected", 400)


def test_translation_refusals_name_the_field(oai, mode):
    cases = [
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]}, "input[0].content[0]"),
        ({"input": "x", "tool_choice": {"type": "web_search"}}, "tool_choice"),
        ({"input": "x", "background": True}, "background"),
        ({"input": []}, "input"),
    ]
    for extra, param in cases:
        response = _post(oai, orjson.dumps({"model": "chat-small", **extra}))
        assert response.status_code == 400, (extra, response.text)
        assert response.json()["error"]["param"] == param
    assert oai.fake.requests == []


def test_oversized_deep_and_wrong_method_requests_never_500(oai, settings):
    from gateway import runtime

    limit = runtime.gateway().max_body_bytes
    big = b'{"model": "gpt", "input": "' + b"x" * (limit + 1) + b'"}'
    response = _post(oai, big)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    deep = b'{"model": "gpt", "input": "x", "metadata": ' + b'{"a": ' * 100 + b"1" + b"}" * 101
    assert _post(oai, deep).status_code == 400
    headers = {"Authorization": f"Bearer {oai.raw}"}
    wrong = [
        ("GET", "/responses", 405),
        ("PUT", "/responses/resp_x", 405),
        ("POST", "/responses/resp_x/input_items", 405),
        ("GET", "/responses/resp_x/unknown", 404),
        ("GET", "/responses/", 405),  # /v1/responses with a trailing slash: a POST route
    ]
    for method, path, status in wrong:
        response = httpx.request(method, oai.base_url + path, headers=headers, timeout=20)
        assert response.status_code == status, (method, path)
        assert response.json()["error"]["message"]


def test_an_upstream_failure_is_an_error_row_and_fallback_still_works(oai, mode):
    oai.fake.behaviours["gpt-4o-mini"] = Behaviour(status=500)
    with pytest.raises(openai.InternalServerError):
        client(oai).responses.create(model="chat-small", input="hi")
    # ha-chat: its primary fails, its secondary answers.
    oai.fake.behaviours["primary-model"] = Behaviour(status=503)
    assert client(oai).responses.create(model="ha-chat", input="hi").output_text == WORDS
    failed, fell_over = usage_rows(oai.org)
    assert (failed.status, failed.http_status, failed.error_type) == (
        "error",
        502,
        "upstream_error",
    )
    assert (fell_over.status, fell_over.model_used) == ("success", "ha-chat")
    assert _sent(oai)["body"]["model"] == "secondary-model"


def test_an_upstream_400_is_passed_on(oai, gw):
    oai.fake.behaviours["gpt-4o-mini"] = Behaviour(status=400, error_message="bad thing")
    with pytest.raises(openai.BadRequestError) as info:
        client(oai).responses.create(model="gpt", input="hi")
    assert info.value.body["message"] == "bad thing"
    [row] = usage_rows(oai.org)
    assert (row.status, row.http_status) == ("rejected", 400)


# ------------------------------------------------------------------ limits and routing
def test_key_limits_scopes_and_budgets_apply(oai, gw):
    _k, narrow = services.api_key_create(
        actor=ACTOR, org=oai.org, name="narrow", allowed_models=["chat-small"]
    )
    _k, slow = services.api_key_create(actor=ACTOR, org=oai.org, name="slow", rpm_limit=1)
    refresh_snapshot()
    with pytest.raises(openai.PermissionDeniedError):
        client(oai, narrow).responses.create(model="gpt", input="hi")
    assert client(oai, narrow).responses.create(model="chat-small", input="hi").output_text
    client(oai, slow).responses.create(model="gpt", input="hi")
    with pytest.raises(openai.RateLimitError):
        client(oai, slow).responses.create(model="gpt", input="hi", stream=True)
    rows = usage_rows(oai.org)
    assert [(r.status, r.http_status) for r in rows] == [
        ("rejected", 403),
        ("success", 200),
        ("success", 200),
        ("rejected", 429),
    ]


def test_smart_routing_picks_a_tier_for_a_responses_request(oai, gw):
    from gateway.tests.test_smart_routing import EASY, HARD, _between, _tiers

    _tiers(oai)
    services.gateway_config_set(
        actor=ACTOR,
        org=oai.org,
        smart_tiers=["smart-lite", "smart-pro"],
        smart={"thresholds": [_between()]},
        auto_model_alias="auto",
    )
    refresh_snapshot()
    c = client(oai)
    easy = c.responses.with_raw_response.create(model="auto", input=EASY)
    hard = c.responses.with_raw_response.create(
        model="auto", input=[{"role": "user", "content": HARD}]
    )
    assert easy.headers["x-bonito-model-used"] == "smart-lite"
    assert hard.headers["x-bonito-model-used"] == "smart-pro"
    rows = usage_rows(oai.org)
    assert {(r.endpoint, r.route_tier) for r in rows} == {
        ("responses", "smart-lite"),
        ("responses", "smart-pro"),
    }


# ------------------------------------------------------------------ usage exactness
def test_every_request_with_a_valid_key_is_exactly_one_row(oai, mode):
    c = client(oai)
    calls = [
        lambda: c.responses.create(model="gpt", input="a"),
        lambda: list(c.responses.create(model="chat-small", input="b", stream=True)),
        lambda: c.responses.create(model="gpt", input="c", tools=TOOLS),
        lambda: c.responses.create(model="nope", input="d"),
        lambda: c.responses.create(model="gpt", input="e", top_p=9),
        lambda: c.responses.retrieve("resp_nothing"),
        lambda: list(c.responses.create(model="gpt", input="f", stream=True)),
    ]
    for call in calls * 3:
        with contextlib.suppress(openai.APIStatusError):
            call()
    rows = usage_rows(oai.org)
    assert len(rows) == len(calls) * 3
    assert len({r.request_id for r in rows}) == len(rows)
    ok = [r for r in rows if r.status == "success"]
    assert len(ok) == 4 * 3 and all(r.input_tokens == 11 for r in ok)


def test_usage_is_counted_when_the_upstream_reports_none(oai, mode, model):
    oai.fake.behaviours["gpt-4o-mini"] = Behaviour(report_usage=False)
    client(oai).responses.create(model=model, input="count me please")
    list(client(oai).responses.create(model=model, input="count me please", stream=True))
    rows = usage_rows(oai.org)
    assert len(rows) == 2
    for row in rows:
        assert row.status == "success" and row.input_tokens > 0 and row.output_tokens >= 5


PASS_THROUGH_ONLY_INPUTS = [
    # (instructions, input): what only a Responses API carries, so no chat translation
    (
        None,
        [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "count me " * 60},
                    {"type": "input_file", "file_id": "file_1"},
                ],
            }
        ],
    ),
    ("count me " * 60, [{"type": "item_reference", "id": "msg_1"}]),
    (
        None,
        [{"role": "user", "content": "count me " * 60}, {"type": "item_reference", "id": "msg_1"}],
    ),
]


@pytest.mark.parametrize(("instructions", "items"), PASS_THROUGH_ONLY_INPUTS)
@pytest.mark.parametrize("stream", [False, True])
def test_a_pass_through_answer_without_usage_counts_the_native_input(
    oai, gw, instructions, items, stream
):
    """No usage from the provider: the prompt is counted from the Responses body itself
    (input, instructions) when the request has no chat translation, never billed zero."""
    oai.fake.behaviours["gpt-4o-mini"] = Behaviour(report_usage=False)
    extra = {"instructions": instructions} if instructions else {}
    response = client(oai).responses.create(model="gpt", input=items, stream=stream, **extra)
    if stream:
        list(response)
    [row] = usage_rows(oai.org)
    assert row.status == "success"
    assert row.input_tokens >= 120  # "count me " x 60: at least its 120 tokens
    assert row.output_tokens >= 5 and row.cost > 0


@pytest.mark.parametrize("model", ["gpt", "chat-small"])
def test_a_client_disconnect_mid_stream_is_a_499_row(oai, gw, model):
    oai.fake.behaviours["gpt-4o-mini"] = Behaviour(stream_chunks=50, chunk_delay=0.1)

    async def read_some_then_leave():
        async with (
            httpx.AsyncClient(timeout=30) as http,
            http.stream(
                "POST",
                oai.base_url + "/responses",
                json={"model": model, "input": "hi", "stream": True},
                headers={"Authorization": f"Bearer {oai.raw}"},
            ) as response,
        ):
            deltas = 0
            async for line in response.aiter_lines():
                if "output_text.delta" in line and line.startswith("data:"):
                    deltas += 1
                    if deltas == 2:
                        break

    asyncio.run(read_some_then_leave())
    deadline = time.time() + 5
    rows = []
    while not rows and time.time() < deadline:
        rows = usage_rows(oai.org)
        time.sleep(0.05)
    [row] = rows
    assert (row.status, row.error_type, row.http_status) == ("error", "client_disconnected", 499)
    assert row.endpoint == "responses" and 2 <= row.output_tokens < 50
    deadline = time.time() + 5
    while oai.fake.cancelled_streams == 0 and time.time() < deadline:
        time.sleep(0.05)
    assert oai.fake.cancelled_streams == 1  # the upstream call was cancelled


@pytest.mark.parametrize("model", ["gpt", "chat-small"])
def test_a_stream_that_breaks_mid_way_is_an_error_event_and_an_error_row(oai, gw, model):
    oai.fake.behaviours["gpt-4o-mini"] = Behaviour(stream_chunks=20, reset_after_chunks=3)
    with httpx.stream(
        "POST",
        oai.base_url + "/responses",
        json={"model": model, "input": "hi", "stream": True},
        headers={"Authorization": f"Bearer {oai.raw}"},
        timeout=20,
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    last = orjson.loads(lines[-1][5:])
    assert (last["type"], last["code"]) == ("error", "stream_broken")
    [row] = usage_rows(oai.org)
    assert (row.status, row.error_type, row.http_status) == ("error", "stream_broken", 502)
    assert row.output_tokens >= 3


# ------------------------------------------------------------------ money, without a database


async def test_the_spend_cap_holds_for_responses_streamed_or_not(rig):  # noqa: F811
    # Each request costs 0.4 (11 x 0.02 + 5 x 0.036): after three the month's spend (1.2)
    # is past the cap of 1.0, whether the answers were streamed or not.
    org = memory_org(spend_cap=1.0)
    dep = replace(org.deployments["chat"][0], input_cost=0.02, output_cost=0.036)
    rig.publish(replace(org, deployments={**org.deployments, "chat": (dep,)}))
    statuses = []
    for stream in (False, True, False, True):
        body = {"model": "chat", "input": "hello", "max_output_tokens": 5, "stream": stream}
        out = await rig.send(body, endpoint="responses")
        statuses.append(out.status)
        if out.status == 200:
            await body_of(out)  # a stream's cost is settled when it ends
    assert statuses == [200, 200, 200, 429]
    assert error_of(out)["code"] == "spend_cap_exceeded"
    records = rig.records()
    assert [r["endpoint"] for r in records] == ["responses"] * 4
    assert sum(r["cost"] for r in records) == pytest.approx(1.2)


def test_a_failed_responses_answer_does_not_carry_the_provider_account(oai, gw):
    """A 200 whose response failed (background mode, a stored one) carries the provider's
    error words: less the account's ids, as any provider error (docs/gateway.md)."""
    org_id = "org-" + "Zq8" * 8
    failed = {
        "id": "resp_failed1",
        "object": "response",
        "status": "failed",
        "model": "gpt-4o-mini",
        "output": [],
        "error": {
            "code": "rate_limit_exceeded",
            "message": f"Rate limit reached for gpt-4o-mini in organization {org_id} on tokens.",
        },
        "usage": {"input_tokens": 3, "output_tokens": 0, "total_tokens": 3},
    }
    oai.fake.behaviours["gpt-4o-mini"] = Behaviour(
        raw_response=("application/json", orjson.dumps(failed))
    )
    gw.upstreams.passthrough = True
    response = httpx.post(
        oai.base_url + "/responses",
        json={"model": "gpt", "input": "hi"},
        headers={"Authorization": f"Bearer {oai.raw}"},
        timeout=20,
    )
    assert org_id not in response.text
    assert response.json()["error"]["message"] == (
        "Rate limit reached for gpt-4o-mini in organization [account] on tokens."
    )
