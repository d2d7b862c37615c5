"""Every answer given before the request's body was read to its end is the connection's
last: a 401 (no key, a wrong key, two keys), a 404 (unknown path), a 405, a 400 (bad Host)
sent before reading a body too large to read, or one that never ends, says `Connection:
close`, and the connection is closed after a bounded drain. Kept alive, the server went on
reading and dropping (or waiting for) that body, and the client's next request on the
connection was never answered. A request with no body keeps its connection. Raw sockets,
on the HTTP protocol `make serve` runs (docs/gateway.md *Errors*)."""

import httpx
import pytest

from gateway.tests.conftest import usage_rows
from gateway.tests.raw_http import (
    answer_then_next,
    answer_while_sending,
    refused_then_closed,
    says_close,
)

CAP = 10 * 1024 * 1024  # GATEWAY_MAX_BODY_BYTES's default, the tests' setting
OVER_CAP = b"Content-Length: %d\r\n" % (CAP + 1)
ENDLESS = b"Transfer-Encoding: chunked\r\n"  # then a chunk of a terabyte


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


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_an_answer_before_the_body_is_the_connections_last(acme, wire, case):
    method, path, keys, framing, status, code = case
    # A client that reuses the connection: its next request must not be read as body
    # bytes of the refused one (dropped, or waited on until some timeout).
    request = _head(acme, method, path, keys, framing) + _start(framing)
    body = refused_then_closed(wire, acme.raw, request, status)
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
    assert b"invalid_host" in refused_then_closed(wire, acme.raw, head + _start(OVER_CAP), 400)


def test_a_client_still_sending_reads_the_401_before_the_close(acme, wire):
    """The body keeps coming after the 401 (within the bounded drain): the client reads
    the whole answer, then the connection ends, never a reset before the answer."""
    request = _head(acme, b"POST", b"/v1/chat/completions", b"", OVER_CAP)
    head, body = answer_while_sending(wire, request)
    assert head.startswith(b"HTTP/1.1 401 ")
    assert b'"invalid_api_key"' in body


@pytest.mark.parametrize("framing", [b"", b"Content-Length: 0\r\n"])
def test_a_401_to_a_request_with_no_body_keeps_the_connection(acme, wire, framing):
    """Nothing of it is left unread: the connection carries the next request."""
    head = _head(acme, b"GET", b"/v1/models", b"Authorization: Bearer bn-wrong\r\n", framing)
    responses = answer_then_next(wire, acme.raw, head, b'"invalid_api_key"')
    assert [h.split(b" ")[1] for h, _ in responses] == [b"401", b"200"], responses
    assert not says_close(responses[0][0])
