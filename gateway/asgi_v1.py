"""/v1 as a plain ASGI app: no Django middleware, no thread hops on the hot path.

Django's handler costs several thread-pool round trips per request (middleware written
for sync code, request signals, a per-request executor); measured in docs/benchmarks.md,
it capped /v1 near 200 requests/s on one worker. Everything else still goes to Django.

The order of checks (docs/gateway.md): the Host; a CORS preflight (answered from the
Origin alone: it carries no key); then the key, on every path and method, so a wrong key
is a 401 anywhere and a valid key's request is always recorded, a 404 or 405 included;
then the body (its encoding and size), then the Gateway's own checks. The key is checked
from the headers before the body is read: without one, not a byte of a body is buffered.
"""

import asyncio
import contextlib
import gzip
import re
import time
import zlib
from collections.abc import Callable
from urllib.parse import quote

import orjson

from .dataplane import errors
from .dataplane.errors import GatewayError
from .dataplane.media import MAX_UPLOAD_BYTES, UPLOAD_ENDPOINTS
from .dataplane.proxy import Gateway, Incoming, Outgoing

# path -> endpoint. Adding an endpoint: an entry here, its method in METHODS if not POST,
# and its branch in Gateway.handle.
ROUTES = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/models": "models",
    "/v1/feedback": "feedback",  # Bonito's own: the app's rating of a request (smart routing)
    "/v1/messages": "messages",  # Anthropic's Messages API (gateway/dataplane/anthropic_api.py)
    "/v1/messages/count_tokens": "count_tokens",
    "/v1/responses": "responses",  # OpenAI's Responses API (gateway/dataplane/responses_api.py)
    # gateway/dataplane/media.py
    "/v1/images/generations": "images",
    "/v1/audio/transcriptions": "transcriptions",
    "/v1/audio/translations": "translations",
    "/v1/audio/speech": "speech",
    "/v1/moderations": "moderations",
    "/v1/rerank": "rerank",
}
# /v1/responses/{id} and /v1/responses/{id}/input_items: endpoint by method.
RESPONSE_ROUTES = {
    "": {"GET": "responses.get", "DELETE": "responses.delete"},
    "input_items": {"GET": "responses.input_items"},
}
METHODS = {"models": ("GET",), "model": ("GET",)}  # the others take POST
# Set in the scope by gateway.dataplane.http_protocol when a request's body framing broke
# (not imported: that module imports uvicorn's protocol).
BODY_BROKE = "bonito.body_broke"
# Set there too in a chunked request's scope: the sum of the chunk sizes announced so far.
BODY_ANNOUNCED = "bonito.body_announced"
# The headers a key may come in (proxy._bearer): one of them twice with different values is
# two credentials, refused rather than one of them picked (the last used to win).
CREDENTIAL_HEADERS = frozenset({"authorization", "api-key", "x-api-key"})
_SLASHES = re.compile(r"/{2,}")
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin")]

# Responses at least this long are gzipped for a client that accepts it (smaller ones
# gain less than the header costs); event streams never are (each event must go out now).
GZIP_MIN_BYTES = 1024
GZIP_LEVEL = 5  # most of level 9's gain at a fraction of its time
GZIP_OFF_LOOP_BYTES = 1024 * 1024  # bigger bodies are compressed in a thread
READ_CHUNK = 64 * 1024  # a gzip body is inflated this much at a time, never all at once
# A body that stops arriving for BODY_IDLE_S (a client that stalled), or is still arriving
# after BODY_TOTAL_S (one holding a connection open a byte at a time: a 25 MB upload takes
# under 4 minutes at 1 Mbit/s), is a 408.
BODY_IDLE_S = 30.0
BODY_TOTAL_S = 300.0
# What a browser may send in a preflight's Access-Control-Request-Headers: header names.
_HEADER_NAMES = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def header_value(value) -> bytes:
    """A response header's value as bytes a client reads back: printable ASCII without %
    as it is; anything else (an org's model or provider name in another script, a line
    break) is percent-encoded as UTF-8, as a header can carry neither (latin-1 turns é
    into a byte no client decodes, a character past U+00FF cannot be written, CR LF would
    end it), and so is a name with %: unquote gives back every name exactly (`café` and
    one named `caf%C3%A9` were the same header, and `x%41y` read back as `xAy`)."""
    text = str(value)
    if text.isascii() and text.isprintable() and "%" not in text:
        return text.encode("ascii")
    return quote(text, safe=_HEADER_SAFE).encode("ascii")


# Printable ASCII but %: what header_value leaves as it is in a value it encodes.
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def declares_body(headers) -> bool:
    """Whether the request's head says a body follows it: a Transfer-Encoding, or a
    Content-Length above 0 (the HTTP parser refused a malformed one)."""
    if "transfer-encoding" in headers:
        return True
    return headers.get("content-length", "").strip().lstrip("0") != ""


def _before_body(out: Outgoing, headers) -> Outgoing:
    """``out``, an answer given before the request's body (if it has one) was read: the
    connection's last then. Kept alive, what is left of the body (megabytes past the cap,
    a chunked body that never ends) would be read and dropped, or waited for, before the
    next request; the HTTP protocol drops a bounded amount of it before the close
    (http_protocol._Transport), so the client reads the answer instead of a reset."""
    if declares_body(headers):
        out.headers["Connection"] = "close"
    return out


def _error(status: int, message: str, code: str, extra_headers=()) -> Outgoing:
    body = orjson.dumps(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": code,
            }
        }
    )
    return Outgoing(status, body, {"Content-Type": "application/json", **dict(extra_headers)})


def accepts_gzip(value: str) -> bool:
    """Whether an Accept-Encoding header accepts gzip (`gzip`, `x-gzip` or `*`, q > 0)."""
    for item in value.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        q = params.strip().lower()
        if q.startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False


def is_v1(path: str) -> bool:
    """Whether a request is the gateway's: its path's first segment is `v1`, in any case,
    after any empty or dot segments (`//v1/models`, `/V1/models`, `/./v1`, `/v1`). Such a
    path gets the gateway's JSON answers (a 401 first without a valid key), never Django's
    HTML 404 or its redirect to add a slash."""
    if path.startswith("/v1/"):
        return True
    for segment in path.split("/"):
        if segment not in ("", ".", ".."):
            return segment.lower() == "v1"
    return False


def route_path(path: str) -> str:
    """The path the routes are looked up by: runs of slashes as one and without a trailing
    slash (`/v1//chat/completions/` is a client joining its base URL with a slash too
    many). Dot segments stay (`/v1/../admin` is no route: a 404, never another endpoint),
    as does the case (`/V1/models` is a 404)."""
    if "//" in path:
        path = _SLASHES.sub("/", path)
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return path


def read_headers(raw) -> tuple[dict, str]:
    """(the request's headers by lower-case name, the name of a credential header sent
    twice with different values or ""). A header sent more than once is its values joined
    with ", " (RFC 9110 5.3), not its last one alone."""
    headers: dict[str, str] = {}
    repeated: dict[str, list[str]] = {}  # joined once at the end: a head of thousands of
    doubled = ""  # one header must not cost a join each (quadratic)
    for k, v in raw:
        name, value = k.decode("latin-1"), v.decode("latin-1")
        if name not in headers:
            headers[name] = value
        elif name in CREDENTIAL_HEADERS:
            if value.strip() != headers[name].strip():
                doubled = doubled or name
        else:
            repeated.setdefault(name, [headers[name]]).append(value)
    for name, values in repeated.items():
        headers[name] = ", ".join(values)
    return headers, doubled


def _bodiless(send):
    """``send`` for a HEAD request: the head as GET's (its Content-Length included), no body."""

    async def bodiless(message):
        if message["type"] == "http.response.body":
            if message.get("more_body"):
                return
            message = {"type": "http.response.body", "body": b""}
        await send(message)

    return bodiless


class _BodyRefused(Exception):
    def __init__(self, error: GatewayError | None = None, too_large: bool = False):
        self.error, self.too_large = error, too_large


class _Inflater:
    """A gzip body inflated as it arrives, never past ``limit`` bytes (a gzip bomb stops
    at the limit, whatever its header or its compressed size say)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.size = 0
        self.out: list[bytes] = []
        self._d = zlib.decompressobj(wbits=31)  # gzip framing only

    def feed(self, data: bytes) -> None:
        while data:
            if self._d.eof:  # a next gzip member (concatenated gzip is still gzip)
                self._d = zlib.decompressobj(wbits=31)
            try:
                piece = self._d.decompress(data, self.limit - self.size + 1)
            except zlib.error:
                raise _BodyRefused(_corrupt()) from None
            self.size += len(piece)
            if self.size > self.limit:
                raise _BodyRefused(too_large=True)
            self.out.append(piece)
            data = self._d.unused_data if self._d.eof else self._d.unconsumed_tail

    def result(self) -> bytes:
        if not self._d.eof:
            raise _BodyRefused(_corrupt())  # cut short
        return b"".join(self.out)


def _corrupt() -> GatewayError:
    return errors.bad_request(
        "The request body is not valid gzip (Content-Encoding: gzip).", None, "invalid_encoding"
    )


class V1App:
    def __init__(
        self, fallback, max_body_bytes: int, allowed_hosts, gateway: Callable[[], Gateway]
    ):
        self.fallback = fallback  # Django (or the agent's routes), for everything that is not /v1
        self.max_body_bytes = max_body_bytes
        self.allowed_hosts = allowed_hosts
        # Returns this process's Gateway: gateway.runtime's in the control plane, the agent's
        # own in a VPC agent (this module imports no Django, so both can serve it).
        self.gateway = gateway

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not is_v1(scope["path"]):
            return await self.fallback(scope, receive, send)
        headers, doubled = read_headers(scope["headers"])
        if not self.allowed_hosts(headers.get("host", "")):
            refused = _error(400, "Invalid Host header.", "invalid_host")
            return await self._send(send, _before_body(refused, headers), headers)
        path, method = route_path(scope["path"]), scope["method"]
        # HEAD is GET without the body (uvicorn sends none either way), recorded as a GET.
        head = method == "HEAD"
        if head:
            method, send = "GET", _bodiless(send)
        if (
            method == "OPTIONS"
            and "origin" in headers
            and "access-control-request-method" in headers
        ):
            return await self._send(
                send, _before_body(await self._preflight(headers), headers), headers
            )
        if doubled:
            # Two different credentials in one request: which one is meant is unknown, so
            # neither is used (nothing is recorded: no key was established).
            ambiguous = errors.invalid_key(
                f"The request carries the {doubled} header more than once, with different "
                "values: send one key, once."
            )
            refused = await self.gateway().refuse(headers, "unknown", ambiguous)
            return await self._send(send, _before_body(refused, headers), headers)
        endpoint, model_id, resource_id = ROUTES.get(path), None, None
        if endpoint is None and path.startswith("/v1/models/") and len(path) > len("/v1/models/"):
            endpoint, model_id = "model", path[len("/v1/models/") :]
        allowed = METHODS.get(endpoint, ("POST",))
        if endpoint is None and path.startswith("/v1/responses/"):
            resource_id, _, sub = path[len("/v1/responses/") :].partition("/")
            methods = RESPONSE_ROUTES.get(sub) if resource_id else None
            if methods is not None:
                endpoint, allowed = methods.get(method, "responses.get"), tuple(methods)
        refusal, body, too_large, read = None, b"", False, False
        unread = False  # the body was refused before its end: the connection cannot go on
        if endpoint is None:
            endpoint = "unknown"
            refusal = GatewayError(
                404,
                f"Unknown path {path[:200]}. See the OpenAI API reference for supported endpoints.",
                "invalid_request_error",
                "unknown_url",
            )
        elif method not in allowed:
            shown = "HEAD" if head else method
            refusal = GatewayError(
                405,
                f"{shown} is not allowed on {path[:200]}; use {' or '.join(allowed)}.",
                "invalid_request_error",
                "method_not_allowed",
                # a GET endpoint answers HEAD too
                headers={"Allow": ", ".join(allowed + (("HEAD",) if "GET" in allowed else ()))},
            )
        elif method == "POST":
            # The key first, from the headers alone: a request without a valid key gets
            # its 401 before a byte of its body is read, so it cannot make this process
            # buffer an upload. Then the body, whose refusal (too large, bad encoding) is
            # the Gateway's answer for the valid key, recorded as usual.
            refused = await self.gateway().refuse_key(headers, endpoint)
            if refused is not None:
                return await self._send(send, _before_body(refused, headers), headers)
            # Audio uploads have their own, larger cap (OpenAI's 25 MB file and the form).
            limit = MAX_UPLOAD_BYTES if endpoint in UPLOAD_ENDPOINTS else self.max_body_bytes
            read = True
            try:
                body = await self._read_body(scope, headers, receive, limit)
            except _BodyRefused as exc:
                refusal, too_large, unread = exc.error, exc.too_large, True
            if body is None:
                return await self._gone(scope, headers, endpoint)
        if not read and "transfer-encoding" in headers:
            # A body the answer does not use (a GET's, a 404's, a 405's), sent chunked: read
            # to its end and dropped before the answer, so that a framing that breaks is the
            # 400 the client gets and the request's row says (the answer, given first, was
            # recorded and then cut by the 400). The key first, as for a POST.
            refused = await self.gateway().refuse_key(headers, endpoint)
            if refused is not None:
                return await self._send(send, _before_body(refused, headers), headers)
            try:
                if not await self._drained(scope, receive, self.max_body_bytes):
                    return await self._gone(scope, headers, endpoint)
            except _BodyRefused as exc:
                # past the cap, or too slow: answered now (a 404 or a 405 stays one)
                refusal = refusal or exc.error or errors.too_large(self.max_body_bytes)
                unread = True
        elif not read:
            # A body of a declared size the answer does not use (a GET's, a 404's, a
            # 405's): not read, so the answer is the connection's last, as below.
            unread = declares_body(headers)
        out = await self.gateway().handle(
            Incoming(
                endpoint=endpoint,
                headers=headers,
                body=body,
                model_id=model_id,
                too_large=too_large,
                refusal=refusal,
                resource_id=resource_id,
                query=scope.get("query_string", b"").decode("latin-1"),
                # the body is read: what receive() says next is the client leaving
                receive=None if unread else receive,
            )
        )
        if unread:
            # What is left of the body (all of it past a Content-Length over the cap, a
            # chunk of a terabyte) would be read as the next request on this connection,
            # or waited for: the answer is the connection's last (the HTTP protocol reads
            # and drops a bounded amount first, so the client can read it).
            out.headers["Connection"] = "close"
        if out.stream is None:
            return await self._send(send, out, headers)
        await self._stream(out, receive, send)

    async def _gone(self, scope, headers, endpoint: str) -> None:
        """The client left before sending its whole body: the key's request is still one
        usage row (a 499, as for a stream it leaves), and nothing is answered. Or the body's
        framing broke (a chunk size that is not one): the HTTP protocol answered the 400 and
        closed the connection, and marked the scope; the row is that 400."""
        gone = GatewayError(
            499,
            "The client closed the connection before sending its whole body.",
            "invalid_request_error",
            "client_disconnected",
        )
        if scope.get(BODY_BROKE):
            gone = errors.bad_request(
                "The request is not valid HTTP/1.1 (the framing of its body).",
                None,
                "invalid_http_request",
            )
        await self.gateway().handle(
            Incoming(endpoint=endpoint, headers=headers, body=b"", refusal=gone)
        )

    # ------------------------------------------------------------------ CORS
    async def _preflight(self, headers) -> Outgoing:
        """A preflight carries no key: an origin some org allows gets the go-ahead, and the
        actual response then carries Access-Control-Allow-Origin only if the key's org
        allows it (Gateway.handle), so another org's setting opens nothing of this one."""
        # Echoed in lower case, as org settings store origins (and browsers send them).
        origin, gateway = headers["origin"].lower(), self.gateway()
        if gateway.snapshots.current is None:  # a fresh process's first request
            await asyncio.to_thread(gateway.snapshots.ensure_started)
        if not gateway.origin_allowed_anywhere(origin):
            return _error(
                403,
                f"The origin {origin[:200]} is not allowed to call this gateway from a "
                "browser. An org admin adds it under Settings > Browser access (CORS).",
                "origin_not_allowed",
                {"Vary": "Origin"},
            )
        asked = headers.get("access-control-request-headers", "")
        names = [h.strip().lower() for h in asked.split(",") if h.strip()]
        allowed = ", ".join(n for n in names if _HEADER_NAMES.match(n)) or "authorization"
        return Outgoing(
            204,
            b"",
            {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": "GET, POST, DELETE",
                "Access-Control-Allow-Headers": allowed,
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )

    # ------------------------------------------------------------------ request body
    async def _read_body(self, scope, headers, receive, limit: int) -> bytes | None:
        """The body, inflated if it is gzip; None if the client left. Raises _BodyRefused:
        too large (sent or inflated), an encoding other than gzip, broken gzip."""
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            inflater = _Inflater(limit)
        elif encoding in ("identity", ""):
            inflater = None
        else:
            raise _BodyRefused(
                GatewayError(
                    415,
                    f"Content-Encoding {encoding[:40]!r} is not supported; send the body as "
                    "it is or gzip-compressed (Content-Encoding: gzip).",
                    "invalid_request_error",
                    "unsupported_encoding",
                )
            )
        coding = headers.get("transfer-encoding")
        if coding is not None and coding.strip().lower() != "chunked":
            # The server framed the body by its last coding, chunked; any other (gzip,
            # compress…) would be taken for the body itself.
            raise _BodyRefused(
                errors.bad_request(
                    f"Transfer-Encoding {coding[:40]!r} is not supported: send the body as it "
                    "is or chunked (Content-Encoding: gzip compresses it).",
                    None,
                    "unsupported_transfer_encoding",
                )
            )
        declared = headers.get("content-length")
        if declared is not None:
            declared = declared.strip()  # optional whitespace around a value is not part of it
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise _BodyRefused(too_large=True)  # the rest of the body is never read
        chunks = []
        async with contextlib.aclosing(self._body(scope, receive, limit)) as pieces:
            async for chunk in pieces:
                if chunk is None:
                    return None
                if inflater is None:
                    chunks.append(chunk)
                else:
                    for i in range(0, len(chunk), READ_CHUNK):
                        inflater.feed(chunk[i : i + READ_CHUNK])
        return b"".join(chunks) if inflater is None else inflater.result()

    async def _drained(self, scope, receive, limit: int) -> bool:
        """The body read to its end and dropped: False if the client left (or its framing
        broke). Raises _BodyRefused as _body does."""
        async with contextlib.aclosing(self._body(scope, receive, limit)) as pieces:
            async for chunk in pieces:
                if chunk is None:
                    return False
        return True

    @staticmethod
    async def _body(scope, receive, limit: int):
        """The body's pieces as they arrive, then None if the client left before its end.
        Raises _BodyRefused: past ``limit``, sent or announced (a chunk's size, read by the
        HTTP protocol before the chunk arrives: a chunk of a terabyte was waited for), or
        too slow (408)."""
        size = 0
        deadline = time.monotonic() + BODY_TOTAL_S
        while True:
            try:
                wait = min(BODY_IDLE_S, max(0.0, deadline - time.monotonic()))
                message = await asyncio.wait_for(receive(), wait)
            except TimeoutError:
                raise _BodyRefused(
                    GatewayError(
                        408,
                        f"The request body took too long to arrive (nothing for "
                        f"{BODY_IDLE_S:.0f} s, or not whole after {BODY_TOTAL_S:.0f} s).",
                        "invalid_request_error",
                        "request_timeout",
                    )
                ) from None
            if message["type"] == "http.disconnect":
                yield None
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit or scope.get(BODY_ANNOUNCED, 0) > limit:
                raise _BodyRefused(too_large=True)
            yield chunk
            if not message.get("more_body"):
                return

    # ------------------------------------------------------------------ responses
    @staticmethod
    def _start(out: Outgoing) -> dict:
        raw = [(k.lower().encode("latin-1"), header_value(v)) for k, v in out.headers.items()]
        if out.stream is None:
            raw.append((b"content-length", str(len(out.body)).encode()))
        return {
            "type": "http.response.start",
            "status": out.status,
            "headers": raw + SECURITY_HEADERS,
        }

    async def _send(self, send, out: Outgoing, request_headers=None):
        if len(out.body) >= GZIP_MIN_BYTES and "Content-Encoding" not in out.headers:
            out.headers["Vary"] = ", ".join(
                v for v in (out.headers.get("Vary"), "Accept-Encoding") if v
            )
            if accepts_gzip((request_headers or {}).get("accept-encoding", "")):
                if len(out.body) >= GZIP_OFF_LOOP_BYTES:
                    out.body = await asyncio.to_thread(gzip.compress, out.body, GZIP_LEVEL, mtime=0)
                else:
                    out.body = gzip.compress(out.body, GZIP_LEVEL, mtime=0)
                out.headers["Content-Encoding"] = "gzip"
        await send(self._start(out))
        await send({"type": "http.response.body", "body": out.body})

    async def _stream(self, out: Outgoing, receive, send):
        async def relay():
            async with contextlib.aclosing(out.stream) as chunks:
                # The first piece is asked for before the head goes out: the stream is then
                # running, so however the relay ends (a head that cannot be written, the
                # client gone while it waits to be) its own end records the request's row
                # and closes the upstream. Closing a stream that never ran did neither.
                first = await anext(chunks, None)
                await send(self._start(out))
                if first is not None:
                    await send({"type": "http.response.body", "body": first, "more_body": True})
                    async for chunk in chunks:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})

        async def client_gone():
            while (await receive())["type"] != "http.disconnect":
                pass

        relaying = asyncio.ensure_future(relay())
        watching = asyncio.ensure_future(client_gone())
        done, _pending = await asyncio.wait(
            {relaying, watching}, return_when=asyncio.FIRST_COMPLETED
        )
        if relaying in done:
            watching.cancel()
            relaying.result()
            return
        # The client went away: cancel the relay, which cancels the upstream call and
        # records the partial usage.
        relaying.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relaying
