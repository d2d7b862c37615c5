"""Fake cloud providers at the wire, for the provider streaming tests: each speaks its
provider's own HTTP API and streaming format, over real sockets on loopback.

- GCP Vertex AI (Gemini): ``…/publishers/google/models/<m>:streamGenerateContent?alt=sse``,
  an SSE stream of GenerateContentResponse JSON with ``usageMetadata`` (and
  ``:generateContent``). Calls must carry a bearer token that Google's OAuth token
  endpoint issued: that endpoint (``https://oauth2.googleapis.com/token``, where a
  service-account key sends its signed JWT) is faked by a CONNECT proxy that terminates
  TLS with a certificate of a test CA; the tests point ``HTTPS_PROXY`` and
  ``REQUESTS_CA_BUNDLE`` (google-auth's requests transport) at them.
- AWS Bedrock: ``/model/<id>/converse-stream``, AWS's binary event-stream framing
  (``application/vnd.amazon.eventstream``) of ConverseStream events (and ``/converse``);
  ``/model/<id>/invoke-with-response-stream`` of a Claude model, Anthropic's events as the
  base64 bytes of ``chunk`` events (and ``/invoke``).
- Azure OpenAI: ``/openai/deployments/<d>/chat/completions?api-version=…``, OpenAI's SSE
  with Azure's extras (a first chunk of prompt_filter_results, content_filter_results).
- Anthropic: ``/v1/messages``, its named SSE events (message_start … message_stop), its
  ``error`` event mid-stream.

What each model does is its ``Script``: the text pieces, the usage reported, an error
status before any byte (some number of times), a stream broken after some pieces (the
connection dropped, or the provider's own error event), and a gate the stream waits on
after its first piece (a test proves a chunk reached the client before the provider sent
the next one)."""

import asyncio
import atexit
import base64
import binascii
import json
import shutil
import socket
import socketserver
import ssl
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from gateway.tests.tls_ca import make_tls, server_context

TOOL_ARGS = ['{"city": ', '"Paris"}']  # a tool call's arguments, in the pieces streamed
GOOGLE_TOKEN_HOSTS = ("oauth2.googleapis.com", "accounts.google.com", "www.googleapis.com")


@dataclass
class Script:
    pieces: list[str] = field(default_factory=lambda: ["Hello", " from", " the", " cloud"])
    prompt_tokens: int = 12
    completion_tokens: int = 34
    usage: bool = True  # report usage (Vertex's usageMetadata, Bedrock's metadata event…)
    status: int = 200  # answer this before any byte of the answer…
    fail_times: int | None = None  # …this many times (None: always)
    break_after: int | None = None  # after this many pieces the stream breaks…
    break_how: str = "reset"  # …by a dropped connection, or the provider's "error" event
    gate: threading.Event | None = None  # after the first piece, wait for it (at most 30 s)
    gate_opened: bool | None = None  # whether it was set within those 30 s
    delay: float = 0.0  # seconds between pieces
    finish: str = ""  # the provider's finish reason ("": its plain stop)
    tool: str = ""  # answer with a call of this function (arguments TOOL_ARGS), not text


def _free_port(taken=()) -> int:
    """A port nothing listens on (the system's choice), other than ``taken``."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in taken:
            return port


# ------------------------------------------------------------------ AWS event stream
def _header(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    return bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v  # 7: a string


def event_message(headers: dict, payload: bytes) -> bytes:
    """One message of AWS's event-stream framing: prelude (total and headers length, its
    CRC32), headers, payload, the message's CRC32."""
    encoded = b"".join(_header(k, v) for k, v in headers.items())
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", binascii.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", binascii.crc32(message))


def bedrock_event(event_type: str, body: dict) -> bytes:
    return event_message(
        {
            ":event-type": event_type,
            ":content-type": "application/json",
            ":message-type": "event",
        },
        json.dumps(body).encode(),
    )


def bedrock_exception(exception_type: str, message: str) -> bytes:
    return event_message(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        json.dumps({"message": message}).encode(),
    )


# ------------------------------------------------------------------ keys
_accounts = iter(range(1, 1_000_000))


def service_account(project: str = "bonito-test") -> tuple[dict, object]:
    """A Google service-account key (a fresh RSA key: google-auth signs its token request
    with it), and the public key the fake token endpoint checks that signature with."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": pem,
        "client_email": f"bonito-{next(_accounts)}@{project}.iam.gserviceaccount.com",
        "client_id": "123456789012345678901",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    return info, key.public_key()


# ------------------------------------------------------------------ Google's token endpoint
class _TokenProxy(socketserver.ThreadingTCPServer):
    """An HTTP proxy that takes CONNECT to Google's token hosts only, and answers the
    tunnelled HTTPS request itself: a token for a JWT signed by a known service account."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, context: ssl.SSLContext, clouds: "FakeClouds"):
        self.context, self.clouds = context, clouds
        super().__init__(("127.0.0.1", port), _TunnelHandler)


class _TunnelHandler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        sock.settimeout(10)
        head = _read_head(sock)
        line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        host = line[1].rsplit(":", 1)[0] if len(line) == 3 else ""
        if line[:1] != ["CONNECT"] or host not in GOOGLE_TOKEN_HOSTS:
            sock.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        with self.server.context.wrap_socket(sock, server_side=True) as tls:
            head = _read_head(tls)
            lines = head.decode("latin-1").split("\r\n")
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (h.partition(":") for h in lines[1:])
                if k
            }
            body = b""
            while len(body) < int(headers.get("content-length") or 0):
                body += tls.recv(65536)
            status, answer = self.server.clouds.token_answer(lines[0], body)
            payload = json.dumps(answer).encode()
            tls.sendall(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )


def _read_head(sock) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    return data.split(b"\r\n\r\n", 1)[0]


def _tool_use(name: str) -> dict:
    """Claude's tool_use content block (Anthropic's API, Bedrock's InvokeModel)."""
    arguments = json.loads("".join(TOOL_ARGS))
    return {"type": "tool_use", "id": "toolu_fake1", "name": name, "input": arguments}


def _claude_message(message_id: str, model: str, input_tokens: int) -> dict:
    """A Claude message before its content (Anthropic's API, Bedrock's InvokeModel)."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }


def _claude_whole(s: Script, message: dict) -> web.Response:
    """``message`` answered whole: its text, or its tool call."""
    message["content"] = [{"type": "text", "text": "".join(s.pieces)}]
    message["stop_reason"] = s.finish or "end_turn"
    if s.tool:
        message["content"] = [_tool_use(s.tool)]
        message["stop_reason"] = "tool_use"
    message["usage"]["output_tokens"] = s.completion_tokens
    return web.json_response(message)


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


# ------------------------------------------------------------------ the clouds
class FakeClouds:
    def __init__(self):
        self.scripts: dict[str, Script] = {}
        self.requests: list[dict] = []
        self.tokens: dict[str, str] = {}  # issued access token -> the account's e-mail
        self.accounts: dict[str, object] = {}  # client_email -> public key
        self.token_requests = 0
        self.cut_streams = 0
        self.token_delay = 0.0  # seconds Google's token endpoint takes to answer
        self.url = ""
        self.proxy_url = ""
        self.ca_file: Path | None = None

    def reset(self):
        self.scripts.clear()
        self.requests.clear()
        self.cut_streams = 0
        self.token_delay = 0.0

    def script(self, model: str) -> Script:
        return self.scripts.get(model) or Script()

    # ---- Google's token endpoint
    def token_answer(self, request_line: str, body: bytes) -> tuple[int, dict]:
        """What Google answers a service account's token request (RFC 7523)."""
        from urllib.parse import parse_qs

        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        self.token_requests += 1
        if self.token_delay:
            time.sleep(self.token_delay)  # (this proxy's own thread)
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        refused = 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        if not request_line.startswith("POST /token ") or form.get("grant_type") != (
            "urn:ietf:params:oauth:grant-type:jwt-bearer"
        ):
            return 400, {"error": "unsupported_grant_type"}
        try:
            header, claims, signature = form["assertion"].split(".")
            payload = json.loads(_b64(claims))
            public_key = self.accounts[payload["iss"]]
            public_key.verify(
                _b64(signature),
                f"{header}.{claims}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (KeyError, ValueError, InvalidSignature):
            return refused
        token = f"ya29.fake-{len(self.tokens) + 1}-{int(time.time())}"
        self.tokens[token] = payload["iss"]
        return 200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}

    def account(self, project: str = "bonito-test") -> dict:
        """A service-account key that the fake token endpoint knows."""
        info, public_key = service_account(project)
        self.accounts[info["client_email"]] = public_key
        return info

    # ---- the HTTP server
    def app(self) -> web.Application:
        @web.middleware
        async def count_cut_streams(request, handler):
            try:
                return await handler(request)
            except (ConnectionResetError, asyncio.CancelledError):
                self.cut_streams += 1  # the caller went away while the answer streamed
                raise

        app = web.Application(middlewares=[count_cut_streams])
        app.router.add_post(
            "/v1/projects/{project}/locations/{location}/publishers/google/models/{call}",
            self._vertex,
        )
        app.router.add_post("/model/{model}/{call}", self._bedrock)
        app.router.add_post("/openai/deployments/{model}/chat/completions", self._azure)
        app.router.add_post("/v1/messages", self._anthropic)
        return app

    async def _record(self, request: web.Request, model: str) -> dict:
        raw = await request.read()
        entry = {
            "path": request.path,
            "query": request.query_string,
            "headers": dict(request.headers),
            "body": json.loads(raw) if raw else None,
            "model": model,
        }
        self.requests.append(entry)
        return entry

    def _failing(self, s: Script) -> bool:
        if s.status == 200 or (s.fail_times is not None and s.fail_times <= 0):
            return False
        if s.fail_times is not None:
            s.fail_times -= 1
        return True

    @staticmethod
    async def _broke(s: Script, i: int, request: web.Request, resp, error: bytes) -> bool:
        """Before piece ``i``: wait at the script's gate (after the first piece) and its
        delay; then, where the script breaks the stream, break it (the provider's own
        ``error`` event, or a dropped connection: a mid-stream reset). True: it broke."""
        if i == 1 and s.gate is not None:
            s.gate_opened = await asyncio.to_thread(s.gate.wait, 30)
        if i and s.delay:
            await asyncio.sleep(s.delay)
        if s.break_after is None or i < s.break_after:
            return False
        if s.break_how == "error":
            await resp.write(error)
        else:
            request.transport.close()
        return True

    async def _vertex(self, request: web.Request):
        model, _, call = request.match_info["call"].rpartition(":")
        await self._record(request, model)
        auth = request.headers.get("Authorization", "")
        if auth.removeprefix("Bearer ") not in self.tokens:
            return web.json_response(
                {
                    "error": {
                        "code": 401,
                        "message": "Request had invalid authentication credentials.",
                        "status": "UNAUTHENTICATED",
                    }
                },
                status=401,
            )
        s = self.script(model)
        if self._failing(s):
            names = {
                400: "INVALID_ARGUMENT",
                401: "UNAUTHENTICATED",
                403: "PERMISSION_DENIED",
                429: "RESOURCE_EXHAUSTED",
            }
            return web.json_response(
                {
                    "error": {
                        "code": s.status,
                        "message": f"injected {s.status}",
                        "status": names.get(s.status, "INTERNAL"),
                    }
                },
                status=s.status,
            )
        finish = s.finish or "STOP"

        def usage(done: int) -> dict:
            out = {
                "promptTokenCount": s.prompt_tokens,
                "candidatesTokenCount": done,
                "totalTokenCount": s.prompt_tokens + done,
                "trafficType": "ON_DEMAND",
            }
            return out

        def answer(parts_text: str, i: int, last: bool) -> dict:
            candidate = {"content": {"role": "model", "parts": [{"text": parts_text}]}}
            if last:
                candidate["finishReason"] = finish
            data = {
                "candidates": [candidate],
                "modelVersion": model,
                "createTime": "2026-01-01T00:00:00.000000Z",
                "responseId": "fake-vertex-response",
            }
            if s.usage:
                done = s.completion_tokens if last else max(1, s.completion_tokens * i // 4)
                data["usageMetadata"] = usage(done)
            return data

        if call == "generateContent":
            data = answer("".join(s.pieces), 0, True)
            if s.tool:
                function = {"name": s.tool, "args": json.loads("".join(TOOL_ARGS))}
                data["candidates"][0]["content"]["parts"] = [{"functionCall": function}]
            return web.json_response(data)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if s.tool:  # Gemini sends a function call whole, in one chunk
            data = answer("", len(s.pieces), True)
            call = {"name": s.tool, "args": json.loads("".join(TOOL_ARGS))}
            data["candidates"][0]["content"]["parts"] = [{"functionCall": call}]
            await resp.write(b"data: " + json.dumps(data).encode() + b"\r\n\r\n")
            return resp
        error = {"code": 500, "message": "Internal error", "status": "INTERNAL"}
        broken = b"data: " + json.dumps({"error": error}).encode() + b"\r\n\r\n"
        for i, piece in enumerate(s.pieces):
            if await self._broke(s, i, request, resp, broken):
                return resp
            last = i == len(s.pieces) - 1
            await resp.write(
                b"data: " + json.dumps(answer(piece, i + 1, last)).encode() + b"\r\n\r\n"
            )
        return resp

    async def _bedrock(self, request: web.Request):
        from urllib.parse import unquote

        model, call = unquote(request.match_info["model"]), request.match_info["call"]
        await self._record(request, model)
        if not request.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256 "):
            return web.json_response(
                {"message": "Missing Authentication Token"},
                status=403,
                headers={"x-amzn-ErrorType": "MissingAuthenticationTokenException"},
            )
        s = self.script(model)
        if self._failing(s):
            kinds = {
                429: "ThrottlingException",
                401: "UnrecognizedClientException",
                403: "AccessDeniedException",
                400: "ValidationException",
            }
            return web.json_response(
                {"message": f"injected {s.status}"},
                status=s.status,
                headers={"x-amzn-ErrorType": kinds.get(s.status, "InternalServerException")},
            )
        stop = s.finish or "end_turn"
        usage = {
            "inputTokens": s.prompt_tokens,
            "outputTokens": s.completion_tokens,
            "totalTokens": s.prompt_tokens + s.completion_tokens,
        }
        if call.startswith("invoke"):
            return await self._bedrock_invoke(request, s, call)
        if call == "converse":
            content = [{"text": "".join(s.pieces)}]
            if s.tool:
                arguments = json.loads("".join(TOOL_ARGS))
                use = {"toolUseId": "tooluse_fake1", "name": s.tool, "input": arguments}
                content, stop = [{"toolUse": use}], "tool_use"
            answer = {
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": stop,
                "metrics": {"latencyMs": 10},
            }
            if s.usage:
                answer["usage"] = usage
            return web.json_response(answer)
        resp = web.StreamResponse(headers={"Content-Type": "application/vnd.amazon.eventstream"})
        await resp.prepare(request)
        await resp.write(bedrock_event("messageStart", {"role": "assistant"}))
        if s.tool:
            use = {"toolUseId": "tooluse_fake1", "name": s.tool}
            await resp.write(
                bedrock_event(
                    "contentBlockStart", {"contentBlockIndex": 0, "start": {"toolUse": use}}
                )
            )
            for piece in TOOL_ARGS:
                delta = {"toolUse": {"input": piece}}
                await resp.write(
                    bedrock_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": delta})
                )
            stop = "tool_use"
        broken = bedrock_exception("modelStreamErrorException", "the model failed")
        for i, piece in enumerate(() if s.tool else s.pieces):
            if await self._broke(s, i, request, resp, broken):
                return resp
            await resp.write(
                bedrock_event(
                    "contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}}
                )
            )
        await resp.write(bedrock_event("contentBlockStop", {"contentBlockIndex": 0}))
        await resp.write(bedrock_event("messageStop", {"stopReason": stop}))
        metadata = {"metrics": {"latencyMs": 10}}
        if s.usage:
            metadata["usage"] = usage
        await resp.write(bedrock_event("metadata", metadata))
        return resp

    async def _bedrock_invoke(self, request: web.Request, s: Script, call: str):
        """InvokeModel(WithResponseStream) of a Claude model: Anthropic's Messages events,
        each the base64 ``bytes`` of a ``chunk`` event, the last with Bedrock's
        invocation metrics (where its usage is)."""
        message = _claude_message("msg_bedrock_invoke", "claude", s.prompt_tokens)
        if call == "invoke":
            return _claude_whole(s, message)

        def chunk(data: dict) -> bytes:
            encoded = base64.b64encode(json.dumps(data).encode()).decode()
            return bedrock_event("chunk", {"bytes": encoded})

        metrics = {
            "inputTokenCount": s.prompt_tokens,
            "outputTokenCount": s.completion_tokens,
            "invocationLatency": 10,
            "firstByteLatency": 5,
        }
        return await self._claude_stream(
            request,
            s,
            message,
            content_type="application/vnd.amazon.eventstream",
            event=chunk,
            broken=bedrock_exception("modelStreamErrorException", "the model failed"),
            output_tokens=s.completion_tokens,
            last={"amazon-bedrock-invocationMetrics": metrics},
        )

    async def _claude_stream(
        self,
        request: web.Request,
        s: Script,
        message: dict,
        *,
        content_type: str,
        event,
        broken: bytes,
        output_tokens: int,
        last: dict | None = None,
    ):
        """Claude's streamed Messages events (message_start … message_stop), each
        ``event(data)`` on the wire (Anthropic's SSE, Bedrock's event-stream chunks);
        ``broken``: the provider's error event; ``last``: more of message_stop's fields."""
        stop = s.finish or "end_turn"
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        await resp.prepare(request)
        await resp.write(event({"type": "message_start", "message": message}))
        block = {"type": "content_block_start", "index": 0}
        if s.tool:
            use = {"type": "tool_use", "id": "toolu_fake1", "name": s.tool, "input": {}}
            await resp.write(event({**block, "content_block": use}))
            for piece in TOOL_ARGS:
                delta = {"type": "input_json_delta", "partial_json": piece}
                await resp.write(event({"type": "content_block_delta", "index": 0, "delta": delta}))
            stop = "tool_use"
        else:
            await resp.write(event({**block, "content_block": {"type": "text", "text": ""}}))
        for i, piece in enumerate(() if s.tool else s.pieces):
            if await self._broke(s, i, request, resp, broken):
                return resp
            delta = {"type": "text_delta", "text": piece}
            await resp.write(event({"type": "content_block_delta", "index": 0, "delta": delta}))
        await resp.write(event({"type": "content_block_stop", "index": 0}))
        await resp.write(
            event(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": output_tokens},
                }
            )
        )
        await resp.write(event({"type": "message_stop", **(last or {})}))
        return resp

    async def _azure(self, request: web.Request):
        model = request.match_info["model"]
        entry = await self._record(request, model)
        if not request.headers.get("api-key"):
            return web.json_response(
                {"error": {"code": "401", "message": "Access denied due to invalid key."}},
                status=401,
            )
        s = self.script(model)
        if self._failing(s):
            return web.json_response(
                {"error": {"code": str(s.status), "message": f"injected {s.status}"}},
                status=s.status,
                headers={"Retry-After": "1"} if s.status == 429 else {},
            )
        body = entry["body"] or {}
        base = {"id": "chatcmpl-azure", "created": 1, "model": model, "system_fingerprint": "fp"}
        usage = {
            "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.completion_tokens,
            "total_tokens": s.prompt_tokens + s.completion_tokens,
        }
        filtered = {
            name: {"filtered": False, "severity": "safe"}
            for name in ("hate", "self_harm", "sexual", "violence")
        }
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(s.pieces)}
            if s.tool:
                function = {"name": s.tool, "arguments": "".join(TOOL_ARGS)}
                call = {"id": "call_fake1", "type": "function", "function": function}
                message = {"role": "assistant", "content": None, "tool_calls": [call]}
            answer = {
                **base,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": s.finish or ("tool_calls" if s.tool else "stop"),
                        "content_filter_results": filtered,
                    }
                ],
            }
            if s.usage:
                answer["usage"] = usage
            return web.json_response(answer)

        def sse(data: dict) -> bytes:
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunk = {**base, "object": "chat.completion.chunk"}
        await resp.write(
            sse(
                {
                    "id": "",
                    "object": "",
                    "created": 0,
                    "model": "",
                    "choices": [],
                    "prompt_filter_results": [
                        {"prompt_index": 0, "content_filter_results": filtered}
                    ],
                }
            )
        )
        for i, piece in enumerate(TOOL_ARGS if s.tool else ()):
            function = {"arguments": piece}
            call = {"index": 0, "function": function}
            if i == 0:
                call.update(id="call_fake1", type="function")
                function["name"] = s.tool
            delta = {"tool_calls": [call]}
            if i == 0:
                delta.update(role="assistant", content=None)
            choice = {"index": 0, "delta": delta, "finish_reason": None}
            await resp.write(sse({**chunk, "choices": [choice]}))
        broken = sse({"error": {"message": "The server had an error", "type": "server_error"}})
        for i, piece in enumerate(() if s.tool else s.pieces):
            if await self._broke(s, i, request, resp, broken):
                return resp
            delta = {"content": piece} if i else {"role": "assistant", "content": piece}
            choice = {
                "index": 0,
                "delta": delta,
                "finish_reason": None,
                "content_filter_results": filtered,
            }
            await resp.write(sse({**chunk, "choices": [choice]}))
        reason = s.finish or ("tool_calls" if s.tool else "stop")
        finish = {"index": 0, "delta": {}, "finish_reason": reason}
        await resp.write(sse({**chunk, "choices": [finish]}))
        if s.usage and (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(sse({**chunk, "choices": [], "usage": usage}))
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def _anthropic(self, request: web.Request):
        entry = await self._record(request, "")
        body = entry["body"] or {}
        entry["model"] = model = body.get("model", "")

        def error(status: int, kind: str, message: str):
            payload = {"type": "error", "error": {"type": kind, "message": message}}
            return web.json_response(payload, status=status)

        if not request.headers.get("x-api-key"):
            return error(401, "authentication_error", "invalid x-api-key")
        s = self.script(model)
        if self._failing(s):
            kinds = {
                400: "invalid_request_error",
                401: "authentication_error",
                403: "permission_error",
                429: "rate_limit_error",
                529: "overloaded_error",
            }
            return error(s.status, kinds.get(s.status, "api_error"), f"injected {s.status}")
        message = _claude_message("msg_fake_cloud", model, s.prompt_tokens if s.usage else 0)
        if not body.get("stream"):
            return _claude_whole(s, message)

        def sse(data: dict) -> bytes:
            return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()

        overloaded = {"type": "overloaded_error", "message": "Overloaded"}
        return await self._claude_stream(
            request,
            s,
            message,
            content_type="text/event-stream",
            event=sse,
            broken=sse({"type": "error", "error": overloaded}),
            output_tokens=s.completion_tokens if s.usage else 0,
        )

    # ---- start
    def start(self) -> "FakeClouds":
        """Serve the clouds and the token proxy on free ports (in threads)."""
        started = threading.Event()
        port = _free_port()

        def run():
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            runner = web.AppRunner(self.app(), handle_signals=False, shutdown_timeout=0.1)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
            started.set()
            loop.run_forever()

        threading.Thread(target=run, name="fake-clouds", daemon=True).start()
        started.wait(10)
        self.url = f"http://127.0.0.1:{port}"
        directory = Path(tempfile.mkdtemp(prefix="bonito-fake-clouds-"))
        atexit.register(shutil.rmtree, directory, True)
        self.ca_file, cert, key = make_tls(directory, GOOGLE_TOKEN_HOSTS)  # a test CA's
        proxy = _TokenProxy(_free_port({port}), server_context(cert, key), self)
        threading.Thread(target=proxy.serve_forever, name="fake-google-token", daemon=True).start()
        self.proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"
        return self
