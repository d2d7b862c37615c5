"""/v1 protocol edges on the HTTP protocol `make serve` runs (httptools,
gateway.dataplane.http_protocol), each a clear 4xx in OpenAI's shape, one usage row when
the key was read, never a 500 or a hang: an empty body is a 400 with a code."""

import socket
import threading
import time

import orjson
import pytest

from gateway.dataplane.http_protocol import SPEC
from gateway.tests.conftest import free_port, usage_rows
from gateway.tests.test_v1_edges_paths import send_raw

BODY = orjson.dumps(
    {"model": "chat-small", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
)


@pytest.fixture(scope="module")
def wire(live_server_thread):
    """The test process's application, served by uvicorn with the project's protocol."""
    import uvicorn

    from bonito.asgi import application

    port = free_port()
    config = uvicorn.Config(
        application,
        host="127.0.0.1",
        port=port,
        log_level="error",
        lifespan="off",
        loop="asyncio",
        http=SPEC,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="protocol-wire", daemon=True)
    thread.start()
    deadline = time.time() + 15
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _get(acme, target: bytes, host=b"127.0.0.1", *extra: bytes) -> bytes:
    return (
        b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n"
        b"Authorization: Bearer "
        + acme.raw.encode()
        + b"\r\n"
        + b"".join(h + b"\r\n" for h in extra)
        + b"Connection: close\r\n\r\n"
    )


def _code(body: bytes):
    return orjson.loads(body)["error"]["code"]


def _read_all(sock: socket.socket) -> bytes:
    sock.settimeout(20)
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


# ------------------------------------------------------------------- empty bodies
POST_ENDPOINTS = [
    b"/v1/chat/completions",
    b"/v1/completions",
    b"/v1/embeddings",
    b"/v1/responses",
    b"/v1/messages",
    b"/v1/messages/count_tokens",
    b"/v1/feedback",
    b"/v1/images/generations",
    b"/v1/audio/speech",
    b"/v1/moderations",
    b"/v1/rerank",
    b"/v1/audio/transcriptions",
    b"/v1/audio/translations",
]


def _post(acme, path: bytes, body: bytes, content_type=b"application/json") -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + acme.raw.encode() + b"\r\n"
        b"Content-Type: " + content_type + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )


@pytest.mark.parametrize("body", [b"", b" ", b"\r\n\t "], ids=["empty", "space", "whitespace"])
@pytest.mark.parametrize("path", POST_ENDPOINTS)
def test_an_empty_body_is_a_400_with_a_code_and_one_row(acme, wire, path, body):
    upload = path.startswith(b"/v1/audio/trans")
    kind = b"multipart/form-data; boundary=xyz" if upload else b"application/json"
    status, _headers, answer = send_raw(wire, _post(acme, path, body, kind))
    assert status == 400, answer[:300]
    error = orjson.loads(answer)["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    if path.startswith(b"/v1/messages"):  # Anthropic's shape: no code, the row has it
        assert "code" not in error
    else:  # a code a client can branch on (it was null)
        assert error["code"] == ("invalid_multipart" if upload else "invalid_json"), error
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status) == ("rejected", 400)
    assert row.error_type == ("invalid_multipart" if upload else "invalid_json")
    assert acme.fake.requests == []
