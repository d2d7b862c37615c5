"""An answer given before the request's body was read to its end (a 413 on a declared
Content-Length over the cap, or on a chunk size past it) is the connection's last: it
says `Connection: close` and the connection is closed after it, once a bounded amount of
what the client still sends has been dropped. Kept alive, the unread body was parsed as the
next request on the connection (or waited for: a chunk of a terabyte), so the next request
was never answered. Raw sockets, on the HTTP protocol `make serve` runs."""

import httpx
import pytest

from gateway.tests.conftest import usage_rows
from gateway.tests.raw_http import (
    answer_then_next,
    answer_while_sending,
    refused_then_closed,
)

CAP = 10 * 1024 * 1024  # GATEWAY_MAX_BODY_BYTES's default, the tests' setting


def _head(acme, framing: bytes, path: bytes = b"/v1/chat/completions", method=b"POST"):
    return (
        method + b" " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + acme.raw.encode() + b"\r\n"
        b"Content-Type: application/json\r\n" + framing + b"\r\n"
    )


EARLY = {
    "content-length": (b"POST", b"Content-Length: %d\r\n" % (CAP + 1), b'{"model": "chat'),
    "chunk-size": (b"POST", b"Transfer-Encoding: chunked\r\n", b'ffffffffff\r\n{"mo'),
    "chunk-size-on-a-get": (b"GET", b"Transfer-Encoding: chunked\r\n", b"ffffffffff\r\nab"),
}


def _healthy(wire, acme):
    response = httpx.get(
        wire + "/v1/models", headers={"Authorization": f"Bearer {acme.raw}"}, timeout=10
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("case", EARLY.values(), ids=EARLY.keys())
def test_the_next_request_on_the_socket_is_not_taken_for_the_unread_body(acme, wire, case):
    method, framing, start = case
    path = b"/v1/models" if method == b"GET" else b"/v1/chat/completions"
    # A client that reuses the connection: its next request must not become body bytes
    # of the refused one (answered with nothing, or waited on until a timeout).
    body = refused_then_closed(wire, acme.raw, _head(acme, framing, path, method) + start, 413)
    assert b'"request_too_large"' in body
    [row] = usage_rows(acme.org)
    assert (row.http_status, row.error_type) == (413, "request_too_large")
    _healthy(wire, acme)


def test_a_client_still_sending_reads_the_413_before_the_close(acme, wire):
    """The body keeps coming after the answer (under the bounded drain): the client reads
    the whole 413, then the connection ends (no reset before the answer)."""
    head, body = answer_while_sending(wire, _head(acme, b"Content-Length: %d\r\n" % (CAP + 1)))
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b'"request_too_large"' in body
    _healthy(wire, acme)


def test_a_refusal_of_a_body_read_whole_keeps_the_connection(acme, wire):
    """Only a refusal of the body itself closes: a body read to its end and refused for
    what it says (not JSON) leaves the connection to carry the next request."""
    body = b"{not json"
    request = _head(acme, b"Content-Length: %d\r\n" % len(body)) + body
    responses = answer_then_next(wire, acme.raw, request, b'"invalid_json"')
    assert [head.split(b" ")[1] for head, _ in responses] == [b"400", b"200"], responses
