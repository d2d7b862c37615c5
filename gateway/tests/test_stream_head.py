"""A stream's usage row does not depend on its head reaching the client: the relay is
running before the head goes out, so a head that cannot be written (the connection
failed) or that waits while the client leaves (a full socket buffer) still ends the
stream the usual way, one row (499) and the upstream closed. A relay closed before it ran
had recorded nothing, settled no reservation and left the upstream's stream open.

In memory (the Rig of test_dataplane_memory: the fake upstream over a socket pair), with
the /v1 ASGI app in front and the client's side of ASGI scripted."""

import asyncio
import contextlib

import orjson
import pytest

from gateway.asgi_v1 import V1App
from gateway.tests.fake_upstream import Behaviour
from gateway.tests.test_dataplane_memory import APP, chat, rig  # noqa: F401 - the fixture

ENDPOINTS = {
    "/v1/chat/completions": chat(stream=True),
    "/v1/completions": {"model": "chat", "prompt": "hi", "stream": True},
    "/v1/responses": {"model": "chat", "input": "hi", "stream": True},
    "/v1/messages": {
        "model": "chat",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    },
}


def _scope(path):
    return {
        "type": "http",
        "path": path,
        "method": "POST",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {APP}".encode())],
    }


def _app(rig):  # noqa: F811
    # A stream longer than its first read: the answer is still coming when the relay ends.
    rig.upstream.behaviours["gpt-4o-mini"] = Behaviour(stream_chunks=5, chunk_delay=0.05)
    return V1App(None, rig.gateway.max_body_bytes, lambda host: True, lambda: rig.gateway)


@pytest.mark.parametrize("path", sorted(ENDPOINTS))
async def test_a_head_that_cannot_be_written_still_records_the_stream(rig, path):  # noqa: F811
    body = orjson.dumps(ENDPOINTS[path])
    sent = iter([{"type": "http.request", "body": body, "more_body": False}])

    async def receive():
        with contextlib.suppress(StopIteration):
            return next(sent)
        await asyncio.sleep(3600)  # the client stays

    async def send(message):
        if message["type"] == "http.response.start":
            raise OSError("the connection failed")

    with pytest.raises(OSError):
        await _app(rig)(_scope(path), receive, send)
    [row] = rig.records()
    assert (row["status"], row["http_status"]) == ("error", 499)


@pytest.mark.parametrize("path", sorted(ENDPOINTS))
async def test_a_client_that_leaves_while_the_head_waits_is_one_499_row(rig, path):  # noqa: F811
    body = orjson.dumps(ENDPOINTS[path])
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    head_waits = asyncio.Event()

    async def receive():
        if messages:
            return messages.pop(0)
        await head_waits.wait()  # the client leaves while the head is waiting to go out
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            head_waits.set()
            await asyncio.sleep(3600)  # a socket buffer that never drains

    await asyncio.wait_for(_app(rig)(_scope(path), receive, send), 10)
    [row] = rig.records()
    assert (row["status"], row["http_status"], row["error_type"]) == (
        "error",
        499,
        "client_disconnected",
    )
