import asyncio
import time

import httpx
import pytest

from gateway.tests.conftest import usage_rows
from gateway.tests.fake_upstream import Behaviour

BODY = {"model": "chat-small", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def test_chunks_are_forwarded_as_they_arrive(acme, mode):
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
