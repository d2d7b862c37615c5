"""/v1 request bodies sent chunked (Transfer-Encoding: chunked), at their edges, on the HTTP
protocol `make serve` runs (gateway.dataplane.http_protocol, real uvicorn, raw sockets):

- a chunked body whose framing breaks is answered 400 and recorded as that 400, whatever the
  request's method and path (a GET, a 404, a 405 were recorded as the answer the client
  never got: the app answered without reading the body, and the protocol wrote the 400);
- a chunk size past the body cap is refused at once, a 413 as an oversized Content-Length
  is (it waited for the body's 30 s idle timeout: a 408);
- a broken chunked body pipelined behind a request in flight is answered after that
  request's answer, which it cut."""

import re
import socket
import time

import orjson
import pytest

from gateway.tests.conftest import usage_rows
from gateway.tests.fake_upstream import Behaviour
from gateway.tests.raw_http import connect, read_until_close

BODY = orjson.dumps(
    {"model": "chat-small", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
)
BROKEN = b'5\r\n{"mod\r\nzz\r\n'  # a second chunk size that is not hex
CLOSE = b"Connection: close\r\n"
CAP = 10 * 1024 * 1024  # GATEWAY_MAX_BODY_BYTES's default, the tests' setting


def _head(acme, method: bytes, path: bytes, key=True, extra=b"") -> bytes:
    return (
        method + b" " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + (b"Authorization: Bearer " + acme.raw.encode() + b"\r\n" if key else b"")
        + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        + extra
        + b"\r\n"
    )  # fmt: skip


def _one_answer(sock: socket.socket) -> bytes:
    """One whole response (its head and Content-Length bytes of body), within 10 s."""
    sock.settimeout(10)
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536) or b"?"  # a close before the answer fails below
        assert not received.endswith(b"?"), received
    head, _, body = received.partition(b"\r\n\r\n")
    size = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))
    while len(body) < size:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _answers(data: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of each response in ``data``, in order (each with a Content-Length)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, data[:300]
        length = re.search(rb"(?im)^content-length: *(\d+)", head)
        size = int(length.group(1)) if length else 0
        out.append((int(head.split()[1]), rest[:size]))
        data = rest[size:]
    return out


def _rows(acme, n: int, timeout=10.0):
    deadline = time.monotonic() + timeout
    while len(rows := usage_rows(acme.org)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return rows


def _code(body: bytes):
    return orjson.loads(body)["error"]["code"]


# ------------------------------------------------------------------- a) broken, any method
ROUTES = [
    (b"GET", b"/v1/models"),
    (b"HEAD", b"/v1/models"),
    (b"GET", b"/v1/models/chat-small"),
    (b"GET", b"/v1/responses/resp_abc"),
    (b"DELETE", b"/v1/responses/resp_abc"),
    (b"POST", b"/v1/nope"),  # a 404
    (b"PUT", b"/v1/chat/completions"),  # a 405
    (b"OPTIONS", b"/v1/models"),  # not a preflight: a 405
    (b"POST", b"/v1/chat/completions"),  # as before
]


@pytest.mark.parametrize("when", ["with-head", "after-head"])
@pytest.mark.parametrize(("method", "path"), ROUTES, ids=lambda v: v.decode())
def test_a_broken_chunked_body_is_the_400_recorded_whatever_the_request(
    acme, wire, method, path, when
):
    with connect(wire) as sock:
        if when == "with-head":
            sock.sendall(_head(acme, method, path) + BROKEN)
        else:  # the app has the head (and could answer) before the body breaks
            sock.sendall(_head(acme, method, path))
            time.sleep(0.5)
            sock.sendall(BROKEN)
        answer = read_until_close(sock)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    [(status, body)] = _answers(answer)
    assert _code(body) == "invalid_http_request"
    [row] = _rows(acme, 1)
    assert (row.status, row.http_status, row.error_type) == (
        "rejected",
        400,
        "invalid_http_request",
    )
    assert acme.fake.requests == []


def test_a_whole_chunked_body_on_a_get_is_served(acme, wire):
    """Read to its end and dropped: the request is answered as without one."""
    with connect(wire) as sock:
        sock.sendall(_head(acme, b"GET", b"/v1/models") + b"2\r\n{}\r\n0\r\n\r\n")
        sock.sendall(_head(acme, b"GET", b"/v1/models", extra=CLOSE) + b"0\r\n\r\n")
        answer = read_until_close(sock)
    assert [s for s, _ in _answers(answer)] == [200, 200], answer[:300]
    assert [r.http_status for r in _rows(acme, 2)] == [200, 200]


# ------------------------------------------------------------------- b) a size past the cap
SIZES = {
    "absurd": b"ffffffffff\r\n",
    "cap+1": b"%x\r\n" % (CAP + 1),
    "leading-zeros": b"0000000000%x\r\n" % (CAP + 1),
    "extension": b"ffffffffff;name=value\r\n",
    "upper-case": b"FFFFFFFFFF\r\n",
    # two chunks, each under the cap, announcing more than it together
    "two-chunks": b"%x\r\n%s\r\n%x\r\n" % (CAP // 2, b"x" * (CAP // 2), CAP // 2 + 1),
}


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_a_chunk_size_past_the_cap_is_a_413_at_once(acme, wire, size):
    started = time.monotonic()
    with connect(wire) as sock:
        sock.sendall(_head(acme, b"POST", b"/v1/chat/completions") + size + b'{"mo')
        answer = _one_answer(sock)  # the body's idle timeout is 30 s
    assert time.monotonic() - started < 10
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]
    [(status, body)] = _answers(answer)
    assert _code(body) == "request_too_large"
    [row] = _rows(acme, 1)
    assert (row.http_status, row.error_type) == (413, "request_too_large")
    assert acme.fake.requests == []


@pytest.mark.parametrize(
    ("method", "path"),
    [(b"GET", b"/v1/models"), (b"POST", b"/v1/audio/transcriptions"), (b"POST", b"/v1/nope")],
    ids=["get", "upload", "404"],
)
def test_an_absurd_chunk_size_is_refused_at_once_on_any_request(acme, wire, method, path):
    """The uploads' own cap is larger, a GET's body is dropped: an absurd size still
    passes every cap (a 404 stays the 404 it is, but at once)."""
    started = time.monotonic()
    with connect(wire) as sock:
        sock.sendall(_head(acme, method, path) + b"ffffffffff\r\nabc")
        answer = _one_answer(sock)
    assert time.monotonic() - started < 10
    expected = 404 if path == b"/v1/nope" else 413
    assert answer.startswith(b"HTTP/1.1 %d " % expected), answer[:300]
    [row] = _rows(acme, 1)
    assert row.http_status == expected


def test_an_absurd_chunk_size_without_a_key_is_a_401_and_no_row(acme, wire):
    with connect(wire) as sock:
        sock.sendall(_head(acme, b"POST", b"/v1/chat/completions", key=False) + b"ffffffffff\r\n")
        answer = _one_answer(sock)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:300]
    assert usage_rows(acme.org) == []


def test_a_chunk_size_too_large_to_parse_is_a_400_at_once(acme, wire):
    with connect(wire) as sock:
        sock.sendall(_head(acme, b"POST", b"/v1/chat/completions") + b"f" * 40 + b"\r\n")
        answer = read_until_close(sock, timeout=10)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    [row] = _rows(acme, 1)
    assert (row.http_status, row.error_type) == (400, "invalid_http_request")


def test_a_body_under_the_cap_in_many_chunks_is_served(acme, wire):
    """Sizes are counted as announced, not refused early: a body of many chunks, sizes in
    upper case, with extensions and a trailer, is served."""
    pieces = [BODY[i : i + 7] for i in range(0, len(BODY), 7)]
    body = b"".join(b"%X;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\nX-T: 1\r\n\r\n"
    with connect(wire) as sock:
        request = _head(acme, b"POST", b"/v1/chat/completions", extra=CLOSE) + body
        for i in range(0, len(request), 5):  # in pieces: size lines cut across reads
            sock.sendall(request[i : i + 5])
            time.sleep(0.001)
        answer = read_until_close(sock)
    assert [s for s, _ in _answers(answer)] == [200], answer[:300]


# ------------------------------------------------------------------- c) pipelined
@pytest.mark.parametrize("before", [1, 2])
def test_a_broken_body_behind_a_request_in_flight_is_answered_after_it(acme, wire, before):
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(latency=0.5)
    whole = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + acme.raw.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY
    )
    with connect(wire) as sock:
        sock.sendall(whole * before + _head(acme, b"POST", b"/v1/chat/completions") + BROKEN)
        answer = read_until_close(sock)
    answers = _answers(answer)
    assert [s for s, _ in answers] == [200] * before + [400], answer[:600]
    for _status, body in answers[:-1]:  # each whole
        assert orjson.loads(body)["choices"]
    assert _code(answers[-1][1]) == "invalid_http_request"
    rows = _rows(acme, before + 1)
    assert sorted(r.http_status for r in rows) == [200] * before + [400]
    assert len(acme.fake.requests) == before
