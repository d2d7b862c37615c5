"""The pass-through relay forwards events as bytes and parses only the ones that may carry
usage or an error: whatever way the upstream's bytes are cut into reads (an event split
across several, several in one, CRLF lines, comments), the client gets every event whole and
in order, usage only if it asked, one `[DONE]`, and the row bills the reported usage, or
counts the text exactly when none is reported."""

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.dataplane import tokens
from gateway.dataplane.proxy import _Seen
from gateway.tests.conftest import usage_rows
from gateway.tests.fake_upstream import Behaviour

BODY = {"model": "chat-small", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
# Pieces of text that look like what the byte checks look for, and ones that need escaping.
PIECES = st.sampled_from(
    ["usage", '"usage"', "error", '{"error": 1}', " word", "é", "日本", "\n", "}", "data: x", "🙂"]
) | st.text(max_size=12)


def _chunk(delta=None, finish=None, **extra) -> dict:
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
        **extra,
    }


@st.composite
def streams(draw):
    texts = draw(st.lists(PIECES, min_size=1, max_size=12))
    events = [_chunk({"role": "assistant", "content": texts[0]})]
    events += [_chunk({"content": t}) for t in texts[1:]]
    events.append(_chunk(finish="stop"))
    usage = None
    if draw(st.booleans()):
        usage = {"prompt_tokens": 7, "completion_tokens": draw(st.integers(1, 500))}
        usage["total_tokens"] = 7 + usage["completion_tokens"]
        events.append({**_chunk(), "choices": [], "usage": usage})
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    lines = []
    for event in events:
        if draw(st.integers(0, 4)) == 0:
            lines.append(b": keep-alive" + eol + eol)
        lines.append(b"data: " + orjson.dumps(event) + eol + eol)
    body = b"".join(lines) + b"data: [DONE]" + eol + eol
    cuts = draw(st.lists(st.integers(1, len(body) - 1), max_size=8, unique=True))
    return events, "".join(texts), usage, body, cuts


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=streams(), wants_usage=st.booleans())
def test_events_cut_anywhere_arrive_whole_and_are_billed_once(acme, stream, wants_usage):
    events, text, usage, body, cuts = stream
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(
        raw_response=("text/event-stream", body), raw_cuts=cuts
    )
    before = len(usage_rows(acme.org))
    request = {**BODY, "stream_options": {"include_usage": True}} if wants_usage else BODY
    response = httpx.post(
        acme.base_url + "/chat/completions",
        json=request,
        timeout=30,
        headers={"Authorization": f"Bearer {acme.raw}"},
    )
    assert response.status_code == 200
    lines = [line for line in response.text.split("\n\n") if line]
    assert lines[-1] == "data: [DONE]"
    received = [orjson.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    expected = [e for e in events if wants_usage or "usage" not in e]
    assert received == expected
    rows = usage_rows(acme.org)[before:]
    assert [(r.status, r.http_status) for r in rows] == [("success", 200)]
    if usage is not None:
        assert rows[0].output_tokens == usage["completion_tokens"]
    else:
        assert rows[0].output_tokens == tokens.count_tokens(text)


def test_kept_events_are_condensed_to_text_in_order_and_bounded():
    """A long stream without usage keeps at most KEEP_BYTES of raw events; the text counted
    is the whole answer in order, whichever events were parsed on the way."""
    seen = _Seen()
    words = [f" w{i}" for i in range(5000)]
    for i, word in enumerate(words):
        raw = b"data: " + orjson.dumps(_chunk({"content": word})) + b"\n\n"
        if i % 997 == 0:  # now and then an event that was parsed (usage, error, held back)
            seen.add_pieces(orjson.loads(raw[6:-2])["choices"])
        else:
            seen.keep(raw)
        assert seen._size <= _Seen.KEEP_BYTES
    assert seen.text() == "".join(words)
