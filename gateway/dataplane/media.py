"""/v1 images, audio, moderations and rerank: parsed and priced here, routed, limited and
recorded by the Gateway's own machinery (candidates, limiter, attempts, usage record)."""

import contextlib
import logging
import re
import struct
import time
from dataclasses import dataclass, field

import orjson

from . import errors, tokens
from .errors import GatewayError
from .snapshot import DeploymentInfo
from .upstream import MediaAnswer, StreamBroken
from .validation import (
    FORBIDDEN_FIELDS,
    FORBIDDEN_PREFIXES,
    Invalid,
    parse_body,
    requested_model,
)

log = logging.getLogger("bonito.gateway.media")

# endpoint name (gateway/asgi_v1.py ROUTES) -> what the request is priced by
ENDPOINTS = {
    "images": "image",
    "transcriptions": "second",
    "translations": "second",
    "speech": "character",
    "moderations": "",  # tokens (OpenAI's moderations are free)
    "rerank": "query",  # a search (Cohere's unit); token-priced rerankers by tokens
}
UPLOAD_ENDPOINTS = frozenset({"transcriptions", "translations"})
# OpenAI's limit for an audio file; the whole multipart body may carry this much more
# (the form's other fields and its framing).
MAX_AUDIO_FILE_BYTES = 25 * 1024 * 1024
MAX_UPLOAD_BYTES = MAX_AUDIO_FILE_BYTES + 64 * 1024
MAX_FORM_FIELD_BYTES = 32 * 1024  # a text field of the form (prompt: 224 tokens at OpenAI)
MAX_FORM_PARTS = 32
# The upload fields each audio endpoint takes (OpenAI's); the SDK sends arrays as `name[]`.
FORM_FIELDS = {
    "transcriptions": {
        "model",
        "language",
        "prompt",
        "response_format",
        "temperature",
        "timestamp_granularities[]",
        "include[]",
        "stream",
        "chunking_strategy",
    },
    "translations": {"model", "prompt", "response_format", "temperature"},
}
RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")


@dataclass(slots=True)
class Upload:
    filename: str
    content_type: str
    data: bytes = field(repr=False)


@dataclass(slots=True)
class MediaCall:
    """What the adapters send: the body's fields (less ``model``), the audio file if any,
    and, for an upload, the form's text fields as the client sent them (in order)."""

    endpoint: str
    body: dict
    upload: Upload | None = None
    form: list = field(default_factory=list)  # [(name, value)] less model and file


# ------------------------------------------------------------------ parsing
def _bad(message: str, param: str | None = None, code: str = "invalid_value") -> GatewayError:
    return errors.bad_request(message, param=param, code=code)


def parse(req) -> tuple[str, MediaCall]:
    """(the model asked for, the call) of a media request, or a 400 naming the field."""
    if req.endpoint in UPLOAD_ENDPOINTS:
        return parse_upload(req.endpoint, req.headers.get("content-type", ""), req.body)
    body = parse_body(req.body, req.endpoint)
    if req.endpoint == "rerank" and body.get("documents") is None:
        raise _bad(
            "Missing required parameter: 'documents'.", "documents", "missing_required_parameter"
        )
    model = body.pop("model")
    return model, MediaCall(req.endpoint, body)


def parse_upload(endpoint: str, content_type: str, raw: bytes) -> tuple[str, MediaCall]:
    """A transcription or translation: multipart/form-data with the audio file and fields."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import parse_options_header

    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise _bad(
            "This endpoint takes multipart/form-data with the audio in the 'file' field "
            f"(got {content_type[:80] or 'no content type'}).",
            None,
            "invalid_content_type",
        )
    boundary = options.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise _bad(
            "The multipart body has no boundary in its Content-Type.", None, "invalid_multipart"
        )
    try:
        parts = _multipart_parts(boundary, raw)
    except MultipartParseError as exc:
        raise _bad(f"The multipart body is malformed: {exc}.", None, "invalid_multipart") from None
    allowed = FORM_FIELDS[endpoint]
    upload, form, model = None, [], None
    for name, filename, part_type, data in parts:
        if name == "file":
            if upload is not None:
                raise _bad("Send one file.", "file")
            if filename is None:
                raise _bad("'file' must be a file part (with a filename).", "file", "invalid_type")
            if not data:
                raise _bad("The audio file is empty.", "file", "empty_file")
            if len(data) > MAX_AUDIO_FILE_BYTES:
                raise errors.too_large(MAX_AUDIO_FILE_BYTES)
            upload = Upload(_safe_filename(filename), _safe_type(part_type), data)
            continue
        if name in FORBIDDEN_FIELDS or name.startswith(FORBIDDEN_PREFIXES):
            raise _bad(
                f"'{errors.echoed(name)}' cannot be set by a client: provider settings come "
                "from the org's configuration.",
                errors.echoed(name),
                "forbidden_parameter",
            )
        if name not in allowed:
            raise _bad(
                f"Unrecognized request argument supplied: {errors.echoed(name[:40])}.",
                errors.echoed(name[:40]),
                "unknown_parameter",
            )
        if filename is not None:
            raise _bad(f"'{name}' must be a text field, not a file.", name, "invalid_type")
        if len(data) > MAX_FORM_FIELD_BYTES:
            raise _bad(f"'{name}' is longer than {MAX_FORM_FIELD_BYTES} bytes.", name)
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(f"'{name}' is not UTF-8 text.", name, "invalid_type") from None
        if name == "model":
            model = value
        else:
            form.append((name, value))
    if upload is None:
        raise _bad("Missing required parameter: 'file'.", "file", "missing_required_parameter")
    if not model:
        raise _bad("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    try:
        model = requested_model(model)
    except Invalid as exc:  # a name the names rule refuses: no model has it
        raise _bad(str(exc), exc.param, exc.code) from None
    return model, MediaCall(endpoint, _typed_form(form), upload, form)


def _safe_filename(name: str) -> str:
    """The client's filename as it may go into the upstream's part header as it is (its
    extension tells providers the format): printable ASCII, no quotes or backslashes."""
    kept = "".join(c for c in name if c.isascii() and c.isprintable() and c not in '"\\')
    return kept[-255:] or "audio"


def _safe_type(value: str) -> str:
    return value if _MEDIA_TYPE.fullmatch(value) else "application/octet-stream"


_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][\w.+-]{0,62}/[A-Za-z0-9][\w.+-]{0,62}")


def _typed_form(form: list) -> dict:
    """The form's fields as the typed keyword arguments LiteLLM takes, each checked."""
    body: dict = {}
    for name, value in form:
        if name == "response_format":
            if value not in RESPONSE_FORMATS:
                raise _bad(
                    f"Invalid value: '{value[:40]}'. Supported values are: "
                    + ", ".join(f"'{f}'" for f in RESPONSE_FORMATS)
                    + ".",
                    name,
                )
            body[name] = value
        elif name == "temperature":
            try:
                number = float(value)
            except ValueError:
                number = -1.0
            if not 0 <= number <= 1:
                raise _bad("Invalid 'temperature': expected a number from 0 to 1.", name)
            body[name] = number
        elif name == "stream":
            if value.lower() not in ("false", "0", ""):
                raise _bad(
                    "Invalid 'stream': streamed transcriptions are not supported by this "
                    "gateway; send the request without it.",
                    name,
                    "unsupported_value",
                )
        elif name.endswith("[]"):
            if name == "timestamp_granularities[]" and value not in ("word", "segment"):
                raise _bad(
                    f"Invalid value: '{value[:40]}'. Supported values are: 'word', 'segment'.",
                    name,
                )
            body.setdefault(name[:-2], []).append(value)
        else:
            body[name] = value
    return body


def _multipart_parts(boundary: bytes, raw: bytes) -> list[tuple]:
    """[(field name, filename or None, content type, bytes)] of a multipart body, with at
    most MAX_FORM_PARTS parts; a MultipartParseError (a 400) if it is not well formed."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    parts: list[tuple] = []
    state = {"headers": {}, "field": b"", "value": b"", "data": [], "ended": False}

    def on_part_begin():
        if len(parts) >= MAX_FORM_PARTS:
            raise MultipartParseError(f"more than {MAX_FORM_PARTS} parts")
        state["headers"], state["data"] = {}, []

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].lower()] = state["value"]
        state["field"] = state["value"] = b""

    def on_part_data(data, start, end):
        state["data"].append(data[start:end])

    def on_part_end():
        disposition, params = parse_options_header(state["headers"].get(b"content-disposition"))
        if disposition != b"form-data" or not params.get(b"name"):
            raise MultipartParseError("a part without a form-data name")
        name = params[b"name"].decode("utf-8", "replace")
        filename = params.get(b"filename")
        part_type = state["headers"].get(b"content-type", b"").decode("latin-1")[:100]
        parts.append(
            (
                name,
                filename.decode("utf-8", "replace") if filename is not None else None,
                part_type,
                b"".join(state["data"]),
            )
        )

    def on_end():
        state["ended"] = True

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
        max_size=MAX_UPLOAD_BYTES,
    )
    parser.write(raw)
    parser.finalize()
    if not state["ended"]:
        raise MultipartParseError("the body ends before its closing boundary")
    return parts


# ------------------------------------------------------------------ units and prices
# WAV sample formats whose block is channels x bits/8: PCM, IEEE float, A-law, mu-law,
# and WAVE_FORMAT_EXTENSIBLE (which carries one of these).
_WAV_FORMATS = {1, 3, 6, 7, 0xFFFE}
# A file that is not a WAV we can read is billed as if it were speech at 16 kbit/s:
# 2,000 bytes a second (compressed speech is rarely smaller), unless the provider says.
BYTES_PER_SECOND_ESTIMATE = 2000


def wav_seconds(data: bytes) -> float | None:
    """The length of a WAV file: its data chunk's bytes (those that were actually sent,
    whatever the header claims) over sample_rate x block_align. The header's byte rate is
    never used (it is only a hint, and a lie there would make the file free). None if the
    file is not a WAV or its header makes no sense: a format whose block is not
    channels x bits/8 (compressed WAVs), zero or absurd rates, channels or sample sizes."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, frame_bytes = 12, 0
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        start = pos + 8
        if chunk == b"fmt ":
            if size < 16 or start + 16 > len(data):
                return None
            fmt, channels, rate, _byte_rate, align, bits = struct.unpack_from(
                "<HHIIHH", data, start
            )
            if (
                fmt not in _WAV_FORMATS
                or not 1 <= channels <= 32
                or not 1000 <= rate <= 768_000
                or bits not in (8, 16, 24, 32, 64)
                or align != channels * bits // 8
            ):
                return None
            frame_bytes = rate * align  # bytes of one second of this audio
        elif chunk == b"data":
            if not frame_bytes:
                return None  # data before its format: not a WAV we can read
            sent = len(data) - start
            # A size of 0 (or past the end) is a streamed WAV: players read to the end.
            return (min(size, sent) if size else sent) / frame_bytes
        pos = start + size + (size & 1)  # chunks are padded to an even length
    return None


def upload_seconds(data: bytes) -> float:
    """The seconds an upload is billed when the provider does not say: a WAV's length,
    else (or for a WAV with no samples) its size at 16 kbit/s. Never 0 for a non-empty
    file, whatever its header says."""
    seconds = wav_seconds(data)
    return seconds if seconds else len(data) / BYTES_PER_SECOND_ESTIMATE


def _size_key(size) -> str:
    return str(size).lower().replace("-x-", "x").replace(" ", "")


def unit_price(dep: DeploymentInfo, endpoint: str, body: dict) -> float:
    """USD per unit of this endpoint on this deployment (0: not priced by the unit). An
    image is priced by its quality and size where the catalog says."""
    unit = ENDPOINTS[endpoint]
    if not unit:
        return 0.0
    costs = dep.unit_costs
    if unit == "image":
        size, quality = body.get("size"), body.get("quality")
        for key in (
            f"image:{quality}/{_size_key(size)}" if size and quality else None,
            f"image:{_size_key(size)}" if size else None,
            "image",
        ):
            if key and key in costs:
                return costs[key]
        return 0.0
    return costs.get(unit, 0.0)


def _text_tokens(call: MediaCall) -> int:
    """The text a request carries, counted: for the tpm buckets and honest token fields."""
    body = call.body
    if call.endpoint == "rerank":
        docs = body.get("documents") or ()
        texts = [body.get("query") or ""] + [
            d if isinstance(d, str) else str(d.get("text", "")) for d in docs
        ]
        return sum(tokens.count_tokens(t) for t in texts)
    if call.endpoint == "moderations":
        value = body.get("input")
        items = value if isinstance(value, list) else [value]
        return sum(
            tokens.count_tokens(i if isinstance(i, str) else str(i.get("text") or ""))
            for i in items
            if isinstance(i, str | dict)
        )
    text = body.get("prompt") if call.endpoint != "speech" else body.get("input")
    return tokens.count_tokens(text) if isinstance(text, str) else 0


def _estimated_units(call: MediaCall) -> float:
    """Units to reserve against the spend cap before the call."""
    if call.endpoint == "images":
        return float(call.body.get("n") or 1)
    if call.endpoint == "speech":
        return float(len(call.body["input"]))
    if call.upload is not None:
        # Not a WAV: an estimate settled to the provider's length after the call.
        return upload_seconds(call.upload.data)
    return 1.0


def _answer_units(call: MediaCall, answer: MediaAnswer) -> float | None:
    """The units the answer says were used: images made, seconds of audio (the
    provider's, else upload_seconds), one search. None for endpoints without units."""
    data = answer.data or {}
    if call.endpoint == "images":
        made = data.get("data")
        return float(len(made)) if isinstance(made, list) else float(call.body.get("n") or 1)
    if call.endpoint in UPLOAD_ENDPOINTS:
        duration = data.get("duration")
        usage = data.get("usage")
        if isinstance(usage, dict) and usage.get("type") == "duration":
            duration = usage.get("seconds", duration)
        if type(duration) in (int, float) and 0 < duration < 10**6:
            return float(duration)
        return upload_seconds(call.upload.data)
    if call.endpoint == "rerank":
        return 1.0
    return None


def _reported_tokens(data) -> tuple[int, int] | None:
    """(input, output) tokens of a media answer's usage, in any of the shapes providers
    use (prompt/completion, input/output, Cohere's meta.billed_units); None if none."""
    if not isinstance(data, dict):
        return None
    usage = data.get("usage")
    if not isinstance(usage, dict):
        meta = data.get("meta")
        usage = meta.get("billed_units") if isinstance(meta, dict) else None
    if not isinstance(usage, dict):
        return None
    inp = usage.get("input_tokens", usage.get("prompt_tokens", usage.get("total_tokens")))
    out = usage.get("output_tokens", usage.get("completion_tokens", 0))
    if type(inp) is not int or type(out) is not int or inp < 0 or out < 0:
        return None
    return inp, out


def _cost(dep: DeploymentInfo, price: float, units, input_tokens: int, output_tokens: int) -> float:
    """By the unit where the deployment has a unit price; by tokens otherwise (never both:
    a model priced per image also reports tokens)."""
    if price > 0:
        return (units or 0.0) * price
    return dep.cost(input_tokens, output_tokens)


_warned_unpriced: set[tuple[int, str]] = set()  # (deployment id, endpoint) warned about


def _warn_unpriced(dep: DeploymentInfo, endpoint: str) -> None:
    """A unit-priced endpoint billed $0 (no catalog price, no unit price): said once per
    deployment and endpoint in a process (the dashboard marks it too), not per request."""
    if (dep.id, endpoint) in _warned_unpriced:
        return
    _warned_unpriced.add((dep.id, endpoint))
    log.warning(
        "%s: no price for %s (neither the catalog nor the deployment's unit price): "
        "its requests are billed $0; set the deployment's unit price",
        dep.label,
        endpoint,
    )


def _reserve(candidates, call: MediaCall, text_tokens: int) -> float:
    units = _estimated_units(call)
    return max(
        max(unit_price(d, call.endpoint, call.body) * units, d.cost(text_tokens, 0))
        for d in candidates
    )


# ------------------------------------------------------------------ the request
async def handle(gw, ctx, req, Outgoing, refuse_if_budget_spent):  # noqa: N803
    """One media request through the Gateway ``gw``: the same key, policy, routing,
    limits, failover and usage record as chat (``Outgoing`` and the budget check are
    proxy's)."""
    if req.too_large:
        limit = MAX_UPLOAD_BYTES if req.endpoint in UPLOAD_ENDPOINTS else gw.max_body_bytes
        raise errors.too_large(limit)
    model, call = parse(req)
    ctx.model_requested = model
    if ctx.org.blocked:
        refuse_if_budget_spent(ctx.key, ctx.org)
    candidates = gw._candidates(ctx, model)
    text_tokens = _text_tokens(call)
    spend, verdict = await gw._admit(ctx, text_tokens, _reserve(candidates, call, text_tokens))
    try:
        if call.endpoint == "speech":
            return await _speech(gw, ctx, candidates, call, spend, verdict.backend, Outgoing)

        async def attempt(dep, timeout):
            return await gw.upstreams.for_deployment(dep).media(call.endpoint, dep, call, timeout)

        answer = await gw._attempts(ctx, candidates, attempt)
    except BaseException:
        # Nothing was spent: every deployment failed, or the provider refused the request
        # (a 4xx, when ctx.dep is set): the reservation is given back either way.
        if spend is not None:
            gw.limiter.settle(spend, 0.0, verdict.backend)
        raise
    dep = ctx.dep
    units = _answer_units(call, answer)
    reported = _reported_tokens(answer.data)
    if reported is not None:
        input_tokens, output_tokens = reported
    else:
        input_tokens = text_tokens if call.endpoint in ("moderations", "rerank") else 0
        output_tokens = 0
    price = unit_price(dep, call.endpoint, call.body)
    cost = _cost(dep, price, units, input_tokens, output_tokens)
    if cost == 0 and price == 0 and ENDPOINTS[call.endpoint]:
        _warn_unpriced(dep, call.endpoint)
    if spend is not None:
        gw.limiter.settle(spend, cost, verdict.backend)
    gw._record(
        ctx,
        "success",
        200,
        counts=tokens.Counts(input_tokens, output_tokens),
        cost=cost,
        units=units,
        unit=ENDPOINTS[call.endpoint] if units is not None else "",
    )
    content_type = "application/json" if answer.data is not None else answer.content_type
    body = orjson.dumps(answer.data) if answer.data is not None else answer.raw
    return Outgoing(200, body, gw._headers(ctx, {"Content-Type": content_type}), cost=cost)


async def _speech(gw, ctx, candidates, call: MediaCall, spend, backend, Outgoing):  # noqa: N803
    """Audio bytes streamed through as they come; the row is written when they end, or
    with 499 when the client leaves."""

    async def attempt(dep, timeout):
        return await gw.upstreams.for_deployment(dep).speech(dep, call, timeout)

    content_type, chunks = await gw._attempts(ctx, candidates, attempt)
    ctx.ttft_ms = int((time.perf_counter() - ctx.t0) * 1000)
    dep = ctx.dep
    units = float(len(call.body["input"]))
    cost = _cost(dep, unit_price(dep, "speech", call.body), units, 0, 0)
    result = Outgoing(200, b"", gw._headers(ctx, {"Content-Type": content_type}), cost=cost)

    async def relay():
        recorded = False

        def account(status, http_status, error_type=""):
            nonlocal recorded
            recorded = True
            if spend is not None:
                gw.limiter.settle(spend, cost, backend)
            gw._record(
                ctx,
                status,
                http_status,
                error_type,
                cost=cost,
                units=units,
                unit="character",
            )

        try:
            async with contextlib.aclosing(chunks) as pieces:
                async for piece in pieces:
                    if piece:
                        yield piece
            account("success", 200)
        except StreamBroken:
            # The audio is cut short; the provider charged for the whole input.
            account("error", 502, "stream_broken")
        finally:
            if not recorded:  # the client went away (cancelled)
                account("error", 499, "client_disconnected")

    result.stream = relay()
    return result
