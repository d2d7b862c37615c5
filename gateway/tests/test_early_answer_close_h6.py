"""Every answer given before the request's body was read to its end is the connection's
last: a 401 (no key, a wrong key, two keys), a 404 (unknown path), a 405, a 400 (bad Host)
sent before reading a body too large to read, or one that never ends, says `Connection:
close`, and the connection is closed after a bounded drain. Kept alive, the server went on
reading and dropping (or waiting for) that body, and the client's next request on the
connection was never answered. A request with no body keeps its connection. Raw sockets,
on the HTTP protocol `make serve` runs (docs/gateway.md *Errors*)."""

import contextlib
import re
import time

import httpx
import pytest

from gateway.dataplane.http_protocol import LINGER_BYTES, LINGER_S
from gateway.tests.conftest import usage_rows
from gateway.tests.raw_http import connect, read_until_close

CAP = 10 * 1024 * 1024  # GATEWAY_MAX_BODY_BYTES's default, the tests' setting
OVER_CAP = b"Content-Length: %d\r\n" % (CAP + 1)
ENDLESS = b"Transfer-Encoding: chunked\r\n"  # then a chunk of a terabyte
NEXT = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {raw}\r\n\r\n"


def _responses(data: bytes) -> list[tuple[bytes, bytes]]:
    """(head, body) of each whole response in ``data`` (each has a Content-Length)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep and head.startswith(b"HTTP/1.1 "), data[:300]
        size = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))
        out.append((head, rest[:size]))
        data = rest[size:]
    return out


# id -> (method, path, key header lines, host, framing, status, code)
CASES = {
    "401-no-key": (b"POST", b"/v1/chat/completions", b"", OVER_CAP, 401, b"invalid_api_key"),
    "401-wrong-key": (
        b"POST",
        b"/v1/chat/completions",
        b"Authorization: Bearer bn-wrong\r\n",
        ENDLESS,
        401,
        b"invalid_api_key",
    ),
    "401-two-keys": (
        b"POST",
        b"/v1/embeddings",
        b"Authorization: Bearer bn-one\r\nAuthorization: Bearer bn-two\r\n",
        OVER_CAP,
        401,
        b"invalid_api_key",
    ),
    "401-wrong-key-unknown-path": (
        b"POST",
        b"/v1/nowhere",
        b"Authorization: Bearer bn-wrong\r\n",
        OVER_CAP,
        401,
        b"invalid_api_key",
    ),
    "404-unknown-path": (b"POST", b"/v1/nowhere", b"{key}", OVER_CAP, 404, b"unknown_url"),
    "405-wrong-method": (
        b"PUT",
        b"/v1/chat/completions",
        b"{key}",
        OVER_CAP,
        405,
        b"method_not_allowed",
    ),
    "get-with-a-body": (b"GET", b"/v1/models", b"{key}", OVER_CAP, 200, b'"object"'),
}


def _head(acme, method, path, keys, framing, host=b"127.0.0.1"):
    keys = keys.replace(b"{key}", b"Authorization: Bearer " + acme.raw.encode() + b"\r\n")
    return (
        method + b" " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + keys
        + b"Content-Type: application/json\r\n" + framing + b"\r\n"
    )  # fmt: skip


def _start(framing):
    return b"ffffffffff\r\n" + b"x" * 1000 if framing == ENDLESS else b'{"model": "x' + b"y" * 1000


def _refused_then_closed(acme, wire, head, start, status):
    started = time.monotonic()
    with connect(wire) as sock:
        sock.sendall(head + start)
        sock.settimeout(10)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 %d " % status), first[:300]
        # A client that reuses the connection: its next request must not be read as body
        # bytes of the refused one (dropped, or waited on until some timeout).
        with contextlib.suppress(OSError):  # already closed: as good
            sock.sendall(NEXT.replace(b"{raw}", acme.raw.encode()))
        rest = read_until_close(sock, timeout=10)
    elapsed = time.monotonic() - started
    [(head, body)] = _responses(first + rest)  # the answer alone, then the close
    assert re.search(rb"(?im)^connection: *close\r?$", head), head
    assert elapsed < LINGER_S + 5, elapsed  # closed, not kept until a timeout
    return body


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_an_answer_before_the_body_is_the_connections_last(acme, wire, case):
    method, path, keys, framing, status, code = case
    body = _refused_then_closed(
        acme, wire, _head(acme, method, path, keys, framing), _start(framing), status
    )
    assert code in body
    assert b"sk-fake" not in body
    # Nothing recorded for a request with no valid key; at most its one row otherwise.
    rows = usage_rows(acme.org)
    assert len(rows) == 0 if status == 401 else len(rows) <= 1
    response = httpx.get(
        wire + "/v1/models", headers={"Authorization": f"Bearer {acme.raw}"}, timeout=10
    )
    assert response.status_code == 200


def test_a_wrong_host_before_the_body_closes_too(acme, wire):
    head = _head(acme, b"POST", b"/v1/chat/completions", b"{key}", OVER_CAP, b"evil.example")
    assert b"invalid_host" in _refused_then_closed(acme, wire, head, _start(OVER_CAP), 400)


def test_a_client_still_sending_reads_the_401_before_the_close(acme, wire):
    """The body keeps coming after the 401 (within the bounded drain): the client reads
    the whole answer, then the connection ends, never a reset before the answer."""
    with connect(wire) as sock:
        sock.sendall(_head(acme, b"POST", b"/v1/chat/completions", b"", OVER_CAP))
        sent, piece = 0, b"x" * 65536
        while sent < LINGER_BYTES // 2:
            sock.sendall(piece)
            sent += len(piece)
        answer = read_until_close(sock, timeout=10)
    [(head, body)] = _responses(answer)
    assert head.startswith(b"HTTP/1.1 401 ")
    assert b'"invalid_api_key"' in body


@pytest.mark.parametrize("framing", [b"", b"Content-Length: 0\r\n"])
def test_a_401_to_a_request_with_no_body_keeps_the_connection(acme, wire, framing):
    """Nothing of it is left unread: the connection carries the next request."""
    head = _head(acme, b"GET", b"/v1/models", b"Authorization: Bearer bn-wrong\r\n", framing)
    with connect(wire) as sock:
        sock.sendall(head)
        sock.settimeout(10)
        answer = b""
        while b'"invalid_api_key"' not in answer:
            answer += sock.recv(65536)
        sock.sendall(NEXT.replace(b"{raw}", acme.raw.encode())[:-2] + b"Connection: close\r\n\r\n")
        answer += read_until_close(sock, timeout=10)
    responses = _responses(answer)
    assert [h.split(b" ")[1] for h, _ in responses] == [b"401", b"200"], answer[:500]
    assert not re.search(rb"(?im)^connection: *close\r?$", responses[0][0])
