"""What an attacker (or a broken client) can put on the /v1 wire, served by the HTTP
protocol `make serve` runs (httptools, gateway.dataplane.http_protocol): smuggling framings,
folded headers, odd methods, absurd or undecodable paths, queries and header values, empty
or doubled Hosts. Each is a clear 4xx in OpenAI's shape (or served, when it is valid HTTP),
answered at once, never a 500 or a hang; a valid key's request is one usage row."""

import orjson
import pytest

from gateway.tests.conftest import usage_rows
from gateway.tests.test_v1_edges_paths import send_raw

BODY = orjson.dumps(
    {"model": "chat-small", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
)


def post(acme, *headers: bytes, body: bytes = BODY, path=b"/v1/chat/completions") -> bytes:
    """A POST written by hand: the key, then ``headers`` (each a whole line), then ``body``."""
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + acme.raw.encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        + b"".join(h + b"\r\n" for h in headers)
        + b"Connection: close\r\n\r\n"
        + body
    )


def length(body=BODY) -> bytes:
    return b"Content-Length: " + str(len(body)).encode()


def chunked(body=BODY) -> bytes:
    return b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"


def _error(status, body, code):
    __tracebackhide__ = True
    assert status == code[0], (status, body[:300])
    assert orjson.loads(body)["error"]["code"] == code[1]


# ------------------------------------------------------------------- refused by the parser
UNPARSEABLE = {
    "two equal Content-Lengths": lambda a: post(a, length(), length()),
    "two different Content-Lengths": lambda a: post(a, length(), b"Content-Length: 5"),
    "Transfer-Encoding and Content-Length": lambda a: post(
        a, b"Content-Length: 5", b"Transfer-Encoding: chunked", body=chunked()
    ),
    "a folded header": lambda a: post(a, length(), b"X-Note: a", b"  b"),
    "a folded Authorization": lambda a: (
        b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer\r\n "
        + a.raw.encode()
        + b"\r\nConnection: close\r\n\r\n"
    ),
    "a negative Content-Length": lambda a: post(a, b"Content-Length: -1"),
    "a method that is not one": lambda a: post(a, length()).replace(b"POST", b"FOO", 1),
    "a lower-case method": lambda a: post(a, length()).replace(b"POST", b"post", 1),
    "a method that is not ASCII": lambda a: post(a, length()).replace(b"POST", b"P\xffST", 1),
    "a path that is not ASCII": lambda a: post(a, length(), path=b"/v1/chat/\xff\xfe"),
    "a query that is not ASCII": lambda a: post(a, length(), path=b"/v1/models?\xff=1"),
    "a space before a header's colon": lambda a: post(a, length(), b"X-Note : 1"),
}


@pytest.mark.parametrize("case", UNPARSEABLE)
def test_what_http_cannot_parse_is_a_json_400_and_nothing_recorded(acme, wire, case):
    status, headers, body = send_raw(wire, UNPARSEABLE[case](acme))
    _error(status, body, (400, "invalid_http_request"))
    assert headers["content-type"] == "application/json"
    assert usage_rows() == [] and acme.fake.requests == []


# ----------------------------------------------------------- parsed, then refused or served
@pytest.mark.parametrize("coding", [b"gzip, chunked", b"deflate, chunked"])
def test_a_transfer_coding_other_than_chunked_is_a_400_and_one_row(acme, wire, coding):
    """httptools removes the chunked framing and leaves a gzip coding before it in the
    body: the gateway took the coded bytes for the body itself."""
    status, _headers, body = send_raw(
        wire, post(acme, b"Transfer-Encoding: " + coding, body=chunked())
    )
    _error(status, body, (400, "unsupported_transfer_encoding"))
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status) == ("rejected", 400)
    assert acme.fake.requests == []


def test_a_content_length_with_spaces_around_it_is_read(acme, wire):
    """It was a 413 (the spaces made it "not a number", taken as too large)."""
    value = str(len(BODY)).encode()
    status, _headers, body = send_raw(wire, post(acme, b"Content-Length:  " + value + b"  "))
    assert status == 200, body[:300]
    [row] = usage_rows(acme.org)
    assert row.status == "success"


@pytest.mark.parametrize(
    "framing", [lambda: [length()], lambda: [b"Transfer-Encoding: chunked"]], ids=["length", "te"]
)
def test_plain_framings_are_served(acme, wire, framing):
    body = BODY if framing()[0].startswith(b"Content") else chunked()
    status, _headers, answer = send_raw(wire, post(acme, *framing(), body=body))
    assert status == 200, answer[:300]


@pytest.mark.parametrize(
    "hosts", [[b""], [], [b"127.0.0.1", b"evil.example"], [b"evil.example", b"127.0.0.1"]]
)
def test_an_empty_missing_or_doubled_host_is_a_400(acme, wire, hosts):
    request = (
        b"GET /v1/models HTTP/1.1\r\n"
        + b"".join(b"Host: " + h + b"\r\n" for h in hosts)
        + b"Authorization: Bearer "
        + acme.raw.encode()
        + b"\r\nConnection: close\r\n\r\n"
    )
    status, _headers, body = send_raw(wire, request)
    _error(status, body, (400, "invalid_host"))


def test_two_authorization_headers_are_a_401(acme, wire):
    request = (
        b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer bn-forged\r\n"
        b"Authorization: Bearer " + acme.raw.encode() + b"\r\nConnection: close\r\n\r\n"
    )
    status, _headers, body = send_raw(wire, request)
    _error(status, body, (401, "invalid_api_key"))
    assert usage_rows() == []


@pytest.mark.parametrize("method", [b"PROPFIND", b"TRACE", b"PUT", b"PATCH", b"DELETE"])
def test_a_method_no_endpoint_takes_is_a_405_and_one_row(acme, wire, method):
    status, _headers, body = send_raw(wire, post(acme, length()).replace(b"POST", method, 1))
    _error(status, body, (405, "method_not_allowed"))
    [row] = usage_rows(acme.org)
    assert row.http_status == 405


def test_a_header_value_that_is_not_utf8_is_no_500(acme, wire):
    """Header values are read as Latin-1: bytes that are not UTF-8 are odd text, not a
    crash. A key with them is no key; a request id with them is replaced by a new one."""
    status, _headers, body = send_raw(
        wire,
        b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \xff\xfe\r\n"
        b"Connection: close\r\n\r\n",
    )
    _error(status, body, (401, "invalid_api_key"))
    status, headers, body = send_raw(
        wire, post(acme, length(), b"X-Request-Id: \xff\xfe", b"Origin: http://\xe9.example")
    )
    assert status == 200, body[:300]
    assert headers["x-request-id"].startswith("req_")
    [row] = usage_rows(acme.org)
    assert row.request_id == headers["x-request-id"]


def test_a_long_query_is_ignored_and_an_absurd_one_is_a_4xx(acme, wire):
    query = b"a=1&" * 10_000  # 40 KB
    status, _headers, body = send_raw(
        wire,
        b"GET /v1/models?"
        + query
        + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
        + acme.raw.encode()
        + b"\r\nConnection: close\r\n\r\n",
    )
    assert status == 200, body[:300]
    status, _headers, body = send_raw(
        wire,
        b"GET /v1/models?" + query * 2 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Connection: close\r\n\r\n",
    )
    # past 64 KiB: httptools cannot parse the URL (a 400), or the head is too large (431)
    assert status in (400, 431) and orjson.loads(body)["error"]["code"] in (
        "invalid_http_request",
        "request_headers_too_large",
    )
    assert len(usage_rows(acme.org)) == 1


@pytest.mark.parametrize("path", [b"/v1/%ff%fe", b"/v1/chat/completions%00", b"/v1/models/%ff"])
def test_a_percent_encoded_path_that_is_not_utf8_is_a_404_and_one_row(acme, wire, path):
    status, _headers, body = send_raw(
        wire,
        b"GET "
        + path
        + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
        + acme.raw.encode()
        + b"\r\nConnection: close\r\n\r\n",
    )
    assert status == 404, body[:300]
    assert orjson.loads(body)["error"]["code"] in ("unknown_url", "model_not_found")
    [row] = usage_rows(acme.org)
    assert row.http_status == 404
