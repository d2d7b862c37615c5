"""The Messages API's checks and translation driven with generated input (hypothesis):
whatever a client sends is either a 400 naming what is wrong or a request that translates
to a chat completion; whatever a chat upstream streams translates to well-formed events."""

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dataplane import anthropic_api
from gateway.dataplane.errors import GatewayError

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)
TEXT = st.text(max_size=20)
SOURCE = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("base64"), "media_type": st.just("image/png"), "data": TEXT}
    ),
    st.fixed_dictionaries({"type": st.just("url"), "url": TEXT}),
    JSON,
)
BLOCK = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}),
    st.fixed_dictionaries({"type": st.just("image"), "source": SOURCE}),
    st.fixed_dictionaries({"type": st.just("tool_use"), "id": TEXT, "name": TEXT, "input": JSON}),
    st.fixed_dictionaries(
        {"type": st.just("tool_result"), "tool_use_id": TEXT},
        optional={
            "content": TEXT
            | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}), max_size=2)
            | JSON,
            "is_error": st.booleans(),
        },
    ),
    st.fixed_dictionaries({"type": st.sampled_from(["thinking", "document", "x"])}),
    JSON,
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool"])},
    optional={"content": TEXT | st.lists(BLOCK, max_size=3) | JSON},
)
TOOL = st.fixed_dictionaries(
    {"name": TEXT},
    optional={
        "input_schema": st.just({"type": "object"}) | JSON,
        "description": TEXT | JSON,
        "type": st.sampled_from(["custom", "web_search_20250305"]),
    },
)
FIELDS = {
    "model": st.just("claude") | JSON,
    "max_tokens": st.integers(min_value=-5, max_value=2**40) | JSON,
    "messages": st.lists(MESSAGE, max_size=4) | JSON,
    "system": TEXT | st.lists(BLOCK, max_size=2) | JSON,
    "temperature": st.floats(-1, 2, allow_nan=False) | JSON,
    "top_p": st.floats(-1, 2, allow_nan=False) | JSON,
    "top_k": st.integers(-5, 500) | JSON,
    "stop_sequences": st.lists(TEXT, max_size=3) | JSON,
    "stream": st.booleans() | JSON,
    "metadata": st.fixed_dictionaries({}, optional={"user_id": TEXT | JSON}) | JSON,
    "tools": st.lists(TOOL, max_size=3) | JSON,
    "tool_choice": st.fixed_dictionaries(
        {"type": st.sampled_from(["auto", "any", "tool", "none", "other"])},
        optional={"name": TEXT | JSON, "disable_parallel_tool_use": st.booleans()},
    )
    | JSON,
}
BODY = st.fixed_dictionaries({}, optional=FIELDS)


@settings(max_examples=600, deadline=None)
@given(body=BODY, endpoint=st.sampled_from(["messages", "count_tokens"]))
def test_any_body_is_a_400_or_translates(body, endpoint):
    raw = orjson.dumps(body)
    try:
        parsed = anthropic_api.parse_request(raw, endpoint)
    except GatewayError as exc:
        assert exc.status == 400 and exc.message
        error = anthropic_api.error_body(exc, "req_1")
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
        return
    chat, problems = anthropic_api.to_chat(parsed)
    assert isinstance(problems, list)
    orjson.dumps(chat)  # what a provider is sent can be written
    assert chat["messages"] and all(
        m["role"] in ("system", "user", "assistant", "tool") for m in chat["messages"]
    )
    if endpoint == "messages":
        assert chat["max_tokens"] == parsed["max_tokens"]
    anthropic_api.count_input(chat, parsed)


CHUNK = st.fixed_dictionaries(
    {},
    optional={
        "choices": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "index": st.integers(0, 2) | JSON,
                    "delta": st.fixed_dictionaries(
                        {},
                        optional={
                            "role": st.just("assistant") | JSON,
                            "content": TEXT | JSON,
                            "tool_calls": st.lists(
                                st.fixed_dictionaries(
                                    {"index": st.integers(0, 2)},
                                    optional={
                                        "id": TEXT,
                                        "function": st.fixed_dictionaries(
                                            {}, optional={"name": TEXT, "arguments": TEXT | JSON}
                                        )
                                        | JSON,
                                    },
                                )
                                | JSON,
                                max_size=2,
                            )
                            | JSON,
                        },
                    )
                    | JSON,
                    "finish_reason": st.sampled_from([None, "stop", "length", "tool_calls", "x"]),
                },
            )
            | JSON,
            max_size=2,
        )
        | JSON,
        "usage": st.fixed_dictionaries(
            {"prompt_tokens": st.integers(0, 99), "completion_tokens": st.integers(0, 99)}
        )
        | JSON,
    },
)


@settings(max_examples=400, deadline=None)
@given(chunks=st.lists(CHUNK | JSON, max_size=8))
def test_any_chat_stream_translates_to_well_formed_events(chunks):
    translator = anthropic_api.ChatStreamTranslator("claude")
    events = translator.start()
    for chunk in chunks:
        events += translator.feed(chunk)
    events += translator.finish()
    seen = anthropic_api.StreamSeen()
    open_blocks = set()
    for raw, ev in events:
        assert raw.startswith(b"event: " + ev["type"].encode() + b"\ndata: ")
        assert orjson.loads(raw.split(b"data: ", 1)[1]) == ev
        seen.add(ev)
        if ev["type"] == "content_block_start":
            open_blocks.add(ev["index"])
        elif ev["type"] == "content_block_stop":
            open_blocks.discard(ev["index"])
        elif ev["type"] == "content_block_delta":
            assert ev["index"] <= translator.index
    types = [ev["type"] for _raw, ev in events]
    assert types[:2] == ["message_start", "ping"]
    assert types[-2:] == ["message_delta", "message_stop"]
    assert not open_blocks  # every block started was stopped
    assert anthropic_api.usage_counts(seen.reported()) is None or seen.final


@settings(max_examples=300, deadline=None)
@given(
    choices=st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "message": st.fixed_dictionaries(
                    {}, optional={"content": TEXT | JSON, "tool_calls": JSON | st.lists(JSON)}
                )
                | JSON,
                "finish_reason": JSON,
            },
        )
        | JSON,
        max_size=2,
    )
    | JSON,
    usage=JSON,
)
def test_any_chat_answer_translates_to_a_message(choices, usage):
    message = anthropic_api.message_from_chat({"choices": choices, "usage": usage}, "claude")
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["stop_reason"] in ("end_turn", "max_tokens", "tool_use", "refusal")
    assert all(b["type"] in ("text", "tool_use") for b in message["content"])
    assert message["usage"]["input_tokens"] >= 0 and message["usage"]["output_tokens"] >= 0
    orjson.dumps(message)
