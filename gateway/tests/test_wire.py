"""The /v1 wire: the key is checked first on every path and method, every request with a
valid key is one usage row (a 404 and a 405 included), gzip bodies in and out."""

import contextlib
import gzip
import time
import zlib

import httpx
import openai
import orjson
import pytest

from gateway.tests.conftest import usage_rows
from gateway.tests.openai_schema import assert_openai_schema

CHAT = {"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]}


def _auth(raw):
    return {"Authorization": f"Bearer {raw}"}


UNKNOWN = [
    ("GET", "/v1/"),
    ("POST", "/v1/chat"),
    ("POST", "/v1/responses-not-here"),
    ("GET", "/v1/chat/completions/extra"),
    ("DELETE", "/v1/files/file-123"),
    ("POST", "/v1/" + "x" * 5000),
]
WRONG_METHOD = [
    ("GET", "/v1/chat/completions"),
    ("PUT", "/v1/completions"),
    ("DELETE", "/v1/embeddings"),
    ("POST", "/v1/models"),
    ("PATCH", "/v1/models/chat-small"),
    ("GET", "/v1/feedback"),
    ("OPTIONS", "/v1/chat/completions"),  # not a preflight: no Origin
]


@pytest.mark.parametrize("method,path", UNKNOWN + WRONG_METHOD)
def test_it_refuses_a_wrong_key_with_401_on_any_path_and_records_nothing(acme, method, path):
    for headers in ({}, _auth("bn-not-a-key"), _auth("sk-wrong")):
        response = httpx.request(method, acme.url + path, headers=headers, timeout=30)
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert_openai_schema(response.json(), "ErrorResponse")
    assert usage_rows() == []


@pytest.mark.parametrize("method,path", UNKNOWN)
def test_it_answers_a_valid_key_on_an_unknown_path_with_404_and_one_row(acme, method, path):
    response = httpx.request(method, acme.url + path, headers=_auth(acme.raw), timeout=30)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_url"
    assert_openai_schema(response.json(), "ErrorResponse")
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status, row.endpoint) == ("rejected", 404, "unknown")
    assert row.key_id == acme.key.id and acme.fake.requests == []


@pytest.mark.parametrize("method,path", WRONG_METHOD)
def test_it_answers_a_valid_key_with_a_wrong_method_with_405_and_one_row(acme, method, path):
    response = httpx.request(method, acme.url + path, headers=_auth(acme.raw), timeout=30)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response.headers["allow"] in ("GET, HEAD", "POST")
    assert_openai_schema(response.json(), "ErrorResponse")
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status) == ("rejected", 405)


def test_the_openai_sdk_raises_its_usual_errors_for_unknown_paths(acme):
    client = openai.OpenAI(base_url=acme.base_url, api_key=acme.raw, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.get("/nope", cast_to=object)
    bad = openai.OpenAI(base_url=acme.base_url, api_key="bn-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.get("/nope", cast_to=object)
    assert len(usage_rows(acme.org)) == 1


# ---------------------------------------------------------------- gzip request bodies
def _post_raw(acme, content: bytes, key=None, **headers):
    return httpx.post(
        acme.url + "/v1/chat/completions",
        content=content,
        headers={**_auth(key or acme.raw), "Content-Type": "application/json", **headers},
        timeout=60,
    )


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "GZIP"])
def test_it_accepts_a_gzip_body(acme, encoding):
    response = _post_raw(acme, gzip.compress(orjson.dumps(CHAT)), **{"Content-Encoding": encoding})
    assert response.status_code == 200, response.text
    assert acme.fake.requests[-1]["body"]["messages"] == CHAT["messages"]
    [row] = usage_rows(acme.org)
    assert row.status == "success"


def test_it_accepts_concatenated_gzip_members(acme):
    raw = orjson.dumps(CHAT)
    body = gzip.compress(raw[:10]) + gzip.compress(raw[10:])
    response = _post_raw(acme, body, **{"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text


def _deflate_stream(total_zeros: int, prefix: bytes = b"") -> bytes:
    """A gzip body of ``prefix`` and then zeros, compressed without holding it inflated."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [c.compress(prefix)]
    block = b"\0" * (1024 * 1024)
    for _ in range(total_zeros // len(block)):
        out.append(c.compress(block))
    out.append(c.compress(b"\0" * (total_zeros % len(block))))
    out.append(c.flush())
    return b"".join(out)


@pytest.mark.parametrize(
    "zeros_mb,prefix",
    [
        (10, b""),  # 10 MB of zeros: over the 10 MB limit once inflated, ~10 KB sent
        (64, b'{"model": "chat-small", "messages": [{"role": "user", "content": "'),
        (1024, b""),  # a 1 GB bomb: refused at the limit, never inflated whole
    ],
)
def test_a_gzip_body_that_inflates_past_the_limit_gets_413(acme, settings, zeros_mb, prefix):
    bomb = _deflate_stream(zeros_mb * 1024 * 1024 + 1, prefix)
    assert len(bomb) < 2 * 1024 * 1024  # small as sent: only the inflated size is too large
    response = _post_raw(acme, bomb, **{"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert_openai_schema(response.json(), "ErrorResponse")
    assert acme.fake.requests == []
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status) == ("rejected", 413)


def test_a_gzip_body_inflating_just_under_the_limit_is_read(acme, gw):
    text = "a" * (gw.max_body_bytes - 200)
    body = orjson.dumps({**CHAT, "messages": [{"role": "user", "content": text}]})
    assert len(body) <= gw.max_body_bytes
    response = _post_raw(acme, gzip.compress(body), **{"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text[:300]


@pytest.mark.parametrize(
    "body",
    [
        b"not gzip at all",
        gzip.compress(orjson.dumps(CHAT))[:-12],  # cut short
        gzip.compress(orjson.dumps(CHAT))[:10],  # the header only
        b"",
        gzip.compress(orjson.dumps(CHAT)) + b"trailing garbage",
        b"\x1f\x8b\x08\x00" + b"\xff" * 100,  # a gzip header, then garbage
    ],
    ids=[
        "not-gzip",
        "cut-short",
        "header-only",
        "empty",
        "trailing-garbage",
        "garbage-after-header",
    ],
)
def test_a_corrupt_gzip_body_gets_400(acme, body):
    response = _post_raw(acme, body, **{"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_encoding"
    assert_openai_schema(response.json(), "ErrorResponse")
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status) == ("rejected", 400)


@pytest.mark.parametrize("encoding", ["br", "deflate", "zstd", "gzip, br", "compress"])
def test_an_unsupported_encoding_gets_415(acme, encoding):
    response = _post_raw(acme, orjson.dumps(CHAT), **{"Content-Encoding": encoding})
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_encoding"
    assert_openai_schema(response.json(), "ErrorResponse")
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status) == ("rejected", 415)


@pytest.mark.parametrize("body", [b"not gzip", _deflate_stream(11 * 1024 * 1024)])
def test_a_bad_body_with_a_wrong_key_is_a_401_first(acme, body):
    response = _post_raw(acme, body, key="bn-wrong", **{"Content-Encoding": "gzip"})
    assert response.status_code == 401
    response = _post_raw(acme, body, key="bn-wrong", **{"Content-Encoding": "br"})
    assert response.status_code == 401
    assert usage_rows() == []


# ---------------------------------------------------------------- gzip responses
def _embed_many(acme, n=40, **headers):
    return httpx.post(
        acme.base_url + "/embeddings",
        json={"model": "embed-small", "input": [f"text {i}" for i in range(n)]},
        headers={**_auth(acme.raw), **headers},
        timeout=30,
    )


def test_a_large_response_is_gzipped_for_a_client_that_accepts_it(acme):
    response = _embed_many(acme, **{"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in response.headers["vary"]
    # httpx inflated it; the wire carried fewer bytes than the body
    assert int(response.headers["content-length"]) < len(response.content)
    assert len(response.json()["data"]) == 40


@pytest.mark.parametrize("accept", ["identity", "", "gzip;q=0", "br", "deflate"])
def test_a_response_is_not_gzipped_for_a_client_that_does_not_accept_it(acme, accept):
    response = _embed_many(acme, **{"Accept-Encoding": accept})
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert int(response.headers["content-length"]) == len(response.content)
    assert "Accept-Encoding" in response.headers["vary"]


def test_a_small_response_is_not_gzipped(acme):
    response = httpx.post(
        acme.base_url + "/chat/completions",
        json=CHAT,
        headers={**_auth(acme.raw), "Accept-Encoding": "gzip"},
        timeout=30,
    )
    assert response.status_code == 200 and len(response.content) < 1024
    assert "content-encoding" not in response.headers


def test_an_event_stream_is_never_gzipped(acme):
    with httpx.stream(
        "POST",
        acme.base_url + "/chat/completions",
        json={**CHAT, "stream": True},
        headers={**_auth(acme.raw), "Accept-Encoding": "gzip"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert "content-encoding" not in response.headers
        raw = b"".join(response.iter_raw())
    assert raw.startswith(b"data: ") and raw.endswith(b"data: [DONE]\n\n")


def test_the_openai_sdk_reads_gzipped_responses(acme):
    client = openai.OpenAI(base_url=acme.base_url, api_key=acme.raw, max_retries=0)
    raw = client.embeddings.with_raw_response.create(
        model="embed-small", input=[f"text {i}" for i in range(40)]
    )
    assert raw.headers["content-encoding"] == "gzip"
    result = raw.parse()
    assert len(result.data) == 40 and result.data[0].embedding
    models = client.models.list()
    assert {m.id for m in models.data} >= {"chat-small", "embed-small"}


# ---------------------------------------------------------------- the key before the body
def _refused_keys(acme):
    """Every kind of key that is not valid, as Authorization headers ({} = no header)."""
    from datetime import timedelta

    from django.utils import timezone

    from gateway import services
    from gateway.models import ApiKey
    from gateway.tests.conftest import ACTOR, refresh_snapshot

    revoked, revoked_raw = services.api_key_create(actor=ACTOR, org=acme.org, name="revoked")
    services.api_key_revoke(actor=ACTOR, key=revoked)
    expired, expired_raw = services.api_key_create(
        actor=ACTOR, org=acme.org, name="expired", expires_at="2999-01-01"
    )
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(days=1))
    refresh_snapshot()
    return [
        {},
        _auth("bn-not-a-key"),
        _auth(acme.raw[:-2] + "xx"),
        {"Authorization": "Basic Zm9vOmJhcg=="},
        _auth(revoked_raw),
        _auth(expired_raw),
    ]


def _asgi_post(app, path, headers, body_chunks):
    """POST through the /v1 ASGI app with a receive() that counts the body bytes the app
    pulls: (status, response body, bytes read)."""
    import asyncio

    state = {"read": 0, "sent": []}
    chunks = list(body_chunks)

    async def receive():
        if not chunks:
            return {"type": "http.disconnect"}
        chunk = chunks.pop(0)
        state["read"] += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message):
        state["sent"].append(message)

    scope = {
        "type": "http",
        "path": path,
        "method": "POST",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in state["sent"] if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in state["sent"] if m["type"] == "http.response.body")
    return start["status"], body, state["read"]


def _v1_app(gw):
    from gateway.asgi_v1 import V1App

    return V1App(None, gw.max_body_bytes, lambda host: True, lambda: gw)


@pytest.mark.parametrize(
    "path", ["/v1/audio/transcriptions", "/v1/chat/completions", "/v1/messages", "/v1/embeddings"]
)
def test_a_request_without_a_valid_key_is_refused_before_a_body_byte_is_read(acme, gw, path):
    app = _v1_app(gw)
    big = [b"x" * (1024 * 1024)] * 9  # 9 MB offered, under both caps
    for headers in _refused_keys(acme):
        for encoding in ({}, {"Content-Encoding": "gzip"}):
            status, body, read = _asgi_post(
                app, path, {"host": "testserver", **headers, **encoding}, big
            )
            assert (status, read) == (401, 0), (headers, encoding, status, read)
            error = orjson.loads(body)["error"]  # OpenAI's shape, or Anthropic's on /messages
            assert error["type"] in ("invalid_request_error", "authentication_error")
    assert usage_rows() == []
    # The control: a valid key's body is read, all of it (not JSON nor a form: a 400, recorded).
    status, _body, read = _asgi_post(app, path, {"host": "testserver", **_auth(acme.raw)}, big)
    assert (status, read) == (400, 9 * 1024 * 1024)
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status) == ("rejected", 400)


def _raw_http(acme, head: bytes, timeout=20) -> bytes:
    """Send only a request's head on a real socket, then read the answer (the body is
    never sent: an app that waits for it never answers)."""
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(acme.url)
    with socket.create_connection((where.hostname, where.port), timeout=timeout) as sock:
        sock.sendall(head)
        answer = b""
        while b"\r\n\r\n" not in answer:
            piece = sock.recv(65536)
            if not piece:
                break
            answer += piece
        return answer


@pytest.mark.parametrize(
    "framing",
    [b"Content-Length: 20000000\r\n", b"Transfer-Encoding: chunked\r\n"],
    ids=["content-length", "chunked"],
)
@pytest.mark.parametrize("auth", [b"", b"Authorization: Bearer bn-not-a-valid-key\r\n"])
def test_a_real_client_without_a_key_gets_its_401_before_sending_its_body(acme, framing, auth):
    host = acme.url.removeprefix("http://").encode()
    head = (
        b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: "
        + host
        + b"\r\n"
        + auth
        + framing
        + b"Content-Type: multipart/form-data; boundary=xyz\r\n\r\n"
    )
    answer = _raw_http(acme, head)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert usage_rows() == []


def _partial_body(acme, sent: bytes, declared: int) -> bytes:
    host = acme.url.removeprefix("http://").encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: "
        + host
        + b"\r\nAuthorization: Bearer "
        + acme.raw.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(declared).encode()
        + b"\r\n\r\n"
        + sent
    )


def test_a_valid_key_whose_client_leaves_mid_body_is_one_499_row(acme):
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(acme.url)
    with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
        sock.sendall(_partial_body(acme, b'{"model": ', 58))
    deadline = time.monotonic() + 10
    while not (rows := usage_rows(acme.org)) and time.monotonic() < deadline:
        time.sleep(0.05)
    [row] = rows
    assert (row.http_status, row.error_type) == (499, "client_disconnected")
    assert acme.fake.requests == []


def test_a_body_that_stops_arriving_is_a_408(acme, monkeypatch):
    from gateway import asgi_v1

    monkeypatch.setattr(asgi_v1, "BODY_IDLE_S", 0.5)
    answer = _raw_http(acme, _partial_body(acme, b'{"model": ', 58), timeout=10)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    [row] = usage_rows(acme.org)
    assert (row.http_status, row.error_type) == (408, "request_timeout")


def test_a_body_dripped_a_byte_at_a_time_is_a_408_at_the_deadline(acme, monkeypatch):
    import socket
    from urllib.parse import urlsplit

    from gateway import asgi_v1

    monkeypatch.setattr(asgi_v1, "BODY_TOTAL_S", 1.0)
    where = urlsplit(acme.url)
    with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
        sock.sendall(_partial_body(acme, b"{", 58))
        answer, started = b"", time.monotonic()
        sock.settimeout(0.2)
        while b"\r\n\r\n" not in answer and time.monotonic() - started < 8:
            with contextlib.suppress(OSError):
                sock.sendall(b" ")  # well within the idle bound, never whole
            try:
                answer += sock.recv(65536)
            except TimeoutError:
                continue
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    [row] = usage_rows(acme.org)
    assert (row.http_status, row.error_type) == (408, "request_timeout")
