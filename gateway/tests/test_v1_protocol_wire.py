"""/v1 protocol edges on the HTTP protocol `make serve` runs (httptools,
gateway.dataplane.http_protocol), each a clear 4xx in OpenAI's shape, one usage row when
the key was read, never a 500 or a hang: an absolute-form request target's authority is
the request's host (RFC 9112 3.2.2); a head is at most BONITO_MAX_HEADER_BYTES whatever
the size of the reads it arrives in; an empty body is a 400 with a code; a chunked body
that breaks is recorded as the 400 its client got."""

import contextlib
import re
import socket
import time

import orjson
import pytest

from gateway.dataplane import http_protocol
from gateway.tests.conftest import usage_rows
from gateway.tests.raw_http import read_until_close
from gateway.tests.test_v1_edges_paths import send_raw

BODY = orjson.dumps(
    {"model": "chat-small", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
)


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


# ------------------------------------------------------------------- absolute-form targets
@pytest.mark.parametrize(
    "target",
    [
        b"http://evil.example/v1/models",
        b"https://evil.example/v1/models",
        b"http://evil.example:443/v1/models",
        b"HTTP://EVIL.EXAMPLE/v1/models",
    ],
)
def test_an_absolute_target_names_the_host_it_is_checked_as(acme, wire, target):
    """The authority of an absolute-form target is the request's host (RFC 9112 3.2.2):
    it was dropped, and only the (allowed) Host header checked."""
    status, _headers, body = send_raw(wire, _get(acme, target))
    assert status == 400, body[:300]
    assert _code(body) == "invalid_host"
    assert usage_rows() == [] and acme.fake.requests == []


def test_an_absolute_target_on_an_allowed_host_is_served(acme, wire):
    port = wire.rsplit(":", 1)[1].encode()
    target = b"http://127.0.0.1:" + port + b"/v1/models?x=1"
    # the Host header is ignored for the target's authority, whatever it says
    status, _headers, body = send_raw(wire, _get(acme, target, b"evil.example"))
    assert status == 200, body[:300]
    assert "chat-small" in [m["id"] for m in orjson.loads(body)["data"]]
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status) == ("success", 200)


@pytest.mark.parametrize(
    "target",
    [
        b"http://user:pw@127.0.0.1/v1/models",  # userinfo: RFC 9110 4.2.4, an error
        b"ftp://127.0.0.1/v1/models",
        b"http:///v1/models",  # no host
    ],
)
def test_an_absolute_target_that_is_not_an_http_url_is_a_400(acme, wire, target):
    status, headers, body = send_raw(wire, _get(acme, target))
    assert status == 400, body[:300]
    assert headers["content-type"] == "application/json"
    assert _code(body) in ("invalid_http_request", "invalid_host")
    assert usage_rows() == []


def test_an_absolute_target_is_checked_for_django_pages_too(acme, wire):
    status, _headers, _body = send_raw(
        wire, b"GET http://evil.example/api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    assert status == 400


# ------------------------------------------------------------------- head size
def _big_head(acme, size: int, path=b"/v1/models", close=True) -> bytes:
    start = _get(acme, path)[: -len(b"Connection: close\r\n\r\n")]
    start += b"" if close else b"X-Keep: 1\r\n"
    filler = size - len(start) - len(b"X-Big: \r\n") - len(b"Connection: close\r\n\r\n")
    return start + b"X-Big: " + b"a" * filler + b"\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize("over", [1, 16 * 1024, 190 * 1024])
def test_a_head_past_the_limit_in_one_read_is_a_431(acme, wire, over):
    """A head that arrived whole in one read (on loopback a read is up to 256 KB) was
    served: the bytes were counted only after the read was parsed."""
    head = _big_head(acme, http_protocol.MAX_HEADER_BYTES + over)
    assert len(head) == http_protocol.MAX_HEADER_BYTES + over
    status, headers, body = send_raw(wire, head)
    assert status == 431, body[:300]
    assert headers["connection"] == "close"
    assert _code(body) == "request_headers_too_large"
    assert usage_rows() == []


def test_a_head_at_the_limit_is_served(acme, wire):
    status, _headers, body = send_raw(wire, _big_head(acme, http_protocol.MAX_HEADER_BYTES))
    assert status == 200, body[:300]
    assert len(usage_rows(acme.org)) == 1


def test_a_head_past_the_limit_with_a_body_in_the_same_read_is_a_431(acme, wire):
    """The head and its body sent together: only the head's bytes count."""
    head = _big_head(acme, http_protocol.MAX_HEADER_BYTES + 10, b"/v1/chat/completions")
    head = head.replace(b"GET ", b"POST ", 1).replace(
        b"Connection: close\r\n", b"Content-Length: %d\r\nConnection: close\r\n" % len(BODY)
    )
    status, _headers, body = send_raw(wire, head + BODY)
    assert status == 431, body[:300]
    small = _big_head(acme, 1000, b"/v1/chat/completions").replace(b"GET ", b"POST ", 1)
    small = small.replace(
        b"Connection: close\r\n", b"Content-Length: %d\r\nConnection: close\r\n" % len(BODY)
    )
    padded = BODY[:-1] + b" " * 200_000 + b"}"  # a big read, a small head
    small = small.replace(b"Content-Length: %d" % len(BODY), b"Content-Length: %d" % len(padded))
    status, _headers, body = send_raw(wire, small + padded)
    assert status == 200, body[:300]


def test_a_big_head_on_a_kept_alive_connection_is_a_431(acme, wire):
    host, port = wire.removeprefix("http://").split(":")
    first = _get(acme, b"/v1/models").replace(b"Connection: close\r\n", b"")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(first)
        answer = b""
        while b"chat-small" not in answer:  # the first response, whole
            answer += sock.recv(65536)
        sock.sendall(_big_head(acme, http_protocol.MAX_HEADER_BYTES + 100))
        rest = read_until_close(sock)
    assert rest.startswith(b"HTTP/1.1 431 "), rest[:200]
    assert len(usage_rows(acme.org)) == 1


def test_a_pipelined_big_head_is_a_431_after_the_answer_before_it(acme, wire):
    """A head that begins within a read, after another request: checked whole when it
    ends, answered in turn."""
    first = _get(acme, b"/v1/models").replace(b"Connection: close\r\n", b"")
    host, port = wire.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(first + _big_head(acme, http_protocol.MAX_HEADER_BYTES + 100))
        answer = read_until_close(sock)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert answer.count(b"HTTP/1.1 431 ") == 1, answer[-400:]
    assert len(usage_rows(acme.org)) == 1


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


# ------------------------------------------------------------------- broken chunked bodies
@pytest.mark.parametrize(
    "broken",
    [
        b'5\r\n{"mod\r\nzz\r\n',  # a chunk size that is not hex
        b'5\r\n{"modelXX\r\n',  # a chunk longer than its size
        b'5\r\n{"mod',  # then the client leaves
    ],
    ids=["bad-size", "overlong-chunk", "left"],
)
def test_a_chunked_body_that_breaks_is_one_row_with_its_status(acme, wire, broken):
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + acme.raw.encode() + b"\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + broken
    )
    host, port = wire.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(request)
        if not broken.endswith(b"\r\n"):
            sock.shutdown(socket.SHUT_WR)
        answer = read_until_close(sock)
    deadline = time.monotonic() + 10
    while not (rows := usage_rows(acme.org)) and time.monotonic() < deadline:
        time.sleep(0.05)
    [row] = rows
    if broken.endswith(b"\r\n"):  # the framing broke: the client was told so
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert _code(answer.partition(b"\r\n\r\n")[2]) == "invalid_http_request"
        assert (row.http_status, row.error_type) == (400, "invalid_http_request")
    else:  # it left: nobody to tell
        assert (row.http_status, row.error_type) == (499, "client_disconnected")
    assert acme.fake.requests == []


# ------------------------------------------------------------------- upgrades
def _upgrade(acme, path: bytes, kind: bytes, key=True, method=b"GET", body=b"") -> bytes:
    return (
        method
        + b" "
        + path
        + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + (b"Authorization: Bearer " + acme.raw.encode() + b"\r\n" if key else b"")
        + b"Connection: Upgrade\r\nUpgrade: "
        + kind
        + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        + (b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body) if body else b"")
        + b"\r\n"
        + body
    )


def _one_answer(wire, request: bytes) -> tuple[int, bytes]:
    host, port = wire.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(request)
        sock.settimeout(20)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        length = int(
            next(
                line.split(b":")[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
        )
        while len(body) < length:
            body += sock.recv(65536)
    return int(head.split()[1]), body


@pytest.mark.parametrize(
    "path,status,code",
    [(b"/v1/models", 200, None), (b"/v1/realtime", 404, "unknown_url"), (b"//V1/x", 404, None)],
)
def test_a_websocket_handshake_on_v1_is_answered_as_the_http_request_it_also_is(
    acme, wire, path, status, code
):
    """/v1 has no websocket endpoint: the handshake went to the websocket router, which
    has no route for it, and the client got a plain-text 500."""
    got, body = _one_answer(wire, _upgrade(acme, path, b"websocket"))
    assert got == status, body[:300]
    if code:
        assert _code(body) == code
    [row] = usage_rows(acme.org)
    assert row.http_status == status
    got, body = _one_answer(wire, _upgrade(acme, path, b"websocket", key=False))
    assert (got, _code(body)) == (401, "invalid_api_key")
    assert len(usage_rows(acme.org)) == 1


@pytest.mark.parametrize("kind", [b"h2c", b"websocket"])
def test_an_upgrade_the_server_does_not_take_is_ignored_without_a_body(acme, wire, kind):
    """Answered as the plain request it also is, and the connection closed after it: the
    parser drops what follows an upgrade request in the same read, so a request pipelined
    behind it was lost, its client waiting on an open connection."""
    host, port = wire.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(_upgrade(acme, b"/v1/models", kind) + _get(acme, b"/v1/models"))
        answer = read_until_close(sock)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"200"], answer[:300]
    assert b"\r\nconnection: close\r\n" in answer.lower()  # the client knows to send again
    assert len(usage_rows(acme.org)) == 1


@pytest.mark.parametrize("kind", [b"h2c", b"websocket"])
def test_an_upgrade_with_a_body_is_a_400_that_says_so(acme, wire, kind):
    """The parser takes what follows the head of an upgrade request for the other
    protocol: the body was dropped and the request answered "the body is empty"."""
    request = _upgrade(acme, b"/v1/chat/completions", kind, method=b"POST", body=BODY)
    status, headers, body = send_raw(wire, request)
    assert status == 400, body[:300]
    assert headers["connection"] == "close"
    assert _code(body) == "unsupported_upgrade"
    assert "Upgrade" in orjson.loads(body)["error"]["message"]
    assert usage_rows() == [] and acme.fake.requests == []


# ------------------------------------------------------------------- pipelined errors
def _keep_alive_post(acme) -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + acme.raw.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY
    )


@pytest.mark.parametrize(
    "after",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ],
    ids=["garbage", "two-lengths"],
)
def test_a_bad_request_after_a_whole_one_is_answered_after_it(acme, wire, after):
    """The 400 for what followed a whole request on the connection was written at once
    and the connection closed: the request before it, served and billed, lost its answer
    (or, not yet started, was recorded as a client that left)."""
    host, port = wire.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(_keep_alive_post(acme) * 2 + after)
        answer = read_until_close(sock)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert statuses == [b"200", b"200", b"400"], answer[:600]
    assert answer.rstrip().endswith(b'"invalid_http_request"}}')
    rows = usage_rows(acme.org)
    assert [(r.status, r.http_status) for r in rows] == [("success", 200)] * 2
    assert len(acme.fake.requests) == 2


# ------------------------------------------------------------------- other framings
def test_a_refusal_before_an_expected_body_closes_the_connection(acme, wire):
    """A client that asked `Expect: 100-continue` and got a final answer instead sends no
    body: the connection was kept, the parser waiting for that body, and took the
    client's next request for it (no answer, ever)."""
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + acme.raw.encode() + b"\r\n"
        b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
        b"Content-Length: 20000000\r\n\r\n"
    )
    host, port = wire.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.settimeout(10)
        sock.sendall(head)
        answer = b""
        while b'"request_too_large"' not in answer:
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        assert b"\r\nconnection: close\r\n" in answer.lower()
        with contextlib.suppress(OSError):
            sock.sendall(_get(acme, b"/v1/models"))
        assert read_until_close(sock) == b""  # closed, not waiting for the body
    [row] = usage_rows(acme.org)
    assert (row.http_status, row.error_type) == (413, "request_too_large")


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/2", b"HTTP/3.0"])
def test_a_request_line_of_another_http_version_is_a_400(acme, wire, version):
    """HTTP/2.0 in an HTTP/1 request line was served as if it were HTTP/1.1."""
    request = _get(acme, b"/v1/models").replace(b"HTTP/1.1", version, 1)
    status, _headers, body = send_raw(wire, request)
    assert status == 400, body[:300]
    assert _code(body) == "invalid_http_request"
    assert usage_rows() == []


def test_an_expected_body_is_asked_for_and_served(acme, wire):
    head = _keep_alive_post(acme).replace(
        b"Content-Type: application/json\r\n",
        b"Content-Type: application/json\r\nExpect: 100-continue\r\n",
    )
    head, _, body = head.partition(b"\r\n\r\n")
    host, port = wire.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.settimeout(10)
        sock.sendall(head + b"\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 ")
        sock.sendall(body)
        answer = read_until_close(sock)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    [row] = usage_rows(acme.org)
    assert row.status == "success"
