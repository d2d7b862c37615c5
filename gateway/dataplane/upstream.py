"""Calling providers: a pooled pass-through for OpenAI-shaped upstreams, LiteLLM for the
rest (and for everything when pass-through is off), and the built-in mock."""

import asyncio
import base64
import contextlib
import contextvars
import email.utils
import functools
import hashlib
import logging
import math
import re
import struct
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import orjson

from . import credentials, provider_kinds, tokens
from .netpolicy import AddressRefused, NetworkPolicy, split_url
from .snapshot import DeploymentInfo

log = logging.getLogger("bonito.gateway.upstream")

PATHS = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
    "responses": "/responses",
}
# The media endpoints (gateway/dataplane/media.py) on an OpenAI-shaped upstream; rerank as
# Cohere, Jina and vLLM serve it.
MEDIA_PATHS = {
    "images": "/images/generations",
    "transcriptions": "/audio/transcriptions",
    "translations": "/audio/translations",
    "speech": "/audio/speech",
    "moderations": "/moderations",
    "rerank": "/rerank",
}
SPEECH_CHUNK = 64 * 1024


@dataclass(slots=True)
class MediaAnswer:
    content_type: str
    raw: bytes
    data: dict | None  # the parsed JSON answer; None for text, srt and vtt transcripts


def refuse_withheld(dep) -> None:
    """A VPC agent withheld this deployment's credentials from its endpoint
    (DeploymentInfo.withheld): a 502 like any provider failure, the call never made (made
    without them, the prompt would still go to an endpoint the VPC did not pin); the next
    deployment may be callable. The why (which endpoint, how to pin it) is the agent's log
    and heartbeat's, not the client's."""
    if dep.withheld:
        raise UpstreamError(
            f"{dep.label} is not configured in this VPC: the agent withheld its credentials"
            " from the endpoint the control plane names (the agent's log says why).",
            502,
        )


def not_supported(dep, endpoint: str, how: str) -> "UpstreamError":
    """A deployment that cannot serve this endpoint: the next one is tried, and the client
    sees this 400 if none can."""
    message = f"The deployment {dep.label} cannot serve {endpoint}: {how}."
    error = {
        "message": message,
        "type": "invalid_request_error",
        "param": "model",
        "code": "unsupported_endpoint",
    }
    return UpstreamError(message, 400, body={"error": error}, unfit=True)


async def _in_pieces(data: bytes):
    """Bytes already in memory, as a stream (LiteLLM's speech answer)."""
    for start in range(0, len(data), SPEECH_CHUNK):
        yield data[start : start + SPEECH_CHUNK]


class UpstreamError(Exception):
    """A provider call that failed. ``retryable`` decides failover."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        *,
        body: dict | None = None,
        retry_after: float | None = None,
        timeout: bool = False,
        own_timeout: bool = False,
        detail: str | None = None,
        unfit: bool = False,
        too_long: bool = False,
    ):
        super().__init__(message)
        # The provider said the prompt is longer than its context window: another
        # deployment (a model with a larger one, the next tier up) may take it.
        self.too_long = too_long or says_too_long(status, body)
        # This deployment cannot serve this request (an endpoint or a field its provider
        # lacks, a prompt past its context window): the next deployment may; the client
        # sees this error if none can.
        self.unfit = unfit or self.too_long or says_input_unsupported(status, body)
        self.status = status
        self.body = body
        self.retry_after = retry_after
        self.timeout = timeout
        # Cut by the deployment's own timeout (``Deployment.timeout_s``), not the deadline.
        self.own_timeout = own_timeout
        self.detail = detail  # the provider's own words, for the org's admin only

    @property
    def costs_health(self) -> bool:
        """Whether this failure counts toward cooling the deployment down: a retryable one,
        but a 403 (some are about what the request named: a file it may not read)."""
        return self.retryable and self.status != 403

    @property
    def retryable(self) -> bool:
        # 401/403: the provider refused the deployment's credentials (revoked, no access to
        # the model, a region it bars). The deployment is broken, not the request.
        return (
            self.timeout
            or self.status is None
            or self.status in (401, 403, 408, 409, 429)
            or self.status >= 500
        )


CREDENTIALS_REFUSED = (401, 403)

# How providers say a prompt does not fit the model's context window: OpenAI's and Azure's
# code `context_length_exceeded` ("This model's maximum context length is 128000 tokens"),
# Anthropic's "prompt is too long: 208310 tokens > 200000 maximum" and "input length and
# `max_tokens` exceed context limit", Bedrock's "Input is too long for requested model" and
# "too many input tokens", Gemini's "The input token count (1200000) exceeds the maximum
# number of tokens allowed (1048576)", vLLM's and Mistral's "maximum context length".
_TOO_LONG = re.compile(
    r"context[_ ](?:length|window)[_ ]exceeded|maximum context length|exceeds? the context "
    r"window|exceeds? context limit|context (?:length|window) of \d|prompt is too long"
    r"|input is too long|too many (?:input |prompt |total )?tokens|token count \(?\d+\)? "
    r"exceeds|exceeds the maximum number of tokens|reduce the length of the messages",
    re.IGNORECASE,
)


# How providers say the model cannot take a kind of input the request carries (images,
# audio, documents, tools), as against a malformed request: OpenAI's and Azure's "Invalid
# content type. image_url is only supported by certain models." (input_audio alike),
# Anthropic's and Bedrock's "This model doesn't support the image content block" / "does not
# support image input" / "doesn't support tool use", Gemini's "Image input modality is not
# enabled for models/…" and "Function calling is not enabled for models/…", vLLM's "… is
# not a multimodal model", "At most 0 image(s) may be provided in one request" and
# "\"auto\" tool choice requires --enable-auto-tool-choice", Ollama's "… does not support
# tools", Mistral's and Groq's "Image input is not supported for this model" / "… does not
# support vision".
_INPUT_UNSUPPORTED = re.compile(
    r"is only supported by certain models"
    r"|does(?: not|n't|n’t) support (?:the )?(?:image|images|vision|audio|video|pdf|pdfs|"
    r"document|documents|file|files|tool use|tools|tool calling|function calling|"
    r"multimodal|multi-modal)\b"
    r"|(?:image|audio|video|document|pdf|vision) (?:input |content )?(?:modality )?"
    r"(?:is|are) not (?:enabled|supported)"
    r"|(?:function calling|tool use|tool calling|tools?) (?:is|are) not (?:enabled|supported) "
    r"(?:for|by|with|in) (?:this )?model"
    r"|is not a multimodal model|at most 0 (?:image|audio|video)"
    r"|tool choice requires --enable-auto-tool-choice",
    re.IGNORECASE,
)


def says_input_unsupported(status: int | None, body) -> bool:
    """Whether a provider's 400 (422) says the model cannot take a kind of input the request
    carries (an image, audio, a tool): another deployment, the next tier up, may."""
    if status not in (400, 422) or not isinstance(body, dict):
        return False
    error = body.get("error") if isinstance(body.get("error"), dict) else body
    message = error.get("message")
    return isinstance(message, str) and _INPUT_UNSUPPORTED.search(message[:2000]) is not None


def unfit_in_its_own_words(exc: "UpstreamError", raw: bytes) -> bool:
    """Whether ``exc``'s unfit verdict stands for the request ``raw``: not when the words it
    was read from (a context-length or input-kind phrase) are the request's own, quoted
    back by the provider in an ordinary 400 ("Invalid value for 'messages[0].content':
    '… is only supported by certain models'"). A prompt could otherwise make any 400
    fail over, to the next tier up with smart routing. Read again (escapes decoded) only
    on this path, which an unfit answer alone takes."""
    error = exc.body.get("error") if isinstance(exc.body, dict) else None
    error = error if isinstance(error, dict) else exc.body
    if not isinstance(error, dict):
        return True  # what the gateway itself found: no words to quote
    code = error.get("code")
    if isinstance(code, str) and code.lower() in ("context_length_exceeded", "context_too_long"):
        return True
    message = error.get("message")
    if not isinstance(message, str):
        return True
    said = [
        m.group(0).lower()
        for pattern in (_TOO_LONG, _INPUT_UNSUPPORTED)
        for m in pattern.finditer(message[:2000])
    ]
    if not said:
        return True
    try:
        text = orjson.dumps(orjson.loads(raw)).decode().lower()
    except orjson.JSONDecodeError:
        text = raw.decode("utf-8", "replace").lower()
    return any(phrase not in text for phrase in said)


def says_too_long(status: int | None, body) -> bool:
    """Whether a provider's 400 (413, 422) says the prompt is past the context window."""
    if status not in (400, 413, 422) or not isinstance(body, dict):
        return False
    error = body.get("error") if isinstance(body.get("error"), dict) else body
    code = error.get("code")
    if isinstance(code, str) and code.lower() in ("context_length_exceeded", "context_too_long"):
        return True
    message = error.get("message")
    return isinstance(message, str) and _TOO_LONG.search(message[:2000]) is not None


def _secrets(credentials) -> list[str]:
    """The credential's strings long enough to be secret (keys, tokens, a service
    account's private key), longest first."""
    found, stack = [], [credentials]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
        elif isinstance(value, str) and len(value) >= 8:
            found.append(value)
            if value.lstrip().startswith("{"):  # a service account's JSON: its secret parts
                with contextlib.suppress(orjson.JSONDecodeError):
                    parsed = orjson.loads(value)
                    if isinstance(parsed, dict):
                        stack.extend(v for k, v in parsed.items() if k in _SECRET_PARTS)
    return sorted(set(found), key=len, reverse=True)


# A key file's fields that are secret (a service account's, an OAuth client's); the others
# (project, e-mail, URLs) name things an admin needs to read in an error.
_SECRET_PARTS = frozenset({"private_key", "private_key_id", "client_secret", "refresh_token"})


# The provider account a deployment's credentials belong to, as providers' errors name it
# (OpenAI's 429: "Rate limit reached for gpt-4o in organization org-… on tokens per min";
# its project ids; an AWS ARN with the account number): not the client's to read, and on a
# shared gateway with lent credentials, the platform's own account.
# Anthropic's names its organization's id ("… for your organization (<uuid>) of 20,000
# input tokens per minute", later "(org: <uuid>, model: …)"), Google's quota errors the
# consumer project ("for consumer 'project_number:123…'"). In an event's bytes an id may
# follow a JSON escape (\n; \u201c, a quote an encoder that writes ASCII only escapes, or
# Go's \u003c for <): no word boundary there; an ARN ends before a backslash (its escape
# stays whole: the event stays JSON), a bracket or a sentence's last stop.
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
_ARN_CHAR = r"[^\s\"',\\()\[\]{}<>]"
_ACCOUNT_IDS = (
    r"(?:\b|(?<=\\[nrtbf])|(?<=\\u[0-9a-fA-F]{4}))(?:org-[A-Za-z0-9]{20,}\b|proj_[A-Za-z0-9]{20,}\b"
    rf"|arn:aws[a-z-]*:[a-z0-9-]*:[a-z0-9-]*:\d{{12}}:(?:{_ARN_CHAR}*[^\s\"',\\()\[\]{{}}<>.;:])?)"
    rf"|(?<=organization \(){_UUID}|(?<=org: ){_UUID}"
    r"|(?<=project_number:)\d{6,}\b|(?<=projects/)\d{6,}\b"
)
_ACCOUNT_TEXT = re.compile(_ACCOUNT_IDS)
_ACCOUNT_BYTES = re.compile(_ACCOUNT_IDS.encode())


def redact(value, dep: DeploymentInfo):
    """A provider's error (text, an event's bytes, or JSON) with every string of ``dep``'s
    credentials in it replaced by [redacted], and the provider account's ids by [account]:
    what a client or the log may be shown."""
    secrets = _secrets(dep.credentials) if dep is not None else []
    if isinstance(value, bytes):
        for secret in secrets:
            # in any letter case (an upstream that quotes it upper-cased), and inside JSON
            # text, as an event carries it, its escaped form too
            for form in {secret.encode(), orjson.dumps(secret)[1:-1]}:
                value = re.sub(re.escape(form), b"[redacted]", value, flags=re.IGNORECASE)
        return _ACCOUNT_BYTES.sub(b"[account]", value)
    return _scrubbed(value, secrets)


def _scrubbed(value, secrets: list[str]):
    """``value`` (a provider's error: text, or JSON) with every credential string in it
    replaced by [redacted] and every provider account id by [account]."""
    if isinstance(value, str):
        for secret in secrets:  # in any letter case
            value = re.sub(re.escape(secret), "[redacted]", value, flags=re.IGNORECASE)
        return _ACCOUNT_TEXT.sub("[account]", value)
    if isinstance(value, dict):
        return {k: _scrubbed(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v, secrets) for v in value]
    return value


def provider_error(
    dep: DeploymentInfo, status: int, body: dict | None, retry_after: float | None = None
) -> UpstreamError:
    """A provider's error answer as an UpstreamError: passed on to the client as the
    provider said it, except a refusal of the deployment's credentials (401/403). That one
    is the deployment failing: the next is tried, and the client never sees the provider's
    words (OpenAI's quote the key's last characters) nor a 401 that would read as its own
    key refused. The admin's connection test shows them (``detail``)."""
    body = redact(body, dep)  # an upstream that echoes the key it was sent
    message = _error_message(body, status)
    if status in CREDENTIALS_REFUSED:
        log.warning("%s: the provider refused its credentials (HTTP %s)", dep.label, status)
        return UpstreamError(
            f"{dep.label}: the provider refused this deployment's credentials (HTTP {status})",
            status,
            retry_after=retry_after,
            detail=message,
        )
    return UpstreamError(message, status, body=body, retry_after=retry_after)


UNREACHABLE = "could not reach the provider"


def unreachable(
    dep: DeploymentInfo, exc: BaseException, *, timeout: bool = False
) -> "UpstreamError":
    """One message for every failure to reach a provider (refused, DNS, TLS, an address the
    policy refuses): different ones would make the gateway a port scanner. The detail goes
    to the log only (exception type and text; never headers, so never the credential)."""
    if isinstance(exc.__cause__, AddressRefused):  # aiohttp wraps the resolver's refusal
        exc = exc.__cause__
    level = logging.WARNING if isinstance(exc, AddressRefused) else logging.INFO
    log.log(level, "%s: %s (%s: %s)", dep.label, UNREACHABLE, type(exc).__name__, exc)
    return UpstreamError(f"{dep.label}: {UNREACHABLE}", timeout=timeout)


class StreamBroken(Exception):
    """The upstream failed after the first chunk was forwarded; no failover is possible.
    ``usage``: what the provider had reported of the request's usage before it broke (an
    OpenAI usage object), if it said anything yet."""

    def __init__(self, message: str, usage: dict | None = None):
        super().__init__(message)
        self.usage = usage


def _retry_after(headers) -> float | None:
    """A provider's Retry-After in seconds: a number of seconds or an HTTP date; None when
    absent or not one (NaN, infinity and negative numbers included)."""
    value = headers.get("retry-after") or headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
        return max(0.0, seconds)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _error_message(body, status) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message") or f"upstream status {status}")
    return f"upstream status {status}"


def completion_chunks(endpoint: str, data) -> list[dict] | None:
    """The stream chunks a provider would have sent for this JSON completion (content as
    one delta per choice, then a finish chunk per choice, then usage), or None if ``data``
    is not a completion."""
    if not isinstance(data, dict):
        return None
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        return None
    chat = endpoint == "chat"
    base = {k: data[k] for k in ("id", "created", "model", "system_fingerprint") if k in data}
    base["object"] = "chat.completion.chunk" if chat else "text_completion"
    out, finishes = [], []
    for i, choice in enumerate(choices):
        if not isinstance(choice, dict):
            return None
        index = choice.get("index", i)
        finish = choice.get("finish_reason") or "stop"
        if chat:
            message = choice.get("message")
            if not isinstance(message, dict):
                return None
            delta = {"role": message.get("role") or "assistant"}
            for name in ("content", "refusal", "function_call", "reasoning_content", "audio"):
                if message.get(name) is not None:
                    delta[name] = message[name]
            calls = message.get("tool_calls")
            if isinstance(calls, list):
                delta["tool_calls"] = [
                    {**call, "index": n} if isinstance(call, dict) else call
                    for n, call in enumerate(calls)
                ]
            first = {"index": index, "delta": delta, "finish_reason": None}
            if choice.get("logprobs") is not None:
                first["logprobs"] = choice["logprobs"]
            out.append({**base, "choices": [first]})
            finishes.append(
                {**base, "choices": [{"index": index, "delta": {}, "finish_reason": finish}]}
            )
        else:
            text = choice.get("text")
            if not isinstance(text, str):
                return None
            piece = {"index": index, "text": text, "finish_reason": None}
            piece["logprobs"] = choice.get("logprobs")
            out.append({**base, "choices": [piece]})
            finishes.append(
                {
                    **base,
                    "choices": [
                        {"index": index, "text": "", "finish_reason": finish, "logprobs": None}
                    ],
                }
            )
    out += finishes
    if isinstance(data.get("usage"), dict):
        out.append({**base, "choices": [], "usage": data["usage"]})
    return out


def _not_streamed(endpoint: str, dep: DeploymentInfo, raw: bytes, content_type: str) -> list[dict]:
    """An upstream that answered a stream request with a whole body: its completion as
    chunks, or a 502 (retryable: the next deployment may stream) if it is not one."""
    try:
        data = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        data = None
    chunks = completion_chunks(endpoint, data)
    if chunks is None:
        raise UpstreamError(
            f"{dep.label} answered a stream request with {content_type or 'no content type'}, "
            "not an event stream or a completion",
            502,
        )
    return chunks


def _stream_failed(dep: DeploymentInfo, exc: BaseException) -> "UpstreamError":
    """A stream that failed before its first chunk: the next deployment may be tried."""
    return UpstreamError(
        f"{dep.label} stream failed: {type(exc).__name__}", timeout=isinstance(exc, TimeoutError)
    )


# An event as the adapters yield it: the bytes to send and the parsed chunk, or UNPARSED
# (the pass-through leaves parsing to the relay, which parses only the events it needs).
UNPARSED = object()
Event = tuple[bytes, object]
DONE_EVENT: Event = (b"", None)  # the upstream's `data: [DONE]`: nothing after it is read
MAX_SSE_LINE = 16 * 1024 * 1024  # one event this long is a broken stream, not a chunk


def sse_events(block: bytes) -> tuple[list[Event], bool]:
    """The `data:` events of complete SSE lines (each line one event, as OpenAI sends them),
    as `data: <payload>\\n\\n`, unparsed; True if `[DONE]` ended them."""
    events = []
    for line in block.split(b"\n"):
        if line[:5] != b"data:":
            continue  # blank lines, comments, `event:`/`id:` fields
        payload = line[5:].strip()
        if payload == b"[DONE]":
            return events, True
        events.append((b"data: " + payload + b"\n\n", UNPARSED))
    return events, False


_MAIN_FIELD = {"chat": "messages", "completions": "prompt", "embeddings": "input"}
_CHECKED_FIELDS = ("chat", "completions")  # the endpoints LiteLLM checks fields for


class PassthroughAdapter:
    """Direct HTTP to OpenAI-compatible upstreams over a pooled aiohttp session.

    ``connector`` makes the connector of each event loop's session; by default TCP to the
    addresses the network policy allows (tests pass one that reaches a fake in memory)."""

    def __init__(self, network: NetworkPolicy, connector=None):
        self.network = network
        self.connector = connector
        self._sessions: dict[int, object] = {}

    def _session(self):
        import aiohttp

        from .egress import GuardedResolver

        loop = asyncio.get_running_loop()
        session = self._sessions.get(id(loop))
        if session is None or session.closed:
            connector = (
                self.connector()
                if self.connector is not None
                else aiohttp.TCPConnector(
                    limit=0,
                    ttl_dns_cache=300,
                    keepalive_timeout=30,
                    resolver=GuardedResolver(lambda: self.network),
                )
            )
            session = aiohttp.ClientSession(
                connector=connector,
                json_serialize=lambda o: orjson.dumps(o).decode(),
                auto_decompress=True,
            )
            self._sessions[id(loop)] = session
        return session

    async def close_loop_session(self) -> None:
        """Close this event loop's pooled session (for callers that run a loop per call)."""
        session = self._sessions.pop(id(asyncio.get_running_loop()), None)
        if session is not None:
            await session.close()

    @staticmethod
    def _base_headers(dep: DeploymentInfo) -> tuple[str, dict]:
        refuse_withheld(dep)
        kind = provider_kinds.get(dep.kind)
        base = (dep.api_base or (kind.default_api_base if kind else "")).rstrip("/")
        headers = {"Content-Type": "application/json"}
        api_key = dep.credentials.get("api_key")
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        return base, headers

    def _request(self, endpoint, dep: DeploymentInfo, body: dict):
        base, headers = self._base_headers(dep)
        return base + PATHS[endpoint], headers, orjson.dumps({**body, "model": dep.upstream_model})

    async def _post(
        self, endpoint, dep, body, timeout, stream, *, method="POST", path=None, request=None
    ):
        import aiohttp

        if request is not None:  # prepared by the caller (a multipart upload)
            url, headers, data = request
        elif path is None:
            url, headers, data = self._request(endpoint, dep, body)
        else:  # a resource the upstream keeps (a stored response): no body
            base, headers = self._base_headers(dep)
            url, data = base + path, None
        tmo = aiohttp.ClientTimeout(
            total=None if stream else timeout, sock_connect=min(10.0, timeout), sock_read=timeout
        )
        try:
            # aiohttp resolves names through the policy, but takes IP literals as they are.
            self.network.check_literal(split_url(url)[1])
            resp = await self._session().request(
                method, url, data=data, headers=headers, timeout=tmo, allow_redirects=False
            )
        except TimeoutError as exc:
            raise unreachable(dep, exc, timeout=True) from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise unreachable(dep, exc) from exc
        if 300 <= resp.status < 400:
            resp.release()
            raise unreachable(dep, RuntimeError(f"redirect {resp.status}, not followed"))
        if resp.status >= 400:
            try:
                raw = await resp.read()
                parsed = orjson.loads(raw) if raw else None
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
                parsed = None
            finally:
                resp.release()
            raise provider_error(
                dep,
                resp.status,
                parsed if isinstance(parsed, dict) else None,
                _retry_after(resp.headers),
            )
        return resp

    async def call(self, endpoint, dep, body, timeout, *, method="POST", path=None) -> dict:
        """The upstream's JSON answer to a POST of ``body`` to ``endpoint``'s path, or to
        ``method`` on ``path`` (under the API base) with no body."""
        import aiohttp

        resp = await self._post(
            endpoint, dep, body, timeout, stream=False, method=method, path=path
        )
        try:
            data = orjson.loads(await resp.read())
        except TimeoutError as exc:
            raise UpstreamError(f"{dep.label} timed out", timeout=True) from exc
        except (aiohttp.ClientError, orjson.JSONDecodeError) as exc:
            raise UpstreamError(
                f"{dep.label} sent a broken response: {type(exc).__name__}"
            ) from exc
        finally:
            resp.release()
        if not isinstance(data, dict):  # every answer these endpoints have is an object
            raise UpstreamError(f"{dep.label} sent a broken response: not a JSON object")
        return data

    async def stream(self, endpoint, dep, body, timeout) -> AsyncIterator[list[Event]]:
        """Yield, for each read from the upstream, the SSE events it completed, unparsed
        (the relay parses only what it needs); `DONE_EVENT` last when the upstream said
        `[DONE]`."""
        import aiohttp

        resp = await self._post(endpoint, dep, body, timeout, stream=True)
        if resp.content_type != "text/event-stream":
            try:
                raw = await resp.read()
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                raise _stream_failed(dep, exc) from exc
            finally:
                resp.release()
            yield [
                (b"data: " + orjson.dumps(chunk) + b"\n\n", chunk)
                for chunk in _not_streamed(endpoint, dep, raw, resp.content_type)
            ]
            return
        started = done = False
        partial, size = [], 0  # the pieces of a line not yet complete
        try:
            while not done:
                data = await resp.content.readany()
                if not data:  # the end: a last line without its newline still counts
                    if not partial:
                        break
                    block, done = b"".join(partial), True
                else:
                    end = data.rfind(b"\n") + 1
                    if not end:
                        partial.append(data)
                        size += len(data)
                        if size > MAX_SSE_LINE:
                            raise ValueError("an SSE line longer than MAX_SSE_LINE")
                        continue
                    block = data[:end]
                    if partial:
                        block = b"".join([*partial, block])
                    partial, size = ([data[end:]], len(data) - end) if end < len(data) else ([], 0)
                events, finished = sse_events(block)
                started = started or bool(events)
                if finished:
                    events.append(DONE_EVENT)
                    done = True
                if events:
                    yield events
        except (aiohttp.ClientError, TimeoutError, ConnectionError, ValueError) as exc:
            if started:
                raise StreamBroken(f"{dep.label} stream broke: {type(exc).__name__}") from exc
            raise _stream_failed(dep, exc) from exc
        finally:
            resp.release()
            resp.close()

    def _media_request(self, endpoint, dep: DeploymentInfo, call):
        """(url, headers, data) of a media call: JSON, or multipart with the audio file
        (built anew for each attempt: a form is sent once)."""
        import aiohttp

        refuse_withheld(dep)
        kind = provider_kinds.get(dep.kind)
        base = (dep.api_base or (kind.default_api_base if kind else "")).rstrip("/")
        headers = {}
        api_key = dep.credentials.get("api_key")
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        if call.upload is None:
            headers["Content-Type"] = "application/json"
            data = orjson.dumps({**call.body, "model": dep.upstream_model})
        else:
            data = aiohttp.FormData(quote_fields=False)  # the filename is made safe by media
            data.add_field("model", dep.upstream_model)
            for name, value in call.form:
                data.add_field(name, value)
            data.add_field(
                "file",
                call.upload.data,
                filename=call.upload.filename,
                content_type=call.upload.content_type,
            )
        return base + MEDIA_PATHS[endpoint], headers, data

    async def media(self, endpoint, dep, call, timeout) -> MediaAnswer:
        import aiohttp

        request = self._media_request(endpoint, dep, call)
        resp = await self._post(endpoint, dep, None, timeout, stream=False, request=request)
        try:
            raw = await resp.read()
            data = orjson.loads(raw) if resp.content_type == "application/json" else None
        except TimeoutError as exc:
            raise UpstreamError(f"{dep.label} timed out", timeout=True) from exc
        except (aiohttp.ClientError, orjson.JSONDecodeError) as exc:
            raise UpstreamError(
                f"{dep.label} sent a broken response: {type(exc).__name__}"
            ) from exc
        finally:
            resp.release()
        # JSON, except the transcripts asked for as text, srt or vtt: anything else (an
        # HTML error page from a proxy) is this deployment failing, and the next is tried.
        text_asked = call.upload is not None and call.body.get("response_format") in (
            "text",
            "srt",
            "vtt",
        )
        if not isinstance(data, dict) and not (text_asked and data is None):
            raise UpstreamError(
                f"{dep.label} answered {endpoint} with {resp.content_type or 'no content type'}"
                ", not a JSON object",
                502,
            )
        content_type = resp.headers.get("Content-Type", resp.content_type)
        return MediaAnswer(content_type, raw, data)

    async def speech(self, dep, call, timeout):
        """(content type, the audio's bytes as they arrive), once the upstream said 200."""
        import aiohttp

        request = self._media_request("speech", dep, call)
        resp = await self._post("speech", dep, None, timeout, stream=True, request=request)
        content_type = resp.headers.get("Content-Type") or "application/octet-stream"
        if resp.content_type == "application/json":  # an error said with 200, or no audio
            resp.release()
            raise UpstreamError(f"{dep.label} answered speech with JSON, not audio", 502)

        async def chunks():
            try:
                async for data in resp.content.iter_any():
                    yield data
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                raise StreamBroken(f"{dep.label} stream broke: {type(exc).__name__}") from exc
            finally:
                resp.release()
                resp.close()

        return content_type, chunks()


def _network_failure(exc: BaseException) -> BaseException | None:
    """The failure to reach the host underneath a litellm error, if that is what it is
    (litellm reports some as a 500 "Connection error."); the policy's refusal first."""
    import httpx
    import openai

    chain = _chain(exc)
    found = [e for e in chain if isinstance(e, httpx.TransportError | OSError)]
    if not found and _library_failure(exc) is None:
        found = [e for e in chain if isinstance(e, openai.APIConnectionError)]
    return next((e for e in found if isinstance(e, AddressRefused)), found[-1] if found else None)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during (a bounded walk)."""
    seen, out = set(), []
    stack = [exc]
    while stack:
        cur = stack.pop()
        if cur is None or id(cur) in seen or len(seen) > 20:
            continue
        seen.add(id(cur))
        out.append(cur)
        stack += [cur.__cause__, cur.__context__]
    return out


def _library_failure(exc: BaseException) -> BaseException | None:
    """The plain Python error (KeyError, TypeError…) LiteLLM hit turning this request into
    the provider's, if that is what its catch-all APIConnectionError wraps: the request's
    shape, not the network (nothing underneath it failed to connect)."""
    import httpx

    chain = _chain(exc)
    if any(isinstance(e, httpx.TransportError | OSError) for e in chain):
        return None
    plain = (KeyError, ValueError, TypeError, AttributeError, IndexError, NotImplementedError)
    # (a bare Exception: "Unable to map the custom llm provider", an endpoint it lacks)
    return next(
        (
            e
            for e in chain
            if type(e) is Exception or (type(e).__module__ == "builtins" and isinstance(e, plain))
        ),
        None,
    )


def _token_refused(exc: BaseException) -> str | None:
    """What Google's token endpoint said refusing a Vertex service-account key (google-auth's
    RefreshError, not one it would retry), if that is what LiteLLM's error wraps."""
    for e in _chain(exc):
        if type(e).__name__ == "RefreshError" and type(e).__module__ == "google.auth.exceptions":
            if getattr(e, "retryable", False):
                return None
            return str(e.args[0])[:200] if e.args else "RefreshError"
    return None


def _provider_answer(exc: BaseException):
    """The provider's HTTP error answer (an httpx.Response) under a LiteLLM error: the
    HTTPStatusError its handlers raise keeps it (LiteLLM's own error, a copy without the
    body for some providers, does not)."""
    for e in _chain(exc):
        if isinstance(e, httpx.HTTPStatusError) and e.response is not None:
            return e.response
    return None


def _provider_error_body(response) -> dict | None:
    """An error answer's words as {"error": {...}}: OpenAI's and Google's
    {"error": {"message"…}}, AWS's {"message"} (its x-amzn-ErrorType as the code)."""
    try:
        data = orjson.loads(response.content) if response.content else None
    except (orjson.JSONDecodeError, httpx.HTTPError, RuntimeError):
        return None  # (RuntimeError: a streamed answer never read)
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"]:
        out = {"message": error["message"]}
        if isinstance(error.get("type"), str):
            out["type"] = error["type"]
        code = error.get("status") or error.get("code")  # Google's status names the error
        if isinstance(code, str | int) and not isinstance(code, bool):
            out["code"] = str(code)
        return {"error": out}
    message = data.get("message") or data.get("Message")
    if isinstance(message, str) and message:
        code = (response.headers.get("x-amzn-errortype") or "").partition(":")[0]
        return {"error": {"message": message, "code": code or None}}
    return None


# ------------------------------------------------------------------ stream events
def parse_event(raw: bytes):
    """The chunk of an event `data: <payload>\\n\\n`, or None if it is not JSON."""
    try:
        return orjson.loads(raw[6:-2])
    except orjson.JSONDecodeError:
        return None


def empty_answer(chunks: list) -> bool:
    """An assistant turn that opened (a delta with its role) and finished with no output:
    an empty answer, not a missing one (a lone finish chunk is what LiteLLM makes of an
    upstream that sent nothing)."""
    opened = finished = False
    for chunk in chunks:
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            opened = opened or (isinstance(delta, dict) and bool(delta.get("role")))
            finished = finished or bool(choice.get("finish_reason"))
    return opened and finished


_OUTPUT_FIELDS = ("content", "tool_calls", "function_call", "refusal", "reasoning_content", "audio")


def carries_output(chunk, dep: DeploymentInfo) -> bool:
    """Whether a stream chunk is worth committing a 200 to: text, a tool call, a finish
    other than a plain stop, or usage. An error event is the deployment's failure."""
    if not isinstance(chunk, dict):
        return False
    if chunk.get("error") and not chunk.get("choices"):
        raise UpstreamError(
            f"{dep.label} sent an error event: {_error_text(redact(chunk['error'], dep))}",
            502,
            body=redact(chunk, dep),
        )
    if chunk.get("usage"):
        return True
    choices = chunk.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict):
            continue
        if choice.get("text") or choice.get("finish_reason") not in (None, "stop"):
            return True
        delta = choice.get("delta")
        if isinstance(delta, dict) and any(delta.get(k) for k in _OUTPUT_FIELDS):
            return True
    return False


def _error_text(error) -> str:
    message = error.get("message") if isinstance(error, dict) else error
    return str(message)[:200]


# litellm routes any chat request with tools through its proxy's MCP handler, which needs
# the `mcp` package of litellm[proxy]; we never use MCP tools, so skip that hop.
_NO_MCP = {"_skip_mcp_handler": True}

# OpenAI fields that only tune sampling or bookkeeping. Where LiteLLM says a provider has no
# such field it would refuse the whole request: they are left out instead, and the answer
# keeps its shape (clients such as LangChain send penalties of 0 on every request). Any
# other field the provider lacks (n, logprobs, audio, functions…) is refused by name.
DROPPABLE_FIELDS = frozenset(
    {
        "frequency_penalty",
        "presence_penalty",
        "seed",
        "user",
        "service_tier",  # billed at the tier the answer reports, else standard
        "store",
        "prediction",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
        "verbosity",
    }
)


@functools.lru_cache(maxsize=1024)
def _supported_fields(lib, prefix: str, model: str) -> frozenset[str] | None:
    """The OpenAI fields LiteLLM passes on to this provider's model (None: it does not
    say, and checks nothing)."""
    try:
        fields = lib.get_supported_openai_params(model=model, custom_llm_provider=prefix)
    except Exception:  # an unknown model of a known provider: LiteLLM checks nothing either
        return None
    return frozenset(fields) if fields is not None else None


def _fit_fields(lib, dep: DeploymentInfo, prefix: str, kwargs: dict) -> None:
    """Leave out of ``kwargs`` the droppable fields the provider lacks; refuse the others
    (a 400 naming them) before LiteLLM refuses the request with words of its own."""
    supported = _supported_fields(lib, prefix, dep.upstream_model)
    if supported is None:
        return
    from litellm.utils import PROVIDER_UNVALIDATED_PARAMS

    lacking = [
        name
        for name, value in kwargs.items()
        if name in lib.OPENAI_CHAT_COMPLETION_PARAMS
        and name not in supported
        and name not in PROVIDER_UNVALIDATED_PARAMS
        and value is not None
        and not (name == "n" and value == 1)
    ]
    refused = sorted(name for name in lacking if name not in DROPPABLE_FIELDS)
    if refused:
        names = ", ".join(f"'{name}'" for name in refused)
        message = (
            f"Unsupported parameter{'s' if len(refused) > 1 else ''} {names}: this model is "
            f"served by {dep.label}, whose provider has no such parameter. Remove "
            f"{'them' if len(refused) > 1 else 'it'} from the request."
        )
        error = {
            "message": message,
            "type": "invalid_request_error",
            "param": refused[0],
            "code": "unsupported_parameter",
        }
        raise UpstreamError(message, 400, body={"error": error}, unfit=True)
    for name in lacking:
        del kwargs[name]


# Set while litellm opens a stream to an OpenAI-shaped provider: the endpoint, so that
# the transport can turn a whole-body answer into the stream that was asked for.
_stream_shape: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "bonito_stream_shape", default=None
)


# Set while a LiteLLM call runs: whether it has sent a request to the provider yet (its
# transport below marks it), so a library failure can be told apart as the request's (it
# could not be translated: nothing sent) or the answer's (it could not be read).
_sent: contextvars.ContextVar[list | None] = contextvars.ContextVar("bonito_sent", default=None)


class _StreamShapingTransport(httpx.AsyncBaseTransport):
    """Under litellm: an OpenAI-shaped provider that answers a stream request with a JSON
    completion gets its answer re-sent as an event stream (the OpenAI SDK would read a
    JSON body as an empty stream); a body that is not a completion becomes a 502; a
    redirect loses its Location (no client follows it)."""

    def __init__(self, inner: httpx.AsyncBaseTransport):
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sent = _sent.get()
        if sent is not None:
            sent[0] = True
        response = await self.inner.handle_async_request(request)
        if 300 <= response.status_code < 400:
            # Never followed, even by a client of LiteLLM's own that would: a redirect
            # could carry the credential's header to another host.
            response.headers.pop("location", None)
        endpoint = _stream_shape.get()
        content_type = response.headers.get("content-type", "").partition(";")[0].strip()
        if endpoint is None or response.status_code != 200 or content_type == "text/event-stream":
            return response
        try:
            raw = await response.aread()
        finally:
            await response.aclose()
        chunks = completion_chunks(endpoint, _loads_or_none(raw))
        if chunks is None:
            error = {
                "message": f"The provider answered a stream request with "
                f"{content_type or 'no content type'}, not an event stream or a completion.",
                "type": "server_error",
                "param": None,
                "code": "upstream_error",
            }
            return httpx.Response(502, json={"error": error}, request=request)
        sse = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            content=sse,
            request=request,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


def _loads_or_none(raw: bytes):
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


def _empty_chunk(data: dict) -> bool:
    """A chunk with choices that carry nothing: no delta, no text, no finish, no logprobs."""
    choices = data.get("choices")
    return bool(choices) and all(
        isinstance(c, dict)
        and not c.get("delta")
        and not c.get("text")
        and c.get("finish_reason") is None
        and not c.get("logprobs")
        for c in choices
    )


# What LiteLLM's objects carry that OpenAI's never do: dropped wherever they appear. With
# them, what it lets through of a provider's own only in a stream (a whole answer never has
# them): Vertex's metadata on every Gemini chunk, empty ones included, and Azure's content
# filter results on each choice (and its first chunk, which has nothing else).
_LITELLM_ONLY = frozenset(
    {
        "provider_specific_fields",
        "_hidden_params",
        "_response_ms",
        "vertex_ai_grounding_metadata",
        "vertex_ai_url_context_metadata",
        "vertex_ai_safety_ratings",
        "vertex_ai_safety_results",
        "vertex_ai_citation_metadata",
        "content_filter_results",
        "prompt_filter_results",
    }
)
# LiteLLM's message fields that carry output when they are not empty (a Gemini image, an
# Anthropic model's signed thinking): dropped when empty, as it sends them on every answer.
_LITELLM_WHEN_EMPTY = frozenset({"images", "thinking_blocks"})


def _strip(value):
    """``value`` without LiteLLM's own fields, at any depth."""
    if isinstance(value, dict):
        return {
            k: _strip(v)
            for k, v in value.items()
            if k not in _LITELLM_ONLY and not (k in _LITELLM_WHEN_EMPTY and not v)
        }
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


_USAGE_FIELDS = {
    "prompt_tokens": None,
    "completion_tokens": None,
    "total_tokens": None,
    "completion_tokens_details": (
        "accepted_prediction_tokens",
        "audio_tokens",
        "reasoning_tokens",
        "rejected_prediction_tokens",
    ),
    "prompt_tokens_details": ("audio_tokens", "cached_tokens"),
}


class Usage(dict):
    """A usage object in OpenAI's shape, and beside it what the provider billed that the
    shape has no field for: the prompt tokens written to its prompt cache, and of those the
    ones written for an hour (LiteLLM reports an Anthropic or Bedrock model's), the web
    searches it ran (Anthropic's server tool), the service tier it served (Gemini's
    trafficType, which LiteLLM keeps in its own object). Attributes, so they are never
    serialised to a client."""

    __slots__ = ("cache_written", "cache_written_1h", "searches", "tier")

    def __init__(
        self,
        *args,
        written: int = 0,
        written_1h: int = 0,
        searches: int = 0,
        tier: str | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.cache_written, self.cache_written_1h = written, written_1h
        self.searches, self.tier = searches, tier


def count_of(value) -> int:
    """A token count a provider reported: a positive int, else 0 (bools, floats, junk, more
    than any request has)."""
    return value if type(value) is int and 0 < value <= tokens.MAX_COUNT else 0


def cache_writes(usage) -> tuple[int, int]:
    """(prompt tokens written to the provider's cache, of those for an hour) of a chat
    usage object: as the LiteLLM adapter kept them (Usage), else as an OpenAI-shaped
    upstream in front of such a model reports them (LiteLLM's fields)."""
    if isinstance(usage, Usage):
        return usage.cache_written, usage.cache_written_1h
    if not isinstance(usage, dict):
        return 0, 0
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    written = count_of(details.get("cache_creation_tokens")) or count_of(
        usage.get("cache_creation_input_tokens")
    )
    split = details.get("cache_creation_token_details")
    hour = count_of(split.get("ephemeral_1h_input_tokens")) if isinstance(split, dict) else 0
    return written, min(hour, written)


def web_searches(usage) -> int:
    """The web searches a provider ran for a request: as the LiteLLM adapter kept them
    (Usage), else ``server_tool_use.web_search_requests`` (Anthropic's web search tool, in
    its usage or LiteLLM's reported by an OpenAI-shaped upstream), else
    ``prompt_tokens_details.web_search_requests`` (Gemini's grounding, as LiteLLM reports it)."""
    if isinstance(usage, Usage):
        return usage.searches
    if not isinstance(usage, dict):
        return 0
    tool_use = usage.get("server_tool_use")
    if isinstance(tool_use, dict) and count_of(tool_use.get("web_search_requests")):
        return count_of(tool_use.get("web_search_requests"))
    details = usage.get("prompt_tokens_details")
    return count_of(details.get("web_search_requests")) if isinstance(details, dict) else 0


def cited_search(data) -> int:
    """1 if a chat answer cites the web (``url_citation`` annotations: an OpenAI search
    model searched, and says no count), else 0: LiteLLM bills such an answer one search."""
    choices = data.get("choices") if isinstance(data, dict) else None
    for choice in choices if isinstance(choices, list) else ():
        if isinstance(choice, dict) and cites_web(choice.get("message")):
            return 1
    return 0


def cites_web(message) -> bool:
    """Whether a chat message (or a stream's delta) carries url_citation annotations."""
    notes = message.get("annotations") if isinstance(message, dict) else None
    return any(
        isinstance(note, dict) and note.get("type") == "url_citation"
        for note in (notes if isinstance(notes, list) else ())
    )


# The same in a stream's raw event: a JSON token (quotes in text are escaped), so a
# byte check on each event is enough.
CITATION_MARK = b'"url_citation"'


# Gemini's and Vertex's usageMetadata.trafficType as a service tier (LiteLLM's reading).
_TRAFFIC_TIERS = {
    "ON_DEMAND_PRIORITY": "priority",
    "FLEX": "flex",
    "BATCH": "flex",
    "ON_DEMAND_FLEX": "flex",
    "ON_DEMAND": "default",
}


def _traffic_tier(resp) -> str | None:
    """The service tier LiteLLM saw in a Gemini answer (kept in its hidden params)."""
    hidden = getattr(resp, "_hidden_params", None)
    fields = hidden.get("provider_specific_fields") if isinstance(hidden, dict) else None
    traffic = fields.get("traffic_type") if isinstance(fields, dict) else None
    return _TRAFFIC_TIERS.get(traffic.upper()) if isinstance(traffic, str) else None


def _openai_usage(usage, endpoint: str):
    """OpenAI's usage fields only (LiteLLM adds its `cost`, `text_tokens`, …); embeddings
    report prompt and total tokens. The cache writes LiteLLM reports are kept aside (Usage)."""
    if not isinstance(usage, dict):
        return usage
    written, written_1h = cache_writes(usage)
    out = Usage(written=written, written_1h=written_1h, searches=web_searches(usage))
    for name, details in _USAGE_FIELDS.items():
        if name not in usage or usage[name] is None:
            continue
        if endpoint == "embeddings" and name not in ("prompt_tokens", "total_tokens"):
            continue
        value = usage[name]
        if details is not None:
            if not isinstance(value, dict):
                continue
            value = {k: value[k] for k in details if value.get(k) is not None}
        out[name] = value
    return out


def litellm_answer(endpoint: str, resp) -> dict:
    """A LiteLLM response object as the answer Bonito relays (openai_body), with the
    service tier LiteLLM kept in its own object on the usage (Usage.tier)."""
    data = resp.model_dump(exclude_none=True) if hasattr(resp, "model_dump") else dict(resp)
    data = openai_body(endpoint, data)
    if isinstance(data.get("usage"), Usage):
        data["usage"].tier = _traffic_tier(resp)
    return data


def openai_body(endpoint: str, data: dict) -> dict:
    """A LiteLLM answer in OpenAI's published shape (its OpenAPI spec): the fields OpenAI
    always sends, null when empty (a tool call's `content`, `refusal`, `logprobs`), none
    that OpenAI never sends. (LiteLLM's objects are dumped without their nulls.)"""
    data = _strip(data)
    if "usage" in data:
        data["usage"] = _openai_usage(data["usage"], endpoint)
    choices = data.get("choices")
    if endpoint == "embeddings":
        return data
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict):
            continue
        choice.setdefault("logprobs", None)
        choice.setdefault("finish_reason", "stop")
        if endpoint == "completions":
            choice.setdefault("text", "")
            continue
        message = choice.get("message")
        if isinstance(message, dict):
            message.setdefault("content", None)
            message.setdefault("refusal", None)
            message.setdefault("role", "assistant")
            if message.get("tool_calls") and choice["finish_reason"] == "stop":
                choice["finish_reason"] = "tool_calls"  # what OpenAI says for a tool call
            for call in message.get("tool_calls") or ():
                # LiteLLM numbers a whole answer's tool calls as a stream's deltas are
                # (Gemini, Bedrock, Claude); OpenAI's message has no such field.
                if isinstance(call, dict):
                    call.pop("index", None)
    return data


def openai_chunk(endpoint: str, data: dict) -> dict:
    """A LiteLLM stream chunk in OpenAI's shape: every choice has its `finish_reason`
    (null until the last), no LiteLLM fields."""
    data = _strip(data)
    if "usage" in data:
        data["usage"] = _openai_usage(data["usage"], endpoint)
    choices = data.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict):
            continue
        choice.setdefault("finish_reason", None)
        if endpoint == "completions":
            choice.setdefault("text", "")
            choice.setdefault("logprobs", None)
        else:
            choice.setdefault("delta", {})
    return data


class LiteLLMAdapter:
    """Provider calls through litellm (imported on first use: it is slow to import).

    Every connection litellm makes goes through one guarded transport: the OpenAI SDK
    kinds take it as litellm's process-wide client, the others as the call's ``client``.

    The import takes seconds (tens on a busy machine): ``load_in_background`` starts it in
    a thread when a snapshot names a LiteLLM-path deployment, so the gateway serves at once
    (the pass-through never waits for it), and a LiteLLM-path request that comes first
    waits for it without blocking the event loop (``_alib``), up to IMPORT_WAIT_S."""

    _litellm = None
    _handler = None
    _load_lock = threading.Lock()
    _loader: threading.Thread | None = None
    IMPORT_WAIT_S = 90.0

    def __init__(self, network: NetworkPolicy, ambient_credentials: bool = False):
        self.network = network
        self.ambient_credentials = ambient_credentials

    @classmethod
    def _lib(cls):
        if cls._litellm is not None:
            return cls._litellm
        with cls._load_lock:
            if cls._litellm is None:
                cls._litellm = cls._import()
        return cls._litellm

    @classmethod
    def _import(cls):
        import litellm

        litellm.telemetry = False
        litellm.suppress_debug_info = True
        litellm.set_verbose = False
        litellm.callbacks = []
        litellm.success_callback = []
        litellm.failure_callback = []
        logging.getLogger("LiteLLM").setLevel(logging.WARNING)
        from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

        from .egress import GuardedAsyncTransport

        transport = _StreamShapingTransport(GuardedAsyncTransport())
        litellm.aclient_session = httpx.AsyncClient(transport=transport, follow_redirects=False)
        cls._handler = AsyncHTTPHandler(transport=transport, follow_redirects=False)
        # The few paths that take no client (Azure's image generation, Vertex's speech)
        # build LiteLLM's own: those get this transport too (and so no proxy mounts).
        AsyncHTTPHandler.create_async_transport = staticmethod(lambda *a, **k: transport)
        return litellm

    @classmethod
    def load_in_background(cls) -> None:
        """Start the import in a thread (once); returns at once."""
        with cls._load_lock:
            if cls._litellm is not None or cls._loader is not None:
                return
            cls._loader = threading.Thread(target=cls._load, name="bonito-litellm", daemon=True)
            cls._loader.start()

    @classmethod
    def _load(cls) -> None:
        try:
            cls._lib()
        except Exception:
            log.exception("importing litellm failed")
        finally:
            cls._loader = None

    async def _alib(self, dep: DeploymentInfo):
        """litellm, once imported: waited for on the event loop (the loop keeps serving
        while the import runs in its thread); a 503 for this deployment past the bound."""
        if self._litellm is not None:
            return self._litellm
        self.load_in_background()
        deadline = time.monotonic() + self.IMPORT_WAIT_S
        while self._litellm is None:
            if self._loader is None and self._litellm is None:
                # The import failed (logged); the next request tries it again.
                raise UpstreamError(f"{dep.label}: the provider library failed to load", 503)
            if time.monotonic() > deadline:
                raise UpstreamError(
                    f"{dep.label}: the provider library is still loading", 503, retry_after=1
                )
            await asyncio.sleep(0.05)
        return self._litellm

    @staticmethod
    def _serves(endpoint: str, dep: DeploymentInfo) -> None:
        """A 400 unsupported_endpoint (the next deployment is tried) for an endpoint LiteLLM
        has no call for on this deployment's kind (ProviderKind.litellm_lacks)."""
        kind = provider_kinds.get(dep.kind)
        if kind is not None and endpoint in kind.litellm_lacks:
            raise not_supported(
                dep,
                endpoint,
                f"{kind.label} has no {endpoint} API that Bonito can call"
                + (
                    "; use a deployment of an OpenAI or OpenAI-compatible provider"
                    if endpoint == "moderations"
                    else ""
                ),
            )

    def _kwargs(self, endpoint: str, dep: DeploymentInfo, body: dict, timeout: float) -> dict:
        self._serves(endpoint, dep)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], str):
            # litellm sends completions as chat messages, which cannot carry token ids.
            error = {
                "message": "Invalid 'prompt': token ids are accepted only by OpenAI-compatible "
                "deployments called directly; send the prompt as text.",
                "type": "invalid_request_error",
                "param": "prompt",
                "code": "unsupported_value",
            }
            raise UpstreamError(error["message"], 400, body={"error": error})
        # Another endpoint's main field (`messages` sent to /v1/completions) would collide
        # with the argument litellm builds from this endpoint's: OpenAI ignores or refuses it.
        drop = {"model", *(f for e, f in _MAIN_FIELD.items() if e != endpoint)}
        kwargs = {k: v for k, v in body.items() if k not in drop}
        kind = provider_kinds.get(dep.kind)
        if kind is None or not kind.litellm_prefix:
            # A 502 like any provider failure (a kind this version does not know, say from a
            # newer control plane): the next deployment may be of a kind it does.
            raise UpstreamError(
                f"{dep.label} is not configured: its kind {dep.kind!r} is unknown here.", 502
            )
        if endpoint in _CHECKED_FIELDS:
            _fit_fields(self._lib(), dep, kind.litellm_prefix, kwargs)
        kwargs["model"] = f"{kind.litellm_prefix}/{dep.upstream_model}"
        kwargs["timeout"] = timeout
        kwargs["num_retries"] = 0
        if not kind.openai_shaped:
            kwargs["client"] = self._handler
        refuse_withheld(dep)
        creds = dep.credentials
        refused = credentials.problem(
            kind, creds, ambient_allowed=self.ambient_credentials, api_base=dep.api_base
        )
        if refused:
            # A 502 like any provider failure: the next deployment may have credentials.
            raise UpstreamError(f"{dep.label} is not configured: {refused}.", 502)
        kwargs.update(
            kind.litellm_kwargs(
                api_base=dep.api_base, region=dep.region, settings=dep.settings, credentials=creds
            )
        )
        key = credentials.api_key(kind, creds, ambient_allowed=self.ambient_credentials)
        if key:
            kwargs["api_key"] = key
        if not credentials.lends_ambient(kind, creds, ambient_allowed=self.ambient_credentials):
            for name, value in kind.unlent.items():
                kwargs.setdefault(name, value)
        return kwargs

    @contextlib.contextmanager
    def _outbound(self):
        """Around one LiteLLM call: this adapter's network policy, and the box its
        transport marks once a request has left (``_sent``)."""
        sent = [False]
        policy, marker = egress_policy().set(self.network), _sent.set(sent)
        try:
            yield sent
        finally:
            _sent.reset(marker)
            egress_policy().reset(policy)

    def _error(self, exc: Exception, dep: DeploymentInfo, sent: bool = True) -> UpstreamError:
        lib = self._lib()
        try:
            status = int(getattr(exc, "status_code", None) or 0) or None
        except (TypeError, ValueError):
            status = None
        timeout = isinstance(exc, lib.Timeout | asyncio.TimeoutError) or status == 408
        if (
            not sent
            and not timeout
            and isinstance(exc, lib.APIConnectionError)
            and _library_failure(exc)
        ):
            # LiteLLM could not turn this request into the provider's: the request does not
            # fit this deployment (the next may take it); no health cost, never "unreachable".
            log.info(
                "%s: LiteLLM could not translate a request (%s)",
                dep.label,
                type(_library_failure(exc)).__name__,
            )
            message = (
                f"{dep.label} cannot take this request: the provider library could not "
                "translate it for this provider. Check the request's fields against the "
                "provider's (tools, response_format, content parts)."
            )
            error = {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": "unsupported_request",
            }
            return UpstreamError(message, 400, body={"error": error}, unfit=True)
        refused = _token_refused(exc)
        if refused is not None:
            # Google's token endpoint refused the service-account key (deleted, disabled,
            # its signature not the account's): the deployment's credentials, not the network.
            log.warning("%s: the provider refused its credentials (%s)", dep.label, refused)
            return UpstreamError(
                f"{dep.label}: the provider refused this deployment's credentials "
                "(its service-account key got no access token)",
                401,
                detail=refused,
            )
        cause = _network_failure(exc)
        if timeout or status is None or 300 <= status < 400 or cause is not None:
            # (3xx: a redirect, never followed.) litellm's own message may hold the prompt:
            # the log gets the transport's error, or litellm's exception type only.
            return unreachable(dep, cause or RuntimeError(type(exc).__name__), timeout=timeout)
        # litellm keeps the provider's error object in .body; its own message may hold the
        # prompt (debug info), so it is never used.
        err = getattr(exc, "body", None)
        body = {"error": err} if isinstance(err, dict) and err.get("message") else None
        answer = _provider_answer(exc)  # the provider's own HTTP answer, where LiteLLM kept it
        if body is None and answer is not None:
            body = _provider_error_body(answer)
        headers = getattr(exc, "litellm_response_headers", None)
        if headers is None and answer is not None:
            headers = answer.headers
        retry_after = _retry_after(headers) if headers is not None else None
        if body or status in CREDENTIALS_REFUSED:
            error = provider_error(dep, status, body, retry_after)
            if isinstance(exc, lib.ContextWindowExceededError):  # LiteLLM read the words
                error.too_long = error.unfit = True
            return error
        if isinstance(exc, lib.ContextWindowExceededError):
            message = f"{dep.label}: the prompt is longer than the model's context window."
            error = {
                "message": message,
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
            return UpstreamError(message, 400, body={"error": error}, too_long=True)
        message = f"{dep.label} failed: the provider answered HTTP {status} ({type(exc).__name__})"
        return UpstreamError(message, status, retry_after=retry_after)

    async def call(self, endpoint, dep, body, timeout) -> dict:
        lib = await self._alib(dep)
        kwargs = self._kwargs(endpoint, dep, body, timeout)
        fn = {
            "chat": lib.acompletion,
            "completions": lib.atext_completion,
            "embeddings": lib.aembedding,
        }[endpoint]
        if endpoint != "embeddings":
            kwargs.update(_NO_MCP)
        with self._outbound() as sent:
            try:
                async with asyncio.timeout(timeout):  # (as stream's: a Vertex token)
                    resp = await fn(**kwargs)
            except Exception as exc:
                raise self._error(exc, dep, sent[0]) from exc
        return litellm_answer(endpoint, resp)

    async def stream(self, endpoint, dep, body, timeout) -> AsyncIterator[list[Event]]:
        lib = await self._alib(dep)
        kwargs = self._kwargs(endpoint, dep, body, timeout)
        fn = lib.acompletion if endpoint == "chat" else lib.atext_completion
        if endpoint != "embeddings":
            kwargs.update(_NO_MCP)
        kind = provider_kinds.get(dep.kind)
        shape = _stream_shape.set(endpoint if kind and kind.openai_shaped else None)
        with self._outbound() as sent:
            try:
                # The deadline covers what LiteLLM's HTTP timeout does not: a Vertex call
                # first fetches its access token with google-auth, in a thread, under
                # google-auth's own timeout (120 s).
                async with asyncio.timeout(timeout):
                    resp = await fn(**kwargs)
                    if getattr(resp, "completion_stream", True) is None:
                        # A stream LiteLLM opens on its first read (Vertex's Gemini): opened
                        # here, under this call's network policy.
                        await resp.fetch_stream()
            except Exception as exc:
                raise self._error(exc, dep, sent[0]) from exc
            finally:
                _stream_shape.reset(shape)
        started = False
        try:
            async for chunk in resp:
                data = openai_chunk(endpoint, chunk.model_dump(exclude_none=True))
                started = True
                if data.get("choices") == [] and not data.get("usage") and not data.get("error"):
                    # Nothing in it (Azure's first chunk, its prompt filter results gone):
                    # OpenAI's only chunk without choices is the usage one, and clients
                    # read choices[0] of every other.
                    continue
                usage = data.pop("usage", None) if data.get("choices") else None
                events = []
                if not _empty_chunk(data):  # litellm adds one after the finish chunk
                    events.append((b"data: " + orjson.dumps(data) + b"\n\n", data))
                if usage:
                    # OpenAI sends usage in a final chunk of its own, with no choices.
                    tail = {**data, "choices": [], "usage": usage}
                    events.append((b"data: " + orjson.dumps(tail) + b"\n\n", tail))
                if events:
                    yield events
        except Exception as exc:
            if started:
                # (LiteLLM wraps either in its MidStreamFallbackError: say which it was)
                how = (
                    "the connection to the provider was lost"
                    if _network_failure(exc) is not None
                    else "the provider reported an error"
                )
                known = _reported_so_far(resp, endpoint)
                raise StreamBroken(f"{dep.label} stream broke: {how}", known) from exc
            raise self._error(exc, dep) from exc

    async def media(self, endpoint, dep, call, timeout) -> MediaAnswer:
        lib = self._lib()
        self._serves(endpoint, dep)
        kwargs = self._kwargs("media", dep, {}, timeout)  # the provider's settings only
        kwargs.update(call.body)
        kind = provider_kinds.get(dep.kind)
        if endpoint == "transcriptions":
            fn = lib.atranscription
            kwargs["file"] = (call.upload.filename, call.upload.data, call.upload.content_type)
        elif endpoint == "translations":
            raise not_supported(
                dep,
                endpoint,
                "LiteLLM has no translations; use a deployment "
                "of an OpenAI-compatible provider (passed through)",
            )
        elif endpoint == "images":
            fn = lib.aimage_generation
        elif endpoint == "moderations":
            fn = lib.amoderation
        else:  # rerank: an OpenAI-shaped server's /rerank is vLLM's (and Jina's) shape
            fn = lib.arerank
            if kind is not None and kind.litellm_prefix == "openai":
                kwargs["model"] = f"hosted_vllm/{dep.upstream_model}"
                kwargs["client"] = self._handler
        with self._outbound() as sent:
            try:
                resp = await fn(**kwargs)
            except Exception as exc:
                raise self._error(exc, dep, sent[0]) from exc
        data = resp.model_dump(exclude_none=True) if hasattr(resp, "model_dump") else dict(resp)
        data.pop("_hidden_params", None)
        if endpoint == "moderations":
            _moderation_as_openai(data)
        fmt = call.body.get("response_format")
        if endpoint == "transcriptions" and fmt in ("text", "srt", "vtt"):
            # LiteLLM gives these as the text of a JSON answer: relayed as the text.
            content_type = "text/plain; charset=utf-8" if fmt != "vtt" else "text/vtt"
            text = str(data.get("text") or "")
            return MediaAnswer(content_type, text.encode(), None)
        return MediaAnswer("application/json", b"", data)

    async def speech(self, dep, call, timeout):
        lib = self._lib()
        self._serves("speech", dep)
        kwargs = self._kwargs("media", dep, {}, timeout)
        kwargs.update(call.body)
        with self._outbound() as sent:
            try:
                resp = await lib.aspeech(**kwargs)
            except Exception as exc:
                raise self._error(exc, dep, sent[0]) from exc  # (as media)
        headers = getattr(getattr(resp, "response", None), "headers", None) or {}
        content_type = headers.get("content-type") or "application/octet-stream"
        return content_type, _in_pieces(resp.content)


def _reported_so_far(resp, endpoint: str) -> dict | None:
    """The last usage a provider reported on a stream LiteLLM read (Gemini's usageMetadata on
    every chunk, Claude's prompt count at its start): LiteLLM keeps each chunk's and passes
    none on before the end, so a stream cut short would otherwise bill only counted tokens."""
    try:
        for chunk in reversed(getattr(resp, "chunks", None) or ()):
            usage = getattr(chunk, "usage", None)
            if usage is not None and count_of(getattr(usage, "prompt_tokens", None)):
                data = usage.model_dump(exclude_none=True)
                return _openai_usage(data, endpoint)
    except Exception:  # LiteLLM's internals changed: count instead, never fail the relay
        log.debug("no usage reported so far could be read", exc_info=True)
    return None


def _moderation_as_openai(data: dict) -> None:
    """LiteLLM's moderation objects carry each category twice, under OpenAI's name
    (`self-harm/intent`) and a Python alias (`self_harm_intent`): the aliases go, as OpenAI
    sends none (and its published spec allows none)."""
    for result in data.get("results") or ():
        if not isinstance(result, dict):
            continue
        for field in ("categories", "category_scores", "category_applied_input_types"):
            values = result.get(field)
            if not isinstance(values, dict):
                continue
            aliased = {k.replace("/", "_").replace("-", "_") for k in values if "_" not in k}
            for key in [k for k in values if "_" in k and k in aliased]:
                del values[key]


class MockAdapter:
    """Built-in deterministic provider: answers at once, no network."""

    @staticmethod
    def _reply(body: dict, dep: DeploymentInfo) -> str:
        last = ""
        for message in body.get("messages") or ():
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                last = (
                    content
                    if isinstance(content, str)
                    else " ".join(
                        p["text"]
                        for p in content or ()
                        if isinstance(p, dict) and isinstance(p.get("text"), str)
                    )
                )
        if not last and isinstance(body.get("prompt"), str):
            last = body["prompt"]
        return f"Hello from Bonito's mock model {dep.upstream_model}. You said: {last[:200]}"

    @staticmethod
    def _words(text: str) -> int:
        return max(1, len(text.split()))

    # The longest embedding the mock makes (OpenAI's largest model's): `dimensions` above
    # it is refused as OpenAI refuses it, never a vector of 2**31 numbers built in memory.
    MAX_DIMENSIONS = 3072
    DEFAULT_DIMENSIONS = 16

    @staticmethod
    def _answer(reply: str, body: dict) -> tuple[str, str]:
        """(the text, its finish_reason) of one choice, as a model honours the request's
        `stop` (the text ends before the first) and `max_tokens` / `max_completion_tokens`
        (a word a token: cut, finish_reason "length")."""
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else ()
        cuts = [reply.find(s) for s in stops if isinstance(s, str) and s and s in reply]
        if cuts:
            reply = reply[: min(cuts)]
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        words = reply.split(" ")
        if type(limit) is int and 0 < limit < len(words):
            return " ".join(words[:limit]), "length"
        return reply, "stop"

    @classmethod
    def _formatted(cls, reply: str, body: dict) -> str:
        """The reply as JSON mode asks for it: `json_object` an object holding it,
        `json_schema` an instance of the schema (its properties filled by type)."""
        fmt = body.get("response_format")
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind == "json_object":
            return orjson.dumps({"message": reply}).decode()
        if kind == "json_schema":
            spec = fmt.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            return orjson.dumps(cls._instance(schema, reply, 0)).decode()
        return reply

    @classmethod
    def _instance(cls, schema, text: str, depth: int):
        """A value of a JSON schema's type: strings the reply, numbers 0, false, an empty
        array, an object of its properties (nested at most 8 deep), an enum's first."""
        if not isinstance(schema, dict) or depth > 8:
            return text
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][0]
        if "const" in schema:
            return schema["const"]
        for union in ("anyOf", "oneOf", "allOf"):
            if isinstance(schema.get(union), list) and schema[union]:
                return cls._instance(schema[union][0], text, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if isinstance(k, str) and k != "null"), "null")
        if not isinstance(kind, str):  # a schema of any shape is the client's to send
            kind = None
        props = schema.get("properties")
        if kind == "object" or (kind is None and isinstance(props, dict)):
            props = props if isinstance(props, dict) else {}
            return {k: cls._instance(v, text, depth + 1) for k, v in props.items()}
        return {
            "string": text,
            "integer": 0,
            "number": 0,
            "boolean": False,
            "array": [],
            "null": None,
        }.get(kind, text)

    @staticmethod
    def _tool_called(body: dict) -> str | None:
        """The function a chat request makes the model call: the one `tool_choice` names,
        or the first tool's with `tool_choice: "required"`; None (a text answer) else."""
        tools = [
            t["function"]["name"]
            for t in body.get("tools") or ()
            if isinstance(t, dict)
            and isinstance(t.get("function"), dict)
            and isinstance(t["function"].get("name"), str)
        ]
        choice = body.get("tool_choice")
        if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            name = choice["function"].get("name")
            return name if name in tools else None
        return tools[0] if choice == "required" and tools else None

    @staticmethod
    def _n(body: dict) -> int:
        n = body.get("n")
        return n if type(n) is int and 1 <= n <= 128 else 1

    def _usage(self, body, texts):
        prompt = self._words(
            " ".join(
                str(m.get("content", "")) for m in body.get("messages") or () if isinstance(m, dict)
            )
            + str(body.get("prompt") or "")
        )
        completion = sum(self._words(t) if t else 0 for t in texts)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _embeddings(self, dep, body) -> dict:
        dims = body.get("dimensions")
        if dims is None:
            dims = self.DEFAULT_DIMENSIONS
        if type(dims) is not int or not 1 <= dims <= self.MAX_DIMENSIONS:
            message = (
                f"Invalid 'dimensions': the mock makes embeddings of 1 to "
                f"{self.MAX_DIMENSIONS} dimensions."
            )
            error = {
                "message": message,
                "type": "invalid_request_error",
                "param": "dimensions",
                "code": "invalid_value",
            }
            raise UpstreamError(message, 400, body={"error": error})
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
        data = []
        for i, text in enumerate(inputs):
            seed = str(text).encode()
            digest = hashlib.sha256(seed).digest()  # the first 32 numbers: the text's digest
            while len(digest) < dims:
                digest += hashlib.sha256(seed + len(digest).to_bytes(4, "big")).digest()
            vector = [round(b / 255 - 0.5, 6) for b in digest[:dims]]
            embedding = vector
            if body.get("encoding_format") == "base64":  # OpenAI's: little-endian float32
                embedding = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        tokens = sum(self._words(str(t)) for t in inputs)
        return {
            "object": "list",
            "data": data,
            "model": dep.upstream_model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def call(self, endpoint, dep, body, timeout) -> dict:
        created = int(time.time())
        if endpoint == "embeddings":
            return self._embeddings(dep, body)
        text, finish = self._answer(self._formatted(self._reply(body, dep), body), body)
        n = self._n(body)
        usage = self._usage(body, [text] * n)
        rid = (
            "mock-"
            + hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]
        )
        if endpoint == "completions":
            return {
                "id": rid,
                "object": "text_completion",
                "created": created,
                "model": dep.upstream_model,
                "choices": [
                    {"index": i, "text": text, "finish_reason": finish, "logprobs": None}
                    for i in range(n)
                ],
                "usage": usage,
            }
        tool = self._tool_called(body)
        if tool is not None:
            message = {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_" + rid[5:],
                        "type": "function",
                        "function": {"name": tool, "arguments": "{}"},
                    }
                ],
            }
            finish = "tool_calls"
            usage = self._usage(body, [f"{tool} {{}}"] * n)
        else:
            message = {"role": "assistant", "content": text, "refusal": None}
        return {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": dep.upstream_model,
            "choices": [
                {"index": i, "message": message, "finish_reason": finish, "logprobs": None}
                for i in range(n)
            ],
            "usage": usage,
        }

    async def stream(self, endpoint, dep, body, timeout):
        full = await self.call(endpoint, dep, body, timeout)
        if endpoint == "chat" and full["choices"][0]["message"].get("tool_calls"):
            yield self._tool_chunks(full, body)
            return
        text, finish = self._answer(self._formatted(self._reply(body, dep), body), body)
        words = text.split(" ")  # an empty answer is one empty piece (it opens, then ends)
        base = {"id": full["id"], "created": full["created"], "model": dep.upstream_model}
        kind = "chat.completion.chunk" if endpoint == "chat" else "text_completion"
        for choice in range(self._n(body)):
            for i, word in enumerate(words):
                piece = word if i == 0 else " " + word
                if endpoint == "chat":
                    delta = {"content": piece} if i else {"role": "assistant", "content": piece}
                    part = {"index": choice, "delta": delta, "finish_reason": None}
                else:
                    part = {"index": choice, "text": piece, "finish_reason": None}
                chunk = {**base, "object": kind, "choices": [part]}
                yield [(b"data: " + orjson.dumps(chunk) + b"\n\n", chunk)]
        events = []
        for choice in range(self._n(body)):
            last = {
                **base,
                "object": kind,
                "choices": [
                    {"index": choice, "delta": {}, "finish_reason": finish}
                    if endpoint == "chat"
                    else {"index": choice, "text": "", "finish_reason": finish}
                ],
            }
            events.append((b"data: " + orjson.dumps(last) + b"\n\n", last))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage_chunk = {**base, "object": kind, "choices": [], "usage": full["usage"]}
            events.append((b"data: " + orjson.dumps(usage_chunk) + b"\n\n", usage_chunk))
        yield events

    @staticmethod
    def _tool_chunks(full: dict, body: dict) -> list:
        """A tool call's stream, as OpenAI sends it: the call opened (its id and name),
        its arguments, the finish; then the usage if asked for."""
        base = {k: full[k] for k in ("id", "created", "model")}
        base["object"] = "chat.completion.chunk"
        chunks = []
        for choice in full["choices"]:
            call = choice["message"]["tool_calls"][0]
            opened = {**call, "index": 0, "function": {**call["function"], "arguments": ""}}
            argued = {"index": 0, "function": {"arguments": call["function"]["arguments"]}}
            i = choice["index"]
            delta = {"role": "assistant", "content": None, "tool_calls": [opened]}
            chunks += [
                {**base, "choices": [{"index": i, "delta": delta, "finish_reason": None}]},
                {
                    **base,
                    "choices": [
                        {"index": i, "delta": {"tool_calls": [argued]}, "finish_reason": None}
                    ],
                },
                {**base, "choices": [{"index": i, "delta": {}, "finish_reason": "tool_calls"}]},
            ]
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**base, "choices": [], "usage": full["usage"]})
        return [(b"data: " + orjson.dumps(c) + b"\n\n", c) for c in chunks]

    async def media(self, endpoint, dep, call, timeout):
        raise not_supported(
            dep, endpoint, "the built-in mock answers chat, completions and embeddings only"
        )

    async def speech(self, dep, call, timeout):
        raise not_supported(
            dep, "speech", "the built-in mock answers chat, completions and embeddings only"
        )


def egress_policy():
    from .egress import current_policy

    return current_policy


class Upstreams:
    """Picks the adapter for a deployment. ``network`` decides which addresses the
    adapters may connect to (default: public addresses only). ``connector``, a callable
    that returns an aiohttp connector, replaces the pass-through's TCP connections (a
    test's in-memory fake upstream; see gateway/tests/fake_upstream.py)."""

    def __init__(
        self,
        passthrough: bool = True,
        network: NetworkPolicy | None = None,
        ambient_credentials: bool = False,
        connector=None,
    ):
        self.passthrough = passthrough
        network = network or NetworkPolicy()
        self.http = PassthroughAdapter(network, connector)
        self.litellm = LiteLLMAdapter(network, ambient_credentials)
        self.mock = MockAdapter()

    @property
    def network(self) -> NetworkPolicy:
        return self.http.network

    @network.setter
    def network(self, policy: NetworkPolicy) -> None:
        self.http.network = self.litellm.network = policy

    def _adapter(self, kind_name: str):
        kind = provider_kinds.get(kind_name)
        if kind is not None and kind.builtin:
            return self.mock
        if self.passthrough and kind is not None and kind.passthrough:
            return self.http
        return self.litellm  # (which answers a kind it does not know with a 502)

    def needs_litellm(self, kinds) -> bool:
        return any(self._adapter(k) is self.litellm for k in kinds)

    def prewarm(self, kinds=("openai",), *, background: bool = False) -> None:
        """Import litellm if these provider kinds will need it (its import takes seconds
        and would otherwise stall the first request): now, or in a thread (``background``:
        what a server does at start, so it answers at once)."""
        if self.needs_litellm(kinds):
            if background:
                self.litellm.load_in_background()
            else:
                self.litellm._lib()

    def for_deployment(self, dep: DeploymentInfo):
        return self._adapter(dep.kind)

    def watched(self, adapter):
        """``adapter`` (the pass-through, or Anthropic's native one) as for_deployment gives
        adapters out: an agent watches every provider call (its health, a 401)."""
        return adapter

    def direct(self, dep: DeploymentInfo) -> bool:
        """Whether ``dep`` is called over the pass-through (its request as sent), whatever
        for_deployment wraps it in (a VPC agent's adapters are watched)."""
        return self._adapter(dep.kind) is self.http
