"""/v1 as a plain ASGI app: no Django middleware, no thread hops on the hot path.

Django's handler costs several thread-pool round trips per request (middleware written
for sync code, request signals, a per-request executor); measured in docs/benchmarks.md,
it capped /v1 near 200 requests/s on one worker. Everything else still goes to Django.
"""

import asyncio
import contextlib
from collections.abc import Callable

import orjson

from .dataplane.media import MAX_UPLOAD_BYTES, UPLOAD_ENDPOINTS
from .dataplane.proxy import Gateway, Incoming, Outgoing

ROUTES = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/models": "models",
    "/v1/feedback": "feedback",  # Bonito's own: the app's rating of a request (smart routing)
    # gateway/dataplane/media.py
    "/v1/images/generations": "images",
    "/v1/audio/transcriptions": "transcriptions",
    "/v1/audio/translations": "translations",
    "/v1/audio/speech": "speech",
    "/v1/moderations": "moderations",
    "/v1/rerank": "rerank",
}
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin")]


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
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.fallback(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if not self.allowed_hosts(headers.get("host", "")):
            return await self._send(send, _error(400, "Invalid Host header.", "invalid_host"))
        path, method = scope["path"], scope["method"]
        endpoint, model_id = ROUTES.get(path), None
        if endpoint is None and path.startswith("/v1/models/") and len(path) > len("/v1/models/"):
            endpoint, model_id = "model", path[len("/v1/models/") :]
        if endpoint is None:
            return await self._send(
                send,
                _error(
                    404,
                    f"Unknown path {path[:200]}. See the OpenAI API reference for supported endpoints.",
                    "unknown_url",
                ),
            )
        wanted = "GET" if endpoint in ("models", "model") else "POST"
        if method != wanted:
            return await self._send(
                send,
                _error(
                    405,
                    f"{method} is not allowed on {path}; use {wanted}.",
                    "method_not_allowed",
                    {"Allow": wanted},
                ),
            )
        body, too_large = b"", False
        if wanted == "POST":
            # Audio uploads have their own, larger cap (OpenAI's 25 MB file and the form).
            limit = MAX_UPLOAD_BYTES if endpoint in UPLOAD_ENDPOINTS else self.max_body_bytes
            body, too_large = await self._read_body(headers, receive, limit)
            if body is None:
                return  # the client left before sending its body
        out = await self.gateway().handle(
            Incoming(
                endpoint=endpoint,
                headers=headers,
                body=body,
                model_id=model_id,
                too_large=too_large,
            )
        )
        if out.stream is None:
            return await self._send(send, out)
        await self._stream(out, receive, send)

    async def _read_body(self, headers, receive, limit: int):
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return b"", True  # refused before reading; the rest of the body is never read
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, False
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return b"", True
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks), False

    @staticmethod
    def _start(out: Outgoing) -> dict:
        raw = [
            (k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in out.headers.items()
        ]
        if out.stream is None:
            raw.append((b"content-length", str(len(out.body)).encode()))
        return {
            "type": "http.response.start",
            "status": out.status,
            "headers": raw + SECURITY_HEADERS,
        }

    async def _send(self, send, out: Outgoing):
        await send(self._start(out))
        await send({"type": "http.response.body", "body": out.body})

    async def _stream(self, out: Outgoing, receive, send):
        async def relay():
            async with contextlib.aclosing(out.stream) as chunks:
                await send(self._start(out))
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
