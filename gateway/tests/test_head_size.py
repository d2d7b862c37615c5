"""A request's head (request line and headers) is at most BONITO_MAX_HEADER_BYTES: uvicorn
with httptools kept reading a header that never ended, hundreds of megabytes per
connection (and seconds of CPU on each), until the head deadline. Served as `make serve`
serves it (ExternalBonito: uvicorn with the project's HTTP protocol)."""

import contextlib
import time

import httpx
import orjson
import pytest

from gateway.tests.conftest import free_port
from gateway.tests.external import ExternalBonito
from gateway.tests.raw_http import connect, read_until_close

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ext = ExternalBonito(
        tmp_path_factory.mktemp("headsize"), env={"BONITO_MAX_HEADER_BYTES": "65536"}
    )
    try:
        ext.migrate()
        url = ext.serve(free_port())
        yield url
    finally:
        ext.close()


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/health"])
def test_a_head_past_the_limit_is_a_431_and_the_connection_closed(server, path):
    with connect(server) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ".encode())
        sent = 0
        with pytest.raises(OSError):  # reset or broken pipe once the server closed it
            while sent < 64 * 1024 * 1024:
                sock.sendall(b"a" * 65536)
                sent += 65536
        assert sent < 16 * 1024 * 1024  # it stopped reading long before
    with connect(server) as sock:  # many headers, then the end of the head
        sock.sendall(
            b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 1000) for i in range(80))
        )
        time.sleep(0.5)
        with contextlib.suppress(OSError):
            sock.sendall(b"\r\n")
        answer = read_until_close(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert orjson.loads(body)["error"]["code"] == "request_headers_too_large"


def test_heads_under_the_limit_are_served(server):
    headers = {f"x-h{i}": "c" * 1000 for i in range(50)}  # 50 KB of headers
    with httpx.Client(base_url=server, timeout=10) as client:
        for _ in range(3):  # a kept-alive connection counts each request's head anew
            response = client.get("/v1/models", headers=headers)
            assert response.status_code == 401
            assert client.get("/api/health").status_code == 200


def test_pipelined_requests_with_big_bodies_are_not_taken_for_a_big_head(server):
    """The bytes of one request's body, read together with the start of the next head,
    are not that head's."""
    body = b'{"model": "m", "input": "' + b"x" * 300_000 + b'"}'
    # (To a path that reads its body: a /v1 401, given before the body is read, is the
    # connection's last: test_early_answer_close.py.)
    one = (
        b"POST /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )
    last = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(one * 3 + last)
        answer = read_until_close(sock)
    assert answer.count(b"HTTP/1.1 ") == 4, answer[:300]
    assert b"HTTP/1.1 431" not in answer
    assert answer.rpartition(b"HTTP/1.1 ")[2].startswith(b"200 ")
