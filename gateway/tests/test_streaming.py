import asyncio
import time

import httpx
import orjson
import pytest

from gateway.tests.conftest import usage_rows
from gateway.tests.fake_upstream import Behaviour

BODY = {"model": "chat-small", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.alone  # the first chunk within 1 s
def test_chunks_are_forwarded_as_they_arrive(acme, mode):
    # One stream first: the process's first call through LiteLLM imports it (over a second
    # on a slow machine), which is start-up, not this stream's latency.
    warm, events = _stream(acme, BODY)
    assert warm.status_code == 200 and events[-1] == "[DONE]"
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(stream_chunks=4, chunk_delay=0.4)
    arrivals = []
    start = time.monotonic()
    with httpx.stream(
        "POST",
        acme.base_url + "/chat/completions",
        json=BODY,
        timeout=30,
        headers={"Authorization": f"Bearer {acme.raw}"},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        for line in response.iter_lines():
            if line.startswith("data:"):
                arrivals.append((time.monotonic() - start, line))
    assert arrivals[-1][1] == "data: [DONE]"
    # The first chunk arrived long before the last was produced: nothing was buffered.
    assert arrivals[0][0] < 1.0
    assert arrivals[-1][0] - arrivals[0][0] > 1.0


def test_a_stream_without_upstream_usage_is_counted(acme, mode):
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(stream_chunks=6, report_usage=False)
    with httpx.stream(
        "POST",
        acme.base_url + "/chat/completions",
        json=BODY,
        timeout=30,
        headers={"Authorization": f"Bearer {acme.raw}"},
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]"
    [row] = usage_rows(acme.org)
    assert row.status == "success"
    assert row.output_tokens >= 6  # counted with the tokenizer: "word0 word1 …"
    assert row.input_tokens > 0


def test_a_mid_stream_reset_ends_with_an_error_event_and_is_recorded(acme):
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(stream_chunks=10, reset_after_chunks=3)
    with httpx.stream(
        "POST",
        acme.base_url + "/chat/completions",
        json=BODY,
        timeout=30,
        headers={"Authorization": f"Bearer {acme.raw}"},
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    assert '"stream_broken"' in lines[-1]
    content_chunks = len(lines) - 1
    assert 1 <= content_chunks <= 3
    [row] = usage_rows(acme.org)
    assert (row.status, row.error_type) == ("error", "stream_broken")
    assert row.output_tokens >= content_chunks  # counted from what was relayed


@pytest.mark.parametrize("mode", ["passthrough", "litellm"], indirect=True)
def test_a_client_disconnect_cancels_upstream_and_records_partial_usage(acme, mode):
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(stream_chunks=50, chunk_delay=0.1)

    async def read_two_then_leave():
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream(
                "POST",
                acme.base_url + "/chat/completions",
                json=BODY,
                headers={"Authorization": f"Bearer {acme.raw}"},
            ) as response,
        ):
            seen = 0
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    seen += 1
                    if seen == 2:
                        break

    asyncio.run(read_two_then_leave())
    deadline = time.time() + 5
    while acme.fake.cancelled_streams == 0 and time.time() < deadline:
        time.sleep(0.05)
    assert acme.fake.cancelled_streams == 1  # the upstream call was cancelled
    deadline = time.time() + 5
    rows = []
    while not rows and time.time() < deadline:
        rows = usage_rows(acme.org)
        time.sleep(0.05)
    [row] = rows
    assert (row.status, row.error_type, row.http_status) == ("error", "client_disconnected", 499)
    assert 2 <= row.output_tokens < 50


def _stream(acme, body):
    """(status, [parsed data events], raw text) of one streamed request."""
    with httpx.stream(
        "POST",
        acme.base_url + "/chat/completions",
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {acme.raw}"},
    ) as response:
        response.read()
    events = [
        line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data:")
    ]
    return response, events


@pytest.mark.parametrize("include_usage", [False, True])
def test_an_upstream_that_answers_json_to_a_stream_is_converted(acme, mode, include_usage):
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(json_when_streaming=True, stream_chunks=3)
    body = {**BODY, "stream_options": {"include_usage": include_usage}}
    response, events = _stream(acme, body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"][0]["delta"]["content"] == "word0 word1 word2"
    assert chunks[1]["choices"][0]["finish_reason"] == "stop"
    if include_usage:
        assert len(chunks) == 3
        assert chunks[2]["choices"] == [] and chunks[2]["usage"]["completion_tokens"] == 3
    else:
        assert len(chunks) == 2 and not any("usage" in c for c in chunks)
    [row] = usage_rows(acme.org)
    assert (row.status, row.input_tokens, row.output_tokens) == ("success", 11, 3)


@pytest.mark.parametrize(
    "raw",
    [
        ("text/html", b"<html><body>502 Bad Gateway</body></html>"),
        ("application/json", b'{"status": "ok"}'),
        ("text/event-stream", b"data: [DONE]\n\n"),
        ("text/event-stream", b": keep-alive\n\nevent: ping\n\n"),
    ],
)
def test_a_stream_with_no_completion_in_it_is_a_502_never_an_empty_success(acme, mode, raw):
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(raw_response=raw)
    response, _events = _stream(acme, BODY)
    assert response.status_code == 502
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "upstream_error")
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status) == ("error", 502)


def test_stream_must_be_a_boolean(acme, mode):
    response, _events = _stream(acme, {**BODY, "stream": "yes"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("stream", "invalid_type")
    assert acme.fake.requests == []
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status) == ("rejected", 400)


@pytest.mark.parametrize("usage_on_last_chunk", [False, True])
def test_cached_tokens_are_recorded_for_streams(acme, mode, usage_on_last_chunk):
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(
        stream_chunks=3, cached_tokens=7, usage_on_last_chunk=usage_on_last_chunk
    )
    response, events = _stream(acme, BODY)
    assert response.status_code == 200 and events[-1] == "[DONE]"
    [row] = usage_rows(acme.org)
    assert (row.input_tokens, row.output_tokens, row.cached_tokens) == (11, 3, 7)


@pytest.mark.parametrize("usage_on_last_chunk", [False, True])
def test_no_usage_and_no_empty_chunk_reach_a_client_that_did_not_ask(
    acme, mode, usage_on_last_chunk
):
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(
        stream_chunks=3, usage_on_last_chunk=usage_on_last_chunk
    )
    response, events = _stream(acme, BODY)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    # What OpenAI sends: one chunk per piece of content, then the finish chunk.
    assert len(chunks) == 4
    for chunk in chunks:
        assert "usage" not in chunk
        [choice] = chunk["choices"]
        assert choice["delta"].get("content") or choice.get("finish_reason")
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    # With include_usage: the same, then one usage chunk.
    response, events = _stream(acme, {**BODY, "stream_options": {"include_usage": True}})
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert len(chunks) == 5
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 11
    assert not any(c.get("usage") for c in chunks[:-1])
