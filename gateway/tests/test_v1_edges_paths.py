"""Paths that are /v1's but not spelled as its routes (a doubled or trailing slash, another
case, dot segments, no slash after v1) get the gateway's JSON answers, the key checked
first, never Django's HTML 404 or its redirect; HEAD on a GET endpoint is its GET without
the body. Sent as a client sends them, on a raw connection (httpx would clean them)."""

import socket

import httpx
import orjson
import pytest

from gateway.tests.conftest import usage_rows
from gateway.tests.openai_schema import assert_openai_schema


def send_raw(url: str, request: bytes) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one request written as it is on a new connection."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(request)
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def get(url, path: bytes, key=None, method=b"GET") -> tuple[int, dict, bytes]:
    auth = b"Authorization: Bearer " + key.encode() + b"\r\n" if key else b""
    return send_raw(
        url,
        method
        + b" "
        + path
        + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + auth
        + b"Connection: close\r\n\r\n",
    )


# path as sent -> what a valid key gets: the endpoint it names, or a JSON 404
ROUTED = [
    (b"//v1/models", "list"),
    (b"/v1//models", "list"),
    (b"//v1//models", "list"),
    (b"/v1/models/", "list"),
    (b"/v1/models//", "list"),
    (b"/v1/models/chat-small/", "model"),
    (b"/v1//models/chat-small", "model"),
]
NOT_FOUND = [
    b"/V1/models",
    b"/v1",
    b"/V1",
    b"/v1/",
    b"/./v1/models",
    b"/v1/./models",
    b"/v1/%2e%2e/admin/",
    b"/v1/../admin/",
    b"/v1/%2E%2E/%2E%2E/admin/login/",
    b"/v1/models%00",
    b"/v1/%ff%fe",
]


@pytest.mark.parametrize("path", [p for p, _ in ROUTED] + NOT_FOUND)
def test_a_v1_path_without_a_valid_key_is_a_json_401(acme, path):
    for key in (None, "bn-not-a-key"):
        status, headers, body = get(acme.url, path, key)
        assert status == 401, (path, status, body[:200])
        assert headers["content-type"] == "application/json"
        assert orjson.loads(body)["error"]["code"] == "invalid_api_key"
    assert usage_rows() == []


@pytest.mark.parametrize("path,answer", ROUTED)
def test_a_doubled_or_trailing_slash_reaches_the_endpoint(acme, path, answer):
    status, _headers, body = get(acme.url, path, acme.raw)
    assert status == 200, (path, body[:300])
    data = orjson.loads(body)
    if answer == "list":
        assert "chat-small" in [m["id"] for m in data["data"]]
    else:
        assert data["id"] == "chat-small"
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status) == ("success", 200)


def test_a_chat_request_on_a_doubled_slash_is_served(acme):
    """A base URL with a trailing slash joined to `/chat/completions` by a client."""
    body = orjson.dumps({"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]})
    status, _headers, answer = send_raw(
        acme.url,
        b"POST /v1//chat/completions/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + acme.raw.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body,
    )
    assert status == 200, answer[:300]
    assert orjson.loads(answer)["object"] == "chat.completion"
    [row] = usage_rows(acme.org)
    assert (row.status, row.endpoint) == ("success", "chat")


@pytest.mark.parametrize("path", NOT_FOUND)
def test_other_spellings_are_a_json_404_and_one_row(acme, path):
    status, headers, body = get(acme.url, path, acme.raw)
    assert status == 404, (path, status, body[:200])
    assert headers["content-type"] == "application/json"
    error = orjson.loads(body)
    assert_openai_schema(error, "ErrorResponse")
    assert error["error"]["code"] in ("unknown_url", "model_not_found")
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status) == ("rejected", 404)
    assert acme.fake.requests == []


@pytest.mark.parametrize("path", [b"/v1foo", b"/v10/models", b"/admin/login/"])
def test_paths_that_are_not_v1_still_go_to_django(acme, path):
    status, headers, _body = get(acme.url, path)
    assert status != 401 and "application/json" not in headers.get("content-type", "")


# ---------------------------------------------------------------------------------- HEAD
@pytest.mark.parametrize("path", ["/v1/models", "/v1/models/chat-small"])
def test_head_on_a_get_endpoint_is_its_get_without_a_body(acme, path):
    got = httpx.get(acme.url + path, headers={"Authorization": f"Bearer {acme.raw}"})
    head = httpx.head(acme.url + path, headers={"Authorization": f"Bearer {acme.raw}"})
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == "application/json"
    assert head.headers["content-length"] == got.headers["content-length"]
    rows = usage_rows(acme.org)
    assert [(r.status, r.http_status) for r in rows] == [("success", 200)] * 2


def test_head_on_a_raw_connection_sends_no_body(acme):
    status, headers, body = get(acme.url, b"/v1/models", acme.raw, method=b"HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0


def test_head_without_a_key_is_a_401_without_a_body(acme):
    head = httpx.head(acme.url + "/v1/models")
    assert head.status_code == 401 and head.content == b""
    assert usage_rows() == []


@pytest.mark.parametrize(
    "path,status", [("/v1/chat/completions", 405), ("/v1/nope", 404), ("/v1/feedback", 405)]
)
def test_head_elsewhere_is_the_status_get_would_get(acme, path, status):
    head = httpx.head(acme.url + path, headers={"Authorization": f"Bearer {acme.raw}"})
    assert head.status_code == status and head.content == b""
    if status == 405:
        assert head.headers["allow"] == "POST"
    [row] = usage_rows(acme.org)
    assert row.http_status == status


def test_a_get_endpoint_allows_head_too(acme):
    response = httpx.post(acme.url + "/v1/models", headers={"Authorization": f"Bearer {acme.raw}"})
    assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"
