"""/v1/responses: OpenAI's Responses API, passed through to upstreams that serve it and
translated to chat completions (and back, typed stream events included) for the rest.

Both paths go through the Gateway's own machinery (routing, limits, failover, usage rows);
this module only shapes bodies and events. State: a pass-through response is kept by its
upstream, and the id the client sees names the org and the deployment that holds it
(``resp_bn_…``), so a later request (``previous_response_id``, GET, DELETE, input_items)
goes back to the same provider connection, and another org's id is not found. A
translated response is not stored anywhere (``resp_tx_…``): see docs/gateway.md.
"""

import base64
import binascii
import os
import re
import time
import urllib.parse

import orjson

from . import errors, provider_kinds, tokens
from .errors import GatewayError
from .snapshot import served_tier
from .upstream import (
    DONE_EVENT,
    UNPARSED,
    StreamBroken,
    UpstreamError,
    Usage,
    cache_writes,
    carries_output,
    cited_search,
    cites_web,
    empty_answer,
    parse_event,
    redact,
    web_searches,
)
from .upstream import (
    count_of as _count,
)
from .validation import parse_body

ENDPOINTS = frozenset({"responses", "responses.get", "responses.delete", "responses.input_items"})
NATIVE_PREFIX = "resp_bn_"  # kept by the upstream: names the org, deployment and upstream id
TRANSLATED_PREFIX = "resp_tx_"  # answered through chat completions: stored nowhere
MAX_ID = 512
# The query parameters of GET …/input_items and GET /v1/responses/{id} worth forwarding.
QUERY_PARAMS = frozenset({"after", "before", "limit", "order", "include", "include[]"})
# Tools the translation can carry: functions. The others (web_search, file_search,
# computer use, code interpreter, MCP, image generation …) run inside OpenAI.
TRANSLATED_TOOLS = frozenset({"function"})
# Tools a pass-through request may carry: the model's own calls, billed as its tokens. The
# built-in ones OpenAI runs carry per-call fees (and tokens of their own) that Bonito cannot
# price exactly, so they are refused on every path rather than served unmetered; but web
# search, whose calls the response lists and LiteLLM's map prices (searched).
PRICED_TOOLS = frozenset({"function", "custom"})
SEARCH_TOOLS = frozenset(
    {"web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11"}
)
# What an upstream's response id may be (OpenAI's are resp_<hex>): anything else (".",
# "..", "/", "?", "%2f" …) could name another path on the org's connection.
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")
# Stream events that open a response but carry none of it yet.
_PREAMBLE = frozenset({"response.created", "response.in_progress", "response.queued"})


def _bad(message, param=None, code="unsupported_parameter"):
    return errors.bad_request(message, param=param, code=code)


def _not_found(rid: str, param: str | None = None) -> GatewayError:
    note = (
        " Responses answered by translation to chat completions are not stored."
        if rid.startswith(TRANSLATED_PREFIX)
        else ""
    )
    return GatewayError(
        404,
        f"No response with the id {rid[:80]!r} in this organization.{note}",
        "invalid_request_error",
        "response_not_found" if param is None else "previous_response_not_found",
        param,
    )


# ------------------------------------------------------------------ ids
def wrap_id(org_id: int, dep_id: int, upstream_id: str) -> str:
    raw = orjson.dumps([org_id, dep_id, upstream_id])
    return NATIVE_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unwrap_id(rid) -> tuple[int, int, str] | None:
    """(org id, deployment id, upstream id) of an id this gateway gave out, or None."""
    if type(rid) is not str or not rid.startswith(NATIVE_PREFIX) or len(rid) > MAX_ID:
        return None
    text = rid[len(NATIVE_PREFIX) :]
    try:
        value = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return None
    if (
        type(value) is list
        and len(value) == 3
        and type(value[0]) is int
        and type(value[1]) is int
        and type(value[2]) is str
        and _PLAIN_ID.fullmatch(value[2])
    ):
        return value[0], value[1], value[2]
    return None


def _random_hex(n: int) -> str:
    return os.urandom(n).hex()


# ------------------------------------------------------------------ which path
def native(gw, dep) -> bool:
    """Whether this deployment gets the Responses API as sent (its kind serves it and
    pass-through is on), rather than a translation to chat completions."""
    kind = provider_kinds.get(dep.kind)
    return kind is not None and kind.responses_api and gw.upstreams.direct(dep)


def _org_deployment(ctx, dep_id: int):
    """The key's org's deployment with this id that the key may use, or None."""
    from . import keys_check

    for name, deps in ctx.org.deployments.items():
        for dep in deps:
            if dep.id == dep_id:
                if keys_check.model_permitted(
                    ctx.key, ctx.org, name
                ) and keys_check.deployment_permitted(ctx.key, ctx.org, dep):
                    return dep
                return None
    return None


# ------------------------------------------------------------------ request: Responses -> chat
def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(
        p.get("text") or p.get("refusal") or ""
        for p in content or ()
        if isinstance(p, dict) and isinstance(p.get("text") or p.get("refusal") or "", str)
    )


def _chat_content(content, where: str, lenient: bool = False):
    """A message's Responses content as chat content: text stays text; parts become
    chat's text and image_url parts (``lenient``: those chat cannot carry are left out)."""
    if isinstance(content, str):
        return content
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            parts.append({"type": "text", "text": part["refusal"]})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image = {"url": part["image_url"]}
            if isinstance(part.get("detail"), str) and part["detail"] != "auto":
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif not lenient:
            raise _bad(
                f"Content of type {str(kind)[:40]!r} (or an image by file_id) is supported only "
                "on providers with a Responses API (OpenAI, with pass-through on).",
                f"{where}[{j}]",
                "unsupported_value",
            )
    return parts


def _messages(body: dict, lenient: bool = False) -> list[dict]:
    messages = []
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
        return messages
    for i, item in enumerate(items or ()):
        kind = item.get("type")
        where = f"input[{i}]"
        if kind in (None, "message"):
            role = "system" if item["role"] == "developer" else item["role"]
            content = _chat_content(item["content"], f"{where}.content", lenient)
            if role == "assistant" and not isinstance(content, str):
                content = _text_of(content)  # chat's assistant turns are text
            messages.append({"role": role, "content": content})
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)  # parallel calls: one turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": item["call_id"],
                    "content": output if isinstance(output, str) else _text_of(output),
                }
            )
        elif kind == "reasoning" or lenient:
            continue  # a reasoning model's own notes: chat providers take none back
        else:
            raise _bad(
                f"Input items of type {str(kind)[:40]!r} are supported only on providers with "
                "a Responses API (OpenAI, with pass-through on).",
                f"{where}.type",
                "unsupported_value",
            )
    return messages


def _chat_tools(tools, lenient: bool = False) -> list[dict]:
    out = []
    for i, tool in enumerate(tools or ()):
        if tool["type"] not in TRANSLATED_TOOLS and lenient:
            out.append(tool)  # as it is: smart routing counts the tools
            continue
        if tool["type"] not in TRANSLATED_TOOLS:
            raise _bad(
                f"The built-in tool {tool['type'][:40]!r} runs inside OpenAI: it is supported "
                "only on providers with a Responses API (OpenAI, with pass-through on). Other "
                "providers take function tools.",
                f"tools[{i}].type",
                "unsupported_value",
            )
        function = {"name": tool["name"]}
        for name in ("description", "parameters", "strict"):
            if tool.get(name) is not None:
                function[name] = tool[name]
        out.append({"type": "function", "function": function})
    return out


def _chat_tool_choice(choice):
    if isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _bad(
        "tool_choice can be 'auto', 'none', 'required' or a function "
        '({"type": "function", "name": …}) on providers without a Responses API.',
        "tool_choice",
        "unsupported_value",
    )


def _response_format(text):
    fmt = (text or {}).get("format")
    if not fmt or fmt["type"] == "text":
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    schema = {"name": fmt["name"], "schema": fmt["schema"]}
    for name in ("description", "strict"):
        if fmt.get(name) is not None:
            schema[name] = fmt[name]
    return {"type": "json_schema", "json_schema": schema}


def to_chat(body: dict, *, lenient: bool = False) -> dict:
    """The chat-completions body that asks the same as this Responses body; a 400 naming
    the field if it asks for something only a Responses API can do. ``lenient``: what
    chat cannot carry is left out instead (a file part, an item of another type, the
    prompt template, the conversation, another tool choice; other tools stay as they
    are), for the body smart routing scores (routed)."""
    for name in ("prompt", "conversation"):
        if body.get(name) is not None and not lenient:
            raise _bad(
                f"'{name}' is supported only on providers with a Responses API (OpenAI, with "
                "pass-through on).",
                name,
            )
    chat = {"model": body["model"], "messages": _messages(body, lenient)}
    if not chat["messages"] and not lenient:
        raise _bad("input is empty: send at least one message.", "input", "empty_array")
    if body.get("tools"):
        chat["tools"] = _chat_tools(body["tools"], lenient)
    if body.get("tool_choice") is not None:
        try:
            chat["tool_choice"] = _chat_tool_choice(body["tool_choice"])
        except GatewayError:
            if not lenient:
                raise
    for ours, theirs in (
        ("max_output_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("parallel_tool_calls", "parallel_tool_calls"),
        ("user", "user"),
        ("safety_identifier", "user"),
    ):
        if body.get(ours) is not None:
            chat[theirs] = body[ours]
    fmt = _response_format(body.get("text"))
    if fmt is not None:
        chat["response_format"] = fmt
    effort = (body.get("reasoning") or {}).get("effort")
    if isinstance(effort, str):
        chat["reasoning_effort"] = effort
    if body.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def routed(body: dict, chat: dict | None) -> dict:
    """The body smart routing reads of a Responses request: its chat translation ``chat``,
    or for a request only a Responses API can serve (None) to_chat's lenient one, so it
    scores as the same request without what chat cannot carry (it was scored as an empty
    prompt: the cheapest tier) and keeps its end user (a sticky A/B arm), output cap and
    tools; with ``metadata`` too (smart.end_user reads its ``user_id``). Never sent."""
    scored = chat if chat is not None else to_chat(body, lenient=True)
    if body.get("metadata") is not None:
        scored = {**scored, "metadata": body["metadata"]}
    return scored


# ------------------------------------------------------------------ answer: chat -> Responses
def responses_usage(usage, cited: int = 0) -> dict | None:
    """Chat's usage object as the Responses API's, or None if it is not usable. ``cited``:
    the search a search model's answer ran (upstream.cited_search), kept beside it."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if type(prompt) is not int or type(completion) is not int or prompt < 0 or completion < 0:
        return None
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    out_details = usage.get("completion_tokens_details")
    reasoning = out_details.get("reasoning_tokens") if isinstance(out_details, dict) else 0
    written, written_1h = cache_writes(usage)
    # The 1-hour part has no field in the Responses shape: kept beside it (Usage).
    return Usage(
        {
            "input_tokens": prompt,
            "input_tokens_details": {
                "cached_tokens": _count(details.get("cached_tokens")),
                # OpenAI's chat reports none; LiteLLM an Anthropic or Bedrock model's
                "cache_write_tokens": written,
            },
            "output_tokens": completion,
            "output_tokens_details": {
                "reasoning_tokens": reasoning if type(reasoning) is int else 0
            },
            "total_tokens": prompt + completion,
        },
        written=written,
        written_1h=written_1h,
        searches=max(web_searches(usage), cited),  # no field in the Responses shape either
    )


def usage_counts(usage) -> tokens.Counts | None:
    """The tokens of a Responses usage object, or None."""
    if not isinstance(usage, dict):
        return None
    i, o = usage.get("input_tokens"), usage.get("output_tokens")
    if type(i) is not int or type(o) is not int:
        return None
    if not (0 <= i <= tokens.MAX_COUNT and 0 <= o <= tokens.MAX_COUNT):
        return None
    details = usage.get("input_tokens_details")
    details = details if isinstance(details, dict) else {}
    written = _count(details.get("cache_write_tokens"))
    hour = min(usage.cache_written_1h, written) if isinstance(usage, Usage) else 0
    searches = usage.searches if isinstance(usage, Usage) else 0
    return tokens.Counts(i, o, _count(details.get("cached_tokens")), written, hour, searches)


def searched(response) -> int:
    """The web searches in a Responses object's output (its ``web_search_call`` items, as
    LiteLLM counts the web_search tool's calls to bill them)."""
    output = response.get("output") if isinstance(response, dict) else None
    items = output if isinstance(output, list) else ()
    return sum(1 for i in items if isinstance(i, dict) and i.get("type") == "web_search_call")


def _response(rid, body, model, created, status, output, usage) -> dict:
    """A Responses API response object, echoing the request's settings as OpenAI does."""
    text = body.get("text") or {}
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "store": False,  # translated answers are stored nowhere
        "temperature": body.get("temperature", 1.0),
        "text": {**text, "format": text.get("format") or {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage,
        "metadata": body.get("metadata") or {},
        # OpenAI's spec types `user` as a string: left out when the request had none.
        **({"user": body["user"]} if type(body.get("user")) is str else {}),
    }


def _finish_status(response: dict, finish) -> None:
    reason = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(finish)
    if reason is not None:
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": reason}


def _text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def from_chat(data, rid: str, body: dict, fallback_model: str) -> dict | None:
    """The Responses object for a chat completion, or None if ``data`` is not one."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    if not isinstance(message, dict):
        return None
    output, parts = [], []
    content = message.get("content")
    text = content if isinstance(content, str) else _text_of(content) if content else ""
    calls = message.get("tool_calls") if isinstance(message.get("tool_calls"), list) else []
    if text or not calls:
        parts.append(_text_part(text))
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    if parts:
        output.append(
            {
                "type": "message",
                "id": "msg_" + _random_hex(16),
                "status": "completed",
                "role": "assistant",
                "content": parts,
            }
        )
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        output.append(
            {
                "type": "function_call",
                "id": "fc_" + _random_hex(16),
                "call_id": call.get("id") or "call_" + _random_hex(12),
                "name": function.get("name") or "",
                "arguments": function.get("arguments") or "",
                "status": "completed",
            }
        )
    created = data.get("created") if type(data.get("created")) is int else int(time.time())
    model = data.get("model") if isinstance(data.get("model"), str) else fallback_model
    usage = responses_usage(data.get("usage"), cited_search(data))
    response = _response(rid, body, model, created, "completed", output, usage)
    _finish_status(response, choices[0].get("finish_reason"))
    return response


def output_text(response: dict) -> str:
    """The generated text of a Responses object (text, refusals, call arguments), for
    counting when the provider reports no usage."""
    pieces = []
    for item in response.get("output") or ():
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call":
            pieces += [item.get("name") or "", item.get("arguments") or ""]
        for part in item.get("content") or ():
            if isinstance(part, dict):
                pieces.append(part.get("text") or part.get("refusal") or "")
    return "".join(p for p in pieces if isinstance(p, str))


# ------------------------------------------------------------------ stream events
def _sse(event: dict) -> bytes:
    kind = event.get("type")
    data = b"data: " + orjson.dumps(event) + b"\n\n"
    if isinstance(kind, str) and 0 < len(kind) <= 100 and kind.isprintable():
        return b"event: " + kind.encode() + b"\n" + data
    return data


class ChatEvents:
    """Chat completion chunks in, the Responses API's typed events out: created and
    in_progress first, each output item added, its deltas, done, then completed (or
    incomplete) with the whole response and its usage."""

    def __init__(self, rid: str, body: dict, model: str, dep=None):
        self.rid, self.body, self.model, self.dep = rid, body, model, dep
        self.created = int(time.time())
        self.seq = 0
        self.output: list[dict] = []
        self.open: list[int] = []  # output indexes of items not yet done, in order
        self.message: int | None = None  # the open message item's index
        self.calls: dict[int, int] = {}  # chat tool-call index -> output index
        self.texts: dict[int, list[str]] = {}  # output index -> its text pieces
        self.usage = None
        self.searches = 0  # a search model's cited answer (its usage holds any other's)
        self.tier = None  # the service tier the provider says it served
        self.finish = None
        self.failed = False
        self.pieces: list[str] = []

    def _event(self, kind: str, **fields) -> bytes:
        event = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return _sse(event)

    def _snapshot(self, status: str) -> dict:
        response = _response(
            self.rid, self.body, self.model, self.created, status, self.output, None
        )
        if status != "in_progress":
            response["usage"] = self.usage
            _finish_status(response, self.finish)
        return orjson.loads(orjson.dumps(response))  # a copy: the items change later

    def start(self) -> list[bytes]:
        snap = self._snapshot("in_progress")
        return [
            self._event("response.created", response=snap),
            self._event("response.in_progress", response=snap),
        ]

    def _add(self, item: dict) -> bytes:
        index = len(self.output)
        self.output.append(item)
        self.open.append(index)
        return self._event("response.output_item.added", output_index=index, item=dict(item))

    def _text(self, piece: str) -> list[bytes]:
        out = []
        if self.message is None:
            item = {
                "type": "message",
                "id": "msg_" + _random_hex(16),
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            out.append(self._add(item))
            self.message = len(self.output) - 1
            self.texts[self.message] = []
            out.append(
                self._event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=self.message,
                    content_index=0,
                    part=_text_part(""),
                )
            )
        self.texts[self.message].append(piece)
        out.append(
            self._event(
                "response.output_text.delta",
                item_id=self.output[self.message]["id"],
                output_index=self.message,
                content_index=0,
                delta=piece,
                logprobs=[],
            )
        )
        return out

    def _call(self, call: dict) -> list[bytes]:
        out = []
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        index = call.get("index") if type(call.get("index")) is int else 0
        if index not in self.calls:
            if self.message is not None:
                out += self._close(self.message)
            item = {
                "type": "function_call",
                "id": "fc_" + _random_hex(16),
                "call_id": call.get("id") or "call_" + _random_hex(12),
                "name": function.get("name") or "",
                "arguments": "",
                "status": "in_progress",
            }
            out.append(self._add(item))
            self.calls[index] = len(self.output) - 1
        at = self.calls[index]
        item = self.output[at]
        if not item["name"] and isinstance(function.get("name"), str):
            item["name"] = function["name"]
        piece = function.get("arguments")
        if isinstance(piece, str) and piece:
            item["arguments"] += piece
            self.pieces.append(piece)
            out.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=at,
                    delta=piece,
                )
            )
        return out

    def _close(self, index: int) -> list[bytes]:
        if index not in self.open:
            return []
        self.open.remove(index)
        item = self.output[index]
        item["status"] = "completed"
        out = []
        if item["type"] == "message":
            text = "".join(self.texts[index])
            part = _text_part(text)
            item["content"] = [part]
            out.append(
                self._event(
                    "response.output_text.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=text,
                    logprobs=[],
                )
            )
            out.append(
                self._event(
                    "response.content_part.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part=part,
                )
            )
            self.message = None
        else:
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        out.append(self._event("response.output_item.done", output_index=index, item=dict(item)))
        return out

    def feed(self, chunk: dict) -> list[bytes]:
        choices = chunk.get("choices")
        if chunk.get("error") and not choices:
            self.failed = True
            error = chunk["error"] if isinstance(chunk["error"], dict) else {}
            message = redact(str(error.get("message") or chunk["error"]), self.dep)[:500]
            return [self._error("stream_error", f"The provider failed mid-answer: {message}")]
        if chunk.get("usage"):
            self.usage = responses_usage(chunk["usage"]) or self.usage
            self.tier = served_tier(chunk) or self.tier
        out = []
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # the Responses API has one answer: n is not offered
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            self.searches = self.searches or int(cites_web(delta))
            for name in ("content", "refusal"):
                piece = delta.get(name)
                if isinstance(piece, str) and piece:
                    self.pieces.append(piece)
                    out += self._text(piece)
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict):
                    out += self._call(call)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def _error(self, code: str, message: str) -> bytes:
        return self._event(
            "error",
            code=code,
            message=message,
            param=None,
            error={"message": message, "type": "server_error", "code": code},
        )

    def broken(self, message: str) -> bytes:
        self.failed = True
        return self._error("stream_broken", message)

    def end(self) -> list[bytes]:
        if self.failed:
            return []
        out = []
        if not self.output:  # an empty answer is still a message
            self.message = None
            out += self._text("")
        for index in list(self.open):
            out += self._close(index)
        snap = self._snapshot("completed")
        kind = "response.completed" if snap["status"] == "completed" else "response.incomplete"
        out.append(self._event(kind, response=snap))
        return out

    def text(self) -> str:
        return "".join(self.pieces)


class NativeEvents:
    """An upstream's own Responses events, relayed: its response id swapped for ours, each
    event named on an ``event:`` line, the usage and text noted for the usage row."""

    def __init__(self, wrap, dep=None):
        self.wrap, self.dep = wrap, dep
        self.usage = None
        self.searches = 0  # web_search_call items: the final response's, or those streamed
        self._search_ids: set = set()
        self.tier = None  # the service tier the provider says it served
        self.failed = False
        self.pieces: list[str] = []

    def feed(self, event: dict) -> list[bytes]:
        response = event.get("response")
        if isinstance(response, dict):
            _rewrite_ids(response, self.wrap, self.dep)
            if response.get("usage"):
                self.usage = response["usage"]
            self.searches = max(searched(response), self.searches)
            self.tier = served_tier(response) or self.tier
        kind = event.get("type")
        item = event.get("item")
        if isinstance(item, dict) and item.get("type") == "web_search_call":
            # Counted as they stream: a client that leaves before the end still pays them.
            self._search_ids.add(str(item.get("id") or event.get("output_index")))
            self.searches = max(self.searches, len(self._search_ids))
        if kind in ("response.output_text.delta", "response.function_call_arguments.delta"):
            if isinstance(event.get("delta"), str):
                self.pieces.append(event["delta"])
        elif kind in ("error", "response.failed"):
            self.failed = True
            event = redact(event, self.dep)  # an upstream that quotes the key it was sent
        return [_sse(event)]

    def broken(self, message: str) -> bytes:
        self.failed = True
        return _sse(
            {
                "type": "error",
                "code": "stream_broken",
                "message": message,
                "param": None,
                "error": {"message": message, "type": "server_error", "code": "stream_broken"},
            }
        )

    def end(self) -> list[bytes]:
        return []

    def text(self) -> str:
        return "".join(self.pieces)


def _rewrite_ids(response: dict, wrap, dep) -> None:
    """A provider's response object as the client gets it: its ids wrapped, and a failed
    one's error (background mode, a stored response; a 200) in the provider's words less
    the credentials and the account's ids, as any provider error (upstream.redact)."""
    for name in ("id", "previous_response_id"):
        if isinstance(response.get(name), str) and response[name]:
            response[name] = wrap(response[name])
    if response.get("error"):
        response["error"] = redact(response["error"], dep)


# ------------------------------------------------------------------ the endpoint
async def handle(gw, ctx, req, Outgoing):
    """POST /v1/responses, and GET/DELETE of a stored response and its input items, as
    the caller's ``Outgoing`` (passed in: the proxy imports this module, not the reverse)."""
    if req.endpoint != "responses":
        return await _stored(gw, ctx, req, Outgoing)
    if req.too_large:
        raise errors.too_large(gw.max_body_bytes)
    body = parse_body(req.body, "responses")
    _refuse_unmetered(body)
    try:
        chat, problem = to_chat(body), None
    except GatewayError as exc:  # only a provider with a Responses API can answer it
        if exc.code == "empty_array":  # nor can one: refused before it is scored or routed
            ctx.model_requested = body["model"]
            raise
        chat, problem = {"model": body["model"], "messages": []}, exc
    candidates = await gw._route(ctx, routed(body, chat if problem is None else None), "responses")
    native_body = {k: v for k, v in body.items() if k != "model"}
    prev = body.get("previous_response_id")
    if prev is not None:
        candidates = _pin(gw, ctx, prev, candidates)
        native_body["previous_response_id"] = unwrap_id(prev)[2]
    if problem is not None:
        candidates = [d for d in candidates if native(gw, d)]
        if not candidates:
            raise problem
    candidates = gw.priced_for_search(candidates, body)
    out_est = body.get("max_output_tokens") or ctx.org.default_max_tokens
    spend, verdict = await gw._admit_tokens(ctx, req.body, candidates, out_est, body)
    chat_body = {k: v for k, v in chat.items() if k != "model"}
    try:
        if body.get("stream") is True:
            return await _stream(
                gw, Outgoing, ctx, candidates, body, native_body, chat_body, spend, verdict.backend
            )
        return await _call(
            gw, Outgoing, ctx, candidates, body, native_body, chat_body, spend, verdict.backend
        )
    except BaseException:
        if ctx.gone:  # the client left before the answer began (Gateway._attempts)
            # A request chat cannot carry has no translation to count: its input as sent.
            prompt = (
                (lambda: tokens.count_prompt_tokens(chat))
                if problem is None
                else (lambda: count_native_input(body))
            )
            gw.bill_gone(ctx, prompt, spend, verdict.backend)
        elif spend is not None:  # a provider's 4xx (ctx.dep set) spent nothing either
            gw.limiter.settle(spend, 0.0, verdict.backend)
        raise


def _refuse_unmetered(body: dict) -> None:
    """A 400 for what the provider would bill outside the answer's usage: background
    responses (their tokens come later, on a GET that reports none to meter) and built-in
    tools with per-call fees. On every path, so no deployment serves them unmetered."""
    if body.get("background") is True:
        raise _bad(
            "background responses are not supported: their usage is billed after the request "
            "ends, where Bonito cannot meter it. Send the request without background (stream "
            "it if it is long).",
            "background",
        )
    for i, tool in enumerate(body.get("tools") or ()):
        if tool["type"] not in PRICED_TOOLS and tool["type"] not in SEARCH_TOOLS:
            raise _bad(
                f"The built-in tool {tool['type'][:40]!r} is not supported: the provider "
                "charges a fee per call that Bonito cannot price, so it would be unmetered. "
                "Use function tools (run the search or code yourself).",
                f"tools[{i}].type",
                "unsupported_value",
            )


def _pin(gw, ctx, prev: str, candidates: list) -> list:
    """The candidates on the provider connection that keeps the previous response."""
    if prev.startswith(TRANSLATED_PREFIX):
        raise _bad(
            "previous_response_id works only with responses kept by a provider with a "
            "Responses API (OpenAI, with pass-through on); this one was answered by "
            "translation to chat completions and is not stored. Send the whole "
            "conversation in input instead.",
            "previous_response_id",
            "unsupported_value",
        )
    found = unwrap_id(prev)
    if found is None or found[0] != ctx.key.org_id:
        raise _not_found(prev, "previous_response_id")
    holder = _org_deployment(ctx, found[1])
    if holder is None:
        raise _not_found(prev, "previous_response_id")
    pinned = [d for d in candidates if d.provider == holder.provider and native(gw, d)]
    if not pinned:
        raise _bad(
            f"The previous response is kept by the provider connection {holder.provider!r}, "
            f"which no deployment of `{ctx.model_requested[:100]}` this key may use is on "
            "(or pass-through is off): continue the conversation there, or send it whole "
            "in input.",
            "previous_response_id",
            "unsupported_value",
        )
    return pinned


def _wrapper(ctx, dep):
    org_id, dep_id = ctx.key.org_id, dep.id
    return lambda upstream_id: (
        upstream_id
        if upstream_id.startswith((NATIVE_PREFIX, TRANSLATED_PREFIX))
        else wrap_id(org_id, dep_id, upstream_id)
    )


async def _call(gw, Outgoing, ctx, candidates, body, native_body, chat_body, spend, backend):
    rid = TRANSLATED_PREFIX + _random_hex(24)

    async def attempt(dep, timeout):
        adapter = gw.upstreams.for_deployment(dep)
        if native(gw, dep):
            data = await adapter.call("responses", dep, native_body, timeout)
            if not isinstance(data, dict) or not isinstance(data.get("output"), list):
                raise UpstreamError(f"{dep.label} sent something that is not a response", 502)
            _rewrite_ids(data, _wrapper(ctx, dep), dep)
            served[dep.id] = served_tier(data)
            return data
        answer = await adapter.call("chat", dep, _tiered(gw, dep, chat_body, body), timeout)
        data = from_chat(answer, rid, body, dep.upstream_model)
        if data is None:
            raise UpstreamError(f"{dep.label} sent something that is not a completion", 502)
        served[dep.id] = served_tier(answer)
        cited[dep.id] = cited_search(answer)  # kept here too: an answer may have no usage
        return data

    served = {}  # deployment id -> the tier its answer said it served
    cited = {}  # deployment id -> its answer's search, as a search model's (cited_search)
    data = await gw._attempts(ctx, candidates, attempt)
    ctx.tier_served = served.get(ctx.dep.id)
    ctx.tier_requested = _tier_sent(gw, ctx.dep, body)
    counts = _counts(data.get("usage"), chat_body, lambda: output_text(data), body)
    searches = max(counts.searches, searched(data), cited.get(ctx.dep.id, 0))
    counts = counts._replace(searches=searches)
    return gw._answered(ctx, data, counts, spend, backend)


def _counts(usage, chat_body: dict, text, body: dict | None = None) -> tokens.Counts:
    """The tokens for the usage row: as reported, else counted from
    what was sent and answered (LiteLLM reports zeros when the provider sent none), so
    nothing is billed zero. ``body`` is the Responses request: its input is counted when
    the chat translation has none (a pass-through request only a Responses API can carry)."""
    counts = usage_counts(usage) or tokens.Counts(0, 0)
    if not counts.input:  # nor its cached parts: the counted prompt is priced as input
        if chat_body.get("messages") or body is None:
            counts = tokens.Counts(tokens.count_prompt_tokens(chat_body), counts.output)
        else:
            counts = tokens.Counts(count_native_input(body), counts.output)
    if not counts.output:
        counts = counts._replace(output=tokens.count_tokens(text()))
    return counts


def count_native_input(body: dict) -> int:
    """Our count of a Responses request's input (``instructions`` and ``input``), for a
    pass-through answer that reported no usage: the text of every item, and of the items
    with no text (references, files …) their JSON, so the prompt is never billed zero."""
    pieces = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
    items = body.get("input")
    if isinstance(items, str):
        pieces.append(items)
    for item in items if isinstance(items, list) else ():
        kind = item.get("type")
        if kind in (None, "message"):
            pieces.append(_text_of(item.get("content")))
        elif kind == "function_call":
            pieces += [str(item.get("name", "")), str(item.get("arguments", ""))]
        elif kind == "function_call_output":
            output = item.get("output")
            pieces.append(output if isinstance(output, str) else _text_of(output))
        else:
            pieces.append(orjson.dumps(item).decode())
    return max(1, tokens.count_tokens("\n".join(pieces)))


def _tier_sent(gw, dep, body: dict):
    """The service tier the request asked ``dep`` for: the body's, if it reached it (the
    Responses API as sent, or a chat translation, to an OpenAI-shaped upstream; never
    through LiteLLM), else None."""
    return body.get("service_tier") if gw.upstreams.direct(dep) else None


def _tiered(gw, dep, chat_body: dict, body: dict) -> dict:
    """The chat translation as ``dep`` gets it: with the Responses request's service tier
    where the upstream is OpenAI-shaped (LiteLLM refuses the field for providers that have
    no such thing, Anthropic's among them, so it is not passed to those)."""
    tier = _tier_sent(gw, dep, body)
    return chat_body if tier is None else {**chat_body, "service_tier": tier}


async def _held(chunks, carries):
    """Read a stream's first events until one carries output (``carries``); a stream that
    ends before any is this deployment's failure, and the next one may be tried."""
    held = []
    try:
        async for batch in chunks:
            for i, (raw, event) in enumerate(batch):
                if event is UNPARSED:
                    batch[i] = (raw, event := parse_event(raw))
                held.append(batch[i])
            if any(carries(event) for _raw, event in batch):
                return held
            if batch[-1] is DONE_EVENT:
                break
    except StreamBroken as exc:
        await chunks.aclose()
        raise UpstreamError(str(exc)) from exc
    except BaseException:
        await chunks.aclose()
        raise
    return held if empty_answer([e for _raw, e in held]) else None


async def _stream(gw, Outgoing, ctx, candidates, body, native_body, chat_body, spend, backend):
    rid = TRANSLATED_PREFIX + _random_hex(24)

    async def attempt(dep, timeout):
        adapter = gw.upstreams.for_deployment(dep)
        if native(gw, dep):
            chunks = adapter.stream("responses", dep, native_body, timeout)

            def carries(event):
                if not isinstance(event, dict):
                    return False
                kind = event.get("type")
                if kind in ("error", "response.failed"):
                    raise UpstreamError(
                        f"{dep.label} sent an error event", 502, body=redact(event, dep)
                    )
                return kind not in _PREAMBLE

            convert = NativeEvents(_wrapper(ctx, dep), dep)
        else:
            chunks = adapter.stream("chat", dep, _tiered(gw, dep, chat_body, body), timeout)

            def carries(chunk):
                return carries_output(chunk, dep)

            convert = ChatEvents(rid, body, dep.upstream_model, dep)
        held = await _held(chunks, carries)
        if held is None:
            await chunks.aclose()
            raise UpstreamError(f"{dep.label} answered the stream with no output in it", 502)
        return chunks, held, convert

    chunks, held, convert = await gw._attempts(ctx, candidates, attempt)
    ctx.tier_requested = _tier_sent(gw, ctx.dep, body)
    ctx.ttft_ms = int((time.perf_counter() - ctx.t0) * 1000)
    headers = gw._headers(
        ctx,
        {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        },
    )
    result = Outgoing(200, b"", headers)
    result.stream = _relay(gw, ctx, chunks, held, convert, chat_body, spend, backend, result, body)
    return result


async def _relay(gw, ctx, chunks, held, convert, chat_body, spend, backend, result, body):
    """Relay the converted events, each upstream read in one write, and record the usage
    row once: success at the end, error if the stream failed, 499 if the client left."""
    recorded = False

    async def account(status, http_status, error_type=""):
        nonlocal recorded
        recorded = True
        await chunks.aclose()  # also cancels the upstream call when the client went away
        counts = _counts(convert.usage, chat_body, convert.text, body)
        counts = counts._replace(searches=max(counts.searches, convert.searches))
        ctx.tier_served = convert.tier
        result.cost = gw._bill(ctx, counts, spend, backend, status, http_status, error_type)

    out = convert.start() if isinstance(convert, ChatEvents) else []
    batch = held
    try:
        while batch is not None:
            finished = False
            for raw, event in batch:
                if event is UNPARSED:
                    event = parse_event(raw)
                elif not raw:
                    finished = True  # the upstream's [DONE]: nothing after it is read
                    break
                if isinstance(event, dict):
                    out += convert.feed(event)
            if finished:
                break
            if out:
                yield b"".join(out)
                out = []
            try:
                batch = await chunks.__anext__()
            except StopAsyncIteration:
                batch = None
        out += convert.end()
        if convert.failed:
            await account("error", 502, "stream_error")
        else:
            await account("success", 200)
        yield b"".join(out)
    except StreamBroken as exc:
        await account("error", 502, "stream_broken")
        yield b"".join([*out, convert.broken(f"The upstream stream broke: {exc}")])
    finally:
        if not recorded:  # the client went away (cancelled), or something unexpected broke
            await account("error", 499, "client_disconnected")


# ------------------------------------------------------------------ stored responses
async def _stored(gw, ctx, req, Outgoing):
    """GET /v1/responses/{id}, DELETE it, GET its input_items: asked of the upstream that
    keeps it, through the provider connection of the org that made it."""
    rid = req.resource_id or ""
    found = unwrap_id(rid)
    if found is None or found[0] != ctx.key.org_id:
        raise _not_found(rid)
    dep = _org_deployment(ctx, found[1])
    if dep is None or not native(gw, dep):
        raise _not_found(rid)
    ctx.model_requested = dep.model
    path = "/responses/" + urllib.parse.quote(found[2], safe="")
    if req.endpoint == "responses.input_items":
        path += "/input_items"
    query = [(k, v) for k, v in urllib.parse.parse_qsl(req.query or "") if k in QUERY_PARAMS]
    if query:
        path += "?" + urllib.parse.urlencode(query)
    method = "DELETE" if req.endpoint == "responses.delete" else "GET"
    # It calls the provider: one request from the key's and org's rpm buckets, no tokens.
    spend, verdict = await gw._admit(ctx, 0, 0.0)
    if spend is not None:
        gw.limiter.settle(spend, 0.0, verdict.backend)

    async def attempt(dep, timeout):
        adapter = gw.upstreams.watched(gw.upstreams.http)
        return await adapter.call(None, dep, None, timeout, method=method, path=path)

    data = await gw._attempts(ctx, [dep], attempt)
    if isinstance(data, dict) and req.endpoint != "responses.input_items":
        _rewrite_ids(data, _wrapper(ctx, dep), dep)
    gw._record(ctx, "success", 200)
    return Outgoing(200, orjson.dumps(data), gw._headers(ctx, {"Content-Type": "application/json"}))
