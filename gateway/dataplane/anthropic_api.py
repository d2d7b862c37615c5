"""The Anthropic Messages API (/v1/messages): its checks and errors, the native call to
Anthropic deployments, and the translation to and from chat completions for the rest."""

import uuid
import weakref
from collections.abc import AsyncIterator

import orjson

from . import credentials, provider_kinds, tokens
from .errors import GatewayError
from .snapshot import DeploymentInfo, served_tier
from .upstream import (
    DONE_EVENT,
    UNPARSED,
    PassthroughAdapter,
    StreamBroken,
    UpstreamError,
    Usage,
    cache_writes,
    cited_search,
    cites_web,
    redact,
    refuse_withheld,
    web_searches,
)
from .validation import Invalid, _shown, exact_json, json_type, not_json, requested_model

ENDPOINTS = frozenset({"messages", "count_tokens"})
DEFAULT_VERSION = "2023-06-01"
ANTHROPIC_BASE = "https://api.anthropic.com"
MAX_DEPTH = 64
INT32_MAX = 2**31 - 1

# Anthropic's error types by HTTP status (its SDKs pick their exception class by status).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error_body(exc: GatewayError, request_id: str) -> dict:
    """A GatewayError in Anthropic's shape: {"type": "error", "error": {type, message}}."""
    kind = ERROR_TYPES.get(exc.status) or (
        "api_error" if exc.status >= 500 else "invalid_request_error"
    )
    return {
        "type": "error",
        "error": {"type": kind, "message": exc.message},
        "request_id": request_id,
    }


# ------------------------------------------------------------------ request checks
def _bad(message: str, param: str | None = None, code: str = "invalid_value") -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", code, param)


def _expect(ok: bool, where: str, what: str, value) -> None:
    if not ok:
        raise _bad(
            f"{where}: Input should be {what}, not {json_type(value)}.", where, "invalid_type"
        )


def _number(where, value, lo, hi, *, integer=False) -> None:
    is_num = not isinstance(value, bool) and isinstance(value, int if integer else int | float)
    _expect(is_num, where, "an integer" if integer else "a number", value)
    if not lo <= value <= hi:
        code = "invalid_value"
        if type(value) is int:  # as /v1/chat/completions names an integer out of range
            code = "integer_above_max_value" if value > hi else "integer_below_min_value"
        raise _bad(f"{where}: must be between {lo} and {hi} (got {_shown(value)}).", where, code)


def _exact_integers(raw: bytes, endpoint: str) -> None:
    """On the way to a 400 for a body orjson could not read as written: an integer of more
    than 64 bits it reads as a float ("not an integer"), one past about 308 digits not at
    all ("not valid JSON"). Read again with Python's json, whose integers have any size,
    and checked again, an integer field out of range is said so instead; anything else
    keeps orjson's answer (validation._out_of_range_integer, for the OpenAI endpoints)."""
    body = exact_json(raw)
    if body is None:
        return
    try:
        _checked(body, raw, endpoint)
    except GatewayError as exc:
        if exc.code in ("integer_above_max_value", "integer_below_min_value"):
            raise


def _text(where, value, *, required=True) -> None:
    if value is None and not required:
        return
    if value is None:
        raise _bad(f"{where}: Field required.", where, "missing_required_parameter")
    _expect(isinstance(value, str), where, "a string", value)


def _image_source(where, source) -> None:
    _expect(isinstance(source, dict), where, "an object", source)
    kind = source.get("type")
    if kind == "base64":
        _text(f"{where}.media_type", source.get("media_type"))
        _text(f"{where}.data", source.get("data"))
    elif kind == "url":
        _text(f"{where}.url", source.get("url"))
    elif kind != "file":
        raise _bad(f'{where}.type: must be "base64", "url" or "file".', f"{where}.type")


def _block(where, block) -> None:
    _expect(isinstance(block, dict), where, "an object", block)
    kind = block.get("type")
    if not isinstance(kind, str) or not kind:
        raise _bad(f"{where}.type: Field required.", f"{where}.type", "missing_required_parameter")
    if kind == "text":
        _text(f"{where}.text", block.get("text"))
    elif kind == "image":
        _image_source(f"{where}.source", block.get("source"))
    elif kind == "tool_use":
        _text(f"{where}.id", block.get("id"))
        _text(f"{where}.name", block.get("name"))
        _expect(
            isinstance(block.get("input"), dict), f"{where}.input", "an object", block.get("input")
        )
    elif kind == "tool_result":
        _text(f"{where}.tool_use_id", block.get("tool_use_id"))
        content = block.get("content")
        if isinstance(content, list):
            for i, inner in enumerate(content):
                _block(f"{where}.content.{i}", inner)
        elif content is not None:
            _text(f"{where}.content", content)


def _content(where, content, *, required=True) -> None:
    if isinstance(content, str):
        return
    if content is None and not required:
        return
    if content is None:
        raise _bad(f"{where}: Field required.", where, "missing_required_parameter")
    _expect(isinstance(content, list), where, "a string or an array of content blocks", content)
    if required and not content:
        raise _bad(f"{where}: at least one content block is required.", where)
    for i, block in enumerate(content):
        _block(f"{where}.{i}", block)


def _too_deep(value, depth: int) -> bool:
    if depth > MAX_DEPTH:
        return True
    items = value.values() if type(value) is dict else value if type(value) is list else ()
    return any(type(v) in (dict, list) and _too_deep(v, depth + 1) for v in items)


def parse_request(raw: bytes, endpoint: str) -> dict:
    """The Messages (or count_tokens) request, every field the gateway reads or translates
    checked; a 400 naming the field, in Anthropic's style, if not."""
    if not raw:
        raise _bad("The request body is empty; send a JSON object.", None, "invalid_json")
    try:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _bad(not_json(exc, raw), None, "invalid_json") from None
        return _checked(body, raw, endpoint)
    except GatewayError as exc:
        if exc.code in ("invalid_json", "invalid_type"):
            _exact_integers(raw, endpoint)
        raise


def _checked(body, raw: bytes, endpoint: str) -> dict:
    if type(body) is not dict:
        raise _bad("The request body must be a JSON object.", None, "invalid_type")
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _too_deep(body, 1):
        raise _bad(f"The request body is nested more than {MAX_DEPTH} levels deep.")
    model = body.get("model")
    _text("model", model)
    if not model:
        raise _bad("model: must be a non-empty name.", "model")
    try:
        body["model"] = requested_model(model)
    except Invalid:  # a name the names rule refuses: no model has it
        raise _bad(
            "model: model names have no control, invisible or text-direction characters.",
            "model",
        ) from None
    if endpoint == "messages" and body.get("max_tokens") is None:
        raise _bad("max_tokens: Field required.", "max_tokens", "missing_required_parameter")
    if body.get("max_tokens") is not None:  # count_tokens may omit it, not send a bad one
        _number("max_tokens", body["max_tokens"], 1, INT32_MAX, integer=True)
    messages = body.get("messages")
    if messages is None:
        raise _bad("messages: Field required.", "messages", "missing_required_parameter")
    _expect(isinstance(messages, list), "messages", "an array", messages)
    if not messages:
        raise _bad("messages: at least one message is required.", "messages")
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        _expect(isinstance(message, dict), where, "an object", message)
        if message.get("role") not in ("user", "assistant"):
            raise _bad(f'{where}.role: must be "user" or "assistant".', f"{where}.role")
        _content(f"{where}.content", message.get("content"))
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        _expect(isinstance(system, list), "system", "a string or an array of text blocks", system)
        for i, block in enumerate(system):
            _block(f"system.{i}", block)
            if block["type"] != "text":
                raise _bad(f'system.{i}.type: system blocks are "text" blocks.', f"system.{i}.type")
    for name, lo, hi, integer in (
        ("temperature", 0, 1, False),
        ("top_p", 0, 1, False),
        ("top_k", 0, INT32_MAX, True),
    ):
        if body.get(name) is not None:
            _number(name, body[name], lo, hi, integer=integer)
    if body.get("stream") is not None:
        _expect(isinstance(body["stream"], bool), "stream", "a boolean", body["stream"])
    thinking = body.get("thinking")
    if thinking is not None:  # passed through to Anthropic, ignored elsewhere: its shape
        _expect(isinstance(thinking, dict), "thinking", "an object", thinking)
        _text("thinking.type", thinking.get("type"))
        if thinking.get("budget_tokens") is not None:
            _number("thinking.budget_tokens", thinking["budget_tokens"], 1, INT32_MAX, integer=True)
    stops = body.get("stop_sequences")
    if stops is not None:
        _expect(isinstance(stops, list), "stop_sequences", "an array of strings", stops)
        for i, stop in enumerate(stops):
            _text(f"stop_sequences.{i}", stop)
    metadata = body.get("metadata")
    if metadata is not None:
        _expect(isinstance(metadata, dict), "metadata", "an object", metadata)
        _text("metadata.user_id", metadata.get("user_id"), required=False)
    tools = body.get("tools")
    if tools is not None:
        _expect(isinstance(tools, list), "tools", "an array", tools)
        for i, tool in enumerate(tools):
            _expect(isinstance(tool, dict), f"tools.{i}", "an object", tool)
            _text(f"tools.{i}.name", tool.get("name"))
            if tool.get("type") in (None, "custom"):
                schema = tool.get("input_schema")
                _expect(isinstance(schema, dict), f"tools.{i}.input_schema", "an object", schema)
    choice = body.get("tool_choice")
    if choice is not None:
        _expect(isinstance(choice, dict), "tool_choice", "an object", choice)
        if choice.get("type") not in ("auto", "any", "tool", "none"):
            raise _bad(
                'tool_choice.type: must be "auto", "any", "tool" or "none".', "tool_choice.type"
            )
        if choice["type"] == "tool":
            _text("tool_choice.name", choice.get("name"))
    return body


# ------------------------------------------------------------------ Messages -> chat
def _image_url(source: dict) -> str:
    if source.get("type") == "url":
        return source["url"]
    return f"data:{source['media_type']};base64,{source['data']}"


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or () if b.get("type") == "text")


def _chat_parts(blocks, where: str, problems: list) -> list:
    parts = []
    for block in blocks:
        kind = block["type"]
        if kind == "text":
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image" and block["source"].get("type") in ("base64", "url"):
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block["source"])}})
        elif kind not in ("thinking", "redacted_thinking"):  # earlier reasoning: not replayed
            problems.append(f"{where}: {kind!r} blocks")
    return parts


def to_chat(body: dict) -> tuple[dict, list[str]]:
    """The chat-completions request that asks what this Messages request asks, and what
    in it has no chat equivalent (a deployment reached by translation refuses those)."""
    problems: list[str] = []
    messages = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _text_of(system)})
    for i, message in enumerate(body["messages"]):
        role, content = message["role"], message["content"]
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
            continue
        where = f"messages.{i}"
        if role == "assistant":
            calls = [
                {
                    "id": b["id"],
                    "type": "function",
                    "function": {"name": b["name"], "arguments": orjson.dumps(b["input"]).decode()},
                }
                for b in content
                if b["type"] == "tool_use"
            ]
            rest = [b for b in content if b["type"] != "tool_use"]
            text = "".join(p["text"] for p in _chat_parts(rest, where, problems) if "text" in p)
            out = {"role": "assistant", "content": text or None}
            if calls:
                out["tool_calls"] = calls
            messages.append(out)
            continue
        pending: list = []
        for block in content:
            if block["type"] != "tool_result":
                pending.append(block)
                continue
            if pending:  # user content before a tool result keeps its place
                messages.append({"role": "user", "content": _chat_parts(pending, where, problems)})
                pending = []
            inner = block.get("content")
            if isinstance(inner, list) and any(b["type"] != "text" for b in inner):
                problems.append(f"{where}: tool results with non-text content")
            text = _text_of(inner)
            if block.get("is_error"):
                text = f"Error: {text}"
            messages.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text})
        if pending:
            messages.append({"role": "user", "content": _chat_parts(pending, where, problems)})
    chat: dict = {"messages": messages, "max_tokens": body.get("max_tokens")}
    if chat["max_tokens"] is None:
        del chat["max_tokens"]  # (count_tokens)
    for name in ("temperature", "top_p", "top_k", "stream"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("stop_sequences"):
        chat["stop"] = body["stop_sequences"]
    user = (body.get("metadata") or {}).get("user_id")
    if user:
        chat["user"] = user
    tools = []
    for tool in body.get("tools") or ():
        if tool.get("type") not in (None, "custom"):
            problems.append(f"the server tool {tool['type']!r}")
            continue
        function = {"name": tool["name"], "parameters": tool["input_schema"]}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        tools.append({"type": "function", "function": function})
    if tools:
        chat["tools"] = tools
    choice = body.get("tool_choice")
    if choice is not None:
        chat["tool_choice"] = {
            "auto": "auto",
            "any": "required",
            "none": "none",
            "tool": {"type": "function", "function": {"name": choice.get("name")}},
        }[choice["type"]]
        if choice.get("disable_parallel_tool_use") and tools:
            chat["parallel_tool_calls"] = False
    for name in ("mcp_servers", "container"):
        if body.get(name):
            problems.append(f"{name!r}")
    return chat, problems


def count_input(chat: dict, body: dict) -> int:
    """Our count of a request's input tokens (count_tokens, and usage nobody reported)."""
    extra = orjson.dumps(body["tools"]).decode() if body.get("tools") else ""
    return tokens.count_prompt_tokens(chat) + tokens.count_tokens(extra)


# ------------------------------------------------------------------ chat -> Messages
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def _message_id() -> str:
    return "msg_" + uuid.uuid4().hex[:24]


def _str(value) -> str:
    return value if isinstance(value, str) else ""


def _tool_input(arguments) -> dict:
    try:
        value = orjson.loads(arguments) if arguments else {}
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def _anthropic_usage(usage, tier: str | None = None, cited: int = 0) -> dict:
    """A chat usage in Anthropic's shape; the service tier the chat answer said it was
    served at rides along as an attribute (upstream.Usage), never shown to the client.
    ``cited``: the search a search model's answer ran (upstream.cited_search), shown as
    Anthropic shows its web search tool's."""
    if tier is not None:
        return Usage(_anthropic_usage(usage, cited=cited), tier=tier)
    if not isinstance(usage, dict):
        out = {"input_tokens": 0, "output_tokens": 0}
        if cited:  # (the tokens are counted by the caller; the search is not countable)
            out["server_tool_use"] = {"web_search_requests": cited}
        return out
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    cached = cached if type(cached) is int and cached > 0 else 0
    written, written_1h = cache_writes(usage)
    prompt = usage.get("prompt_tokens") if type(usage.get("prompt_tokens")) is int else 0
    output = usage.get("completion_tokens") if type(usage.get("completion_tokens")) is int else 0
    out = {"input_tokens": max(0, prompt - cached - written), "output_tokens": max(0, output)}
    if cached:
        out["cache_read_input_tokens"] = cached
    if written:
        out["cache_creation_input_tokens"] = written
        out["cache_creation"] = {
            "ephemeral_5m_input_tokens": written - written_1h,
            "ephemeral_1h_input_tokens": written_1h,
        }
    searches = max(web_searches(usage), cited)
    if searches:  # as Anthropic reports its web search tool's
        out["server_tool_use"] = {"web_search_requests": searches}
    return out


def message_from_chat(data: dict, model: str) -> dict:
    """A chat completion as a Messages response (its first choice). Its ``model`` is the
    one that answered, as the chat answer names it (``model``, the deployment's upstream
    model, where it names none): what /v1/chat/completions returns too."""
    choices = data.get("choices") if isinstance(data, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    message = message if isinstance(message, dict) else {}
    content = []
    if isinstance(message.get("content"), str) and message["content"]:
        content.append({"type": "text", "text": message["content"]})
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        if not isinstance(call, dict):
            continue
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        content.append(
            {
                "type": "tool_use",
                "id": _str(call.get("id")) or "toolu_" + uuid.uuid4().hex[:24],
                "name": _str(function.get("name")),
                "input": _tool_input(function.get("arguments")),
            }
        )
    finish = choice.get("finish_reason") if isinstance(choice, dict) else None
    stop = STOP_REASONS.get(_str(finish), "end_turn")
    if stop == "end_turn" and any(b["type"] == "tool_use" for b in content):
        stop = "tool_use"
    answered = data.get("model") if isinstance(data, dict) else None
    return {
        "id": _message_id(),
        "type": "message",
        "role": "assistant",
        "model": answered if isinstance(answered, str) and answered else model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": _anthropic_usage(
            data.get("usage") if isinstance(data, dict) else None,
            served_tier(data),
            cited_search(data),
        ),
    }


def event(data: dict) -> tuple[bytes, dict]:
    """One server-sent event as Anthropic sends it: `event: <type>` then its data."""
    return b"event: " + data["type"].encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n", data


class ChatStreamTranslator:
    """Chat-completion stream chunks in, Messages stream events out."""

    def __init__(self, model: str):
        self.model = model
        self.index = -1  # the content block open now (-1: none)
        self.open = None  # ("text",) or ("tool", chat tool-call index)
        self.tools: dict[int, int] = {}  # chat tool-call index -> content block index
        self.stop = None
        self.usage = None
        self.tier = None  # the service tier the chat answer says it was served at
        self.cited = 0  # a search model's answer cited the web (upstream.cites_web)
        self.answered = False  # saw a role, content or a finish: an answer, if empty

    def start(self) -> list:
        message = {
            "id": _message_id(),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [event({"type": "message_start", "message": message}), event({"type": "ping"})]

    def _close(self, out: list) -> None:
        if self.open is not None:
            out.append(event({"type": "content_block_stop", "index": self.index}))
            self.open = None

    def _open(self, out: list, block: dict, opened) -> int:
        self._close(out)
        self.index += 1
        self.open = opened
        out.append(
            event({"type": "content_block_start", "index": self.index, "content_block": block})
        )
        return self.index

    def feed(self, chunk) -> list:
        out: list = []
        if not isinstance(chunk, dict):
            return out
        if chunk.get("error") and not chunk.get("choices"):
            err = chunk["error"]
            message = err.get("message") if isinstance(err, dict) else err
            out.append(
                event({"type": "error", "error": {"type": "api_error", "message": str(message)}})
            )
            return out
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        self.tier = served_tier(chunk) or self.tier
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            self.answered = self.answered or bool(delta.get("role"))
            self.cited = self.cited or int(cites_web(delta))
            text = delta.get("content")
            if isinstance(text, str) and text:
                self.answered = True
                if self.open != ("text",):
                    self._open(out, {"type": "text", "text": ""}, ("text",))
                delta_ev = {"type": "text_delta", "text": text}
                out.append(
                    event({"type": "content_block_delta", "index": self.index, "delta": delta_ev})
                )
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if not isinstance(call, dict):
                    continue
                self.answered = True
                n = call.get("index", 0) if type(call.get("index", 0)) is int else 0
                function = call.get("function") if isinstance(call.get("function"), dict) else {}
                if n not in self.tools:
                    block = {
                        "type": "tool_use",
                        "id": _str(call.get("id")) or "toolu_" + uuid.uuid4().hex[:24],
                        "name": _str(function.get("name")),
                        "input": {},
                    }
                    self.tools[n] = self._open(out, block, ("tool", n))
                args = function.get("arguments")
                if isinstance(args, str) and args:
                    delta_ev = {"type": "input_json_delta", "partial_json": args}
                    out.append(
                        event(
                            {
                                "type": "content_block_delta",
                                "index": self.tools[n],
                                "delta": delta_ev,
                            }
                        )
                    )
            if choice.get("finish_reason"):
                self.answered = True
                self.stop = STOP_REASONS.get(_str(choice["finish_reason"]), "end_turn")
        return out

    def finish(self) -> list:
        out: list = []
        self._close(out)
        stop = self.stop or "end_turn"
        if stop == "end_turn" and self.tools:
            stop = "tool_use"
        usage = _anthropic_usage(self.usage, self.tier, self.cited)
        out.append(
            event(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": usage,
                }
            )
        )
        out.append(event({"type": "message_stop"}))
        return out


# ------------------------------------------------------------------ usage
def _is_count(value) -> bool:
    return type(value) is int and 0 <= value <= tokens.MAX_COUNT


def usage_counts(usage) -> tokens.Counts | None:
    """The tokens of a Messages usage object, input counting the cached and cache-written
    tokens as chat rows do; None if it is missing or unusable."""
    if not isinstance(usage, dict):
        return None
    if not _is_count(usage.get("input_tokens")) or not _is_count(usage.get("output_tokens")):
        return None
    read = usage.get("cache_read_input_tokens")
    read = read if _is_count(read) else 0
    written = usage.get("cache_creation_input_tokens")
    written = written if _is_count(written) else 0
    if not usage["input_tokens"] + read + written and not usage["output_tokens"]:
        return None  # all zeros: nothing was reported
    split = usage.get("cache_creation")
    hour = split.get("ephemeral_1h_input_tokens") if isinstance(split, dict) else 0
    hour = min(hour, written) if _is_count(hour) else 0
    return tokens.Counts(
        usage["input_tokens"] + read + written,
        usage["output_tokens"],
        read,
        written,
        hour,
        web_searches(usage),
    )


def output_text(message: dict) -> str:
    """The generated text of a Messages response, for counting when no usage came."""
    parts = []
    for block in message.get("content") or () if isinstance(message, dict) else ():
        if not isinstance(block, dict):
            continue
        for name in ("text", "thinking"):
            if isinstance(block.get(name), str):
                parts.append(block[name])
        if block.get("type") == "tool_use":
            parts.append(str(block.get("name", "")) + orjson.dumps(block.get("input")).decode())
    return "".join(parts)


class StreamSeen:
    """What a Messages stream reported about its usage, and its output to count if not."""

    __slots__ = ("usage", "pieces", "final", "tier", "searches")

    def __init__(self):
        self.usage: dict = {}
        self.pieces: list[str] = []
        self.final = False  # message_delta's usage came: the output count is the whole
        self.tier = None  # a translated stream's served tier (_anthropic_usage)
        self.searches = 0  # web_search server tool calls seen as they streamed

    def reported(self) -> dict:
        """The usage to bill: as reported, but a stream cut short (no message_delta) bills
        at least the output it relayed (message_start's output count is a placeholder), and
        the web searches whose calls it relayed (the provider ran them)."""
        usage = self.usage
        if self.searches > web_searches(usage):
            usage = {**usage, "server_tool_use": {"web_search_requests": self.searches}}
        if self.final or not usage:
            return usage
        output = usage.get("output_tokens")
        counted = tokens.count_tokens(self.text())
        return {**usage, "output_tokens": max(counted, output if _is_count(output) else 0)}

    def add(self, ev: dict) -> None:
        kind = ev.get("type")
        if kind == "message_start":
            message = ev.get("message")
            if isinstance(message, dict) and isinstance(message.get("usage"), dict):
                self.usage.update(message["usage"])
        elif kind == "message_delta" and isinstance(ev.get("usage"), dict):
            self.final = True
            self.tier = getattr(ev["usage"], "tier", None) or self.tier
            # Cumulative counts: they replace what message_start said (zeros excepted).
            self.usage.update({k: v for k, v in ev["usage"].items() if v or k not in self.usage})
        elif kind == "content_block_delta" and isinstance(ev.get("delta"), dict):
            delta = ev["delta"]
            for name in ("text", "partial_json", "thinking"):
                if isinstance(delta.get(name), str):
                    self.pieces.append(delta[name])
        elif kind == "content_block_start" and isinstance(ev.get("content_block"), dict):
            block = ev["content_block"]
            name = block.get("name")
            if isinstance(name, str):
                self.pieces.append(name)
            if block.get("type") == "server_tool_use" and name == "web_search":
                self.searches += 1

    def text(self) -> str:
        return "".join(self.pieces)


def _carries_output(ev) -> bool:
    return isinstance(ev, dict) and ev.get("type") in (
        "content_block_delta",
        "message_delta",
        "message_stop",
    )


def _error_event(ev, dep: DeploymentInfo) -> UpstreamError | None:
    if not isinstance(ev, dict) or ev.get("type") != "error":
        return None
    err = ev.get("error") if isinstance(ev.get("error"), dict) else {}
    status = {"overloaded_error": 529, "rate_limit_error": 429}.get(err.get("type"), 502)
    return UpstreamError(
        f"{dep.label} sent an error event: {redact(str(err.get('message')), dep)[:200]}",
        status,
        body=redact(ev, dep),
    )


# ------------------------------------------------------------------ calling providers
class NativeAdapter(PassthroughAdapter):
    """Anthropic's own /v1/messages, over the pass-through's pooled sessions: the body goes
    as sent (its model replaced by the deployment's upstream id) with the connection's key."""

    def __init__(self, http: PassthroughAdapter, ambient_credentials: bool):
        self.http = http
        self.connector = http.connector
        self._sessions = http._sessions
        self.ambient_credentials = ambient_credentials

    @property
    def network(self):
        return self.http.network

    def _request(self, endpoint, dep: DeploymentInfo, body):
        body, version, beta = body
        refuse_withheld(dep)
        kind = provider_kinds.get(dep.kind)
        creds = dep.credentials
        refused = credentials.problem(
            kind, creds, ambient_allowed=self.ambient_credentials, api_base=dep.api_base
        )
        if refused:
            raise UpstreamError(f"{dep.label} is not configured: {refused}.", 502)
        base = (dep.api_base or ANTHROPIC_BASE).rstrip("/").removesuffix("/v1/messages")
        base = base.removesuffix("/v1")
        path = "/v1/messages/count_tokens" if endpoint == "count_tokens" else "/v1/messages"
        headers = {"Content-Type": "application/json", "anthropic-version": version}
        if beta:
            headers["anthropic-beta"] = beta
        key = credentials.api_key(kind, creds, ambient_allowed=self.ambient_credentials)
        if key:
            headers["x-api-key"] = key
        return base + path, headers, orjson.dumps({**body, "model": dep.upstream_model})


_natives: "weakref.WeakKeyDictionary[PassthroughAdapter, NativeAdapter]" = (
    weakref.WeakKeyDictionary()
)


def _native(upstreams):
    """The native adapter of ``upstreams``' pass-through, as its calls are made: watched
    where upstreams watch every provider call (a VPC agent: Upstreams.watched)."""
    adapter = _natives.get(upstreams.http)
    if adapter is None:
        adapter = NativeAdapter(upstreams.http, upstreams.litellm.ambient_credentials)
        _natives[upstreams.http] = adapter
    return upstreams.watched(adapter)


def is_native(upstreams, dep: DeploymentInfo) -> bool:
    """Anthropic deployments get the body as sent, when pass-through is on."""
    kind = provider_kinds.get(dep.kind)
    return upstreams.passthrough and kind is not None and kind.messages_api


def _client_headers(headers) -> tuple[str, str]:
    version = headers.get("anthropic-version") or DEFAULT_VERSION
    return version[:64], headers.get("anthropic-beta", "")[:1024]


async def _native_events(chunks) -> AsyncIterator[list]:
    """The pass-through's `data:` events as Anthropic events (type from the data)."""
    try:
        async for batch in chunks:
            out = []
            for raw, chunk in batch:
                if (raw, chunk) == DONE_EVENT:
                    continue
                if chunk is UNPARSED:
                    try:
                        chunk = orjson.loads(raw[6:-2])
                    except orjson.JSONDecodeError:
                        continue
                if isinstance(chunk, dict) and isinstance(chunk.get("type"), str):
                    out.append(event(chunk))
            if out:
                yield out
    finally:
        await chunks.aclose()


async def _translated_events(chunks, translator: ChatStreamTranslator) -> AsyncIterator[list]:
    try:
        yield translator.start()
        async for batch in chunks:
            out = []
            for raw, chunk in batch:
                if (raw, chunk) == DONE_EVENT:
                    break
                if chunk is UNPARSED:
                    try:
                        chunk = orjson.loads(raw[6:-2])
                    except orjson.JSONDecodeError:
                        continue
                out += translator.feed(chunk)
            if out:
                yield out
        if translator.answered:
            yield translator.finish()
    finally:
        await chunks.aclose()


def _untranslatable_message(dep: DeploymentInfo, problems: list) -> str:
    return (
        f"The model `{dep.model}` is reached through chat completions, which cannot "
        f"carry {', '.join(sorted(set(problems)))[:300]}; these need an Anthropic "
        "deployment (provider kind anthropic)."
    )


def untranslatable(dep: DeploymentInfo, problems: list) -> GatewayError:
    """The 400 /v1/messages answers for what a translated deployment cannot carry (so
    count_tokens, which calls nobody, refuses the same requests)."""
    return _bad(_untranslatable_message(dep, problems), None, "unsupported_value")


def attempt(upstreams, body: dict, chat: dict, problems: list, headers, stream: bool):
    """The ``attempt(dep, timeout)`` of Gateway._attempts for one Messages request: the
    Messages response (or its events and those held until output began)."""
    version_beta = _client_headers(headers)

    def refuse_untranslatable(dep):
        if problems:
            message = _untranslatable_message(dep, problems)
            error = {"message": message, "type": "invalid_request_error"}
            raise UpstreamError(message, 400, body={"error": error})

    def chat_for(dep):
        kind = provider_kinds.get(dep.kind)
        if kind is not None and kind.refuses_top_k and "top_k" in chat:
            return {k: v for k, v in chat.items() if k != "top_k"}  # OpenAI refuses it
        return chat

    async def call(dep, timeout):
        if is_native(upstreams, dep):
            return await _native(upstreams).call("messages", dep, (body, *version_beta), timeout)
        refuse_untranslatable(dep)
        data = await upstreams.for_deployment(dep).call("chat", dep, chat_for(dep), timeout)
        return message_from_chat(data, dep.upstream_model)

    async def open_stream(dep, timeout):
        if is_native(upstreams, dep):
            chunks = _native(upstreams).stream("messages", dep, (body, *version_beta), timeout)
            events = _native_events(chunks)
            translator = None
        else:
            refuse_untranslatable(dep)
            # message_start names the model that answers (as the Responses API's stream
            # does), not the one asked for (`auto`, an alias).
            translator = ChatStreamTranslator(dep.upstream_model)
            chunks = upstreams.for_deployment(dep).stream("chat", dep, chat_for(dep), timeout)
            events = _translated_events(chunks, translator)
        # Hold the events until one carries output: a stream that fails or ends before
        # any is this deployment's failure, and the next one may be tried.
        held, began = [], False
        try:
            async for batch in events:
                for _raw, ev in batch:
                    failed = None if began else _error_event(ev, dep)
                    if failed is not None:
                        raise failed
                    began = began or _carries_output(ev)
                held.extend(batch)  # (an error after output: the relay sends and records it)
                if began:
                    return events, held
        except StreamBroken as exc:
            await events.aclose()
            raise UpstreamError(str(exc)) from exc
        except BaseException:
            await events.aclose()
            raise
        raise UpstreamError(f"{dep.label} answered the stream with no message in it", 502)

    return open_stream if stream else call


async def relay(events, held: list, seen: StreamSeen, account, dep=None):
    """Relay a Messages stream, each upstream read in one write; ``account(status,
    http_status, error_type)`` records its usage once, before its last bytes go out (or
    when the client leaves: a 499)."""
    recorded = False

    async def close(status, http_status, error_type=""):
        nonlocal recorded
        recorded = True
        await events.aclose()
        await account(status, http_status, error_type)

    batch = held
    try:
        while True:
            if batch is None:
                try:
                    batch = await events.__anext__()
                except StopAsyncIteration:
                    break
            out = []
            for raw, ev in batch:
                seen.add(ev)
                if ev.get("type") == "error":
                    raw = redact(raw, dep)  # an upstream that quotes the key it was sent
                out.append(raw)
                if ev.get("type") == "error":
                    # The provider failed after the answer began: the client sees its error
                    # event and no message_stop, and the row says error, not success.
                    await close("error", 502, "stream_error")
                    yield b"".join(out)
                    return
            if out:
                last = batch[-1][1].get("type") == "message_stop"
                if last:
                    await close("success", 200)
                yield b"".join(out)
                if last:
                    return
            batch = None
        # The upstream ended without message_stop: its answer is incomplete.
        await close("error", 502, "stream_broken")
        yield event(
            {
                "type": "error",
                "error": {"type": "api_error", "message": "The upstream stream ended early."},
            }
        )[0]
    except StreamBroken as exc:
        await close("error", 502, "stream_broken")
        yield event(
            {
                "type": "error",
                "error": {"type": "api_error", "message": f"The upstream stream broke: {exc}"},
            }
        )[0]
    finally:
        if not recorded:  # the client went away (cancelled), or something unexpected broke
            await close("error", 499, "client_disconnected")


async def native_count(upstreams, dep: DeploymentInfo, body: dict, headers, timeout) -> int | None:
    """Anthropic's own count of a request's input tokens; None if it could not be had
    (the caller counts), a 4xx UpstreamError if Anthropic refused the request."""
    count_body = {k: v for k, v in body.items() if k not in ("max_tokens", "stream")}
    try:
        data = await _native(upstreams).call(
            "count_tokens", dep, (count_body, *_client_headers(headers)), timeout
        )
    except UpstreamError as exc:
        if exc.status is not None and 400 <= exc.status < 500 and not exc.retryable:
            raise  # the request's fault (a refused credential is the deployment's: counted here)
        return None
    value = data.get("input_tokens") if isinstance(data, dict) else None
    return value if _is_count(value) else None
