"""Request bodies checked the way OpenAI checks them, before anything else reads them.

Every field the gateway reads, or forwards in a way that matters, is type- and
range-checked, with OpenAI's error style: a 400 whose ``param`` names the field (or the
element, ``messages[2].content``) and whose ``code`` says what was wrong
(``invalid_type``, ``integer_below_min_value``, ``missing_required_parameter`` …). Booleans
are not numbers (``max_tokens: true`` is refused). Fields the gateway does not know are
passed through as sent (providers such as vLLM take their own), but for LiteLLM's own call
parameters (litellm_params.py), which are refused; and nothing a client sends may break
the gateway: bodies nested deeper than ``MAX_DEPTH`` are refused, since
they could not be serialised again for the provider.

Runs on every request: one pass over the top-level fields, one over the messages.
"""

import json
import unicodedata

import orjson

from core import names_rule

from . import errors
from .litellm_params import LITELLM_OWN_PARAMS

# Fields that steer where or how a provider is called: a client may never set them (nor
# LiteLLM's own call parameters, LITELLM_OWN_PARAMS).

FORBIDDEN_FIELDS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "organization",
        "extra_headers",
        "extra_body",
        "extra_query",
        "headers",
        "custom_llm_provider",
        "azure_ad_token",
        "azure_ad_token_provider",
        "deployment_id",
        "timeout",
        "num_retries",
        "fallbacks",
        "model_list",
        "mock_response",
        "input_cost_per_token",
        "output_cost_per_token",
        "proxy_server_request",
        "client",
    }
)
FORBIDDEN_PREFIXES = ("litellm_", "aws_", "vertex_", "azure_", "api_")
ENDPOINT_NEEDS = {
    "chat": "messages",
    "completions": "prompt",
    "embeddings": "input",
    "responses": "input",
    # images, audio, moderations, rerank (gateway/dataplane/media.py): see MEDIA_CHECKS
    "images": "prompt",
    "speech": "input",
    "moderations": "input",
    "rerank": "query",
}
# Deeper bodies are refused: orjson writes at most 254 levels, and no real request nests
# this far (OpenAI's structured outputs allow 10 levels of schema).
MAX_DEPTH = 64
INT32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class Invalid(Exception):
    """One field refused; becomes a 400."""

    def __init__(self, message: str, param: str, code: str, value=None):
        super().__init__(message)
        self.param = param
        self.code = code
        self.value = value  # the value refused (of a type refused)


def json_type(value, *, number_kinds: bool = False) -> str:
    """The JSON type of a parsed value as a message names it ("a number", "null");
    ``number_kinds``: "an integer" or "a decimal" instead of "a number"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        if number_kinds:
            return "an integer" if isinstance(value, int) else "a decimal"
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _kind(value) -> str:
    return json_type(value, number_kinds=True)


def _shown(value) -> str:
    """A client's value as a message quotes it: 40 characters, hidden ones escaped."""
    return names_rule.name_safe(repr(value) if not isinstance(value, str) else value, 40)


def _wrong_type(param: str, expected: str, value) -> Invalid:
    return Invalid(
        f"Invalid type for '{param}': expected {expected}, but got {_kind(value)} instead.",
        param,
        "invalid_type",
        value,
    )


# ------------------------------------------------------------------ field checks
def _in_range(param, value, lo, hi, kind: str) -> None:
    """OpenAI's bound errors; `kind` is "integer" or "decimal"."""
    if value < lo:
        raise Invalid(
            f"Invalid '{param}': {kind} below minimum value. Expected a value >= {lo}, "
            f"but got {_shown(value)} instead.",
            param,
            f"{kind}_below_min_value",
            value,
        )
    if value > hi:
        raise Invalid(
            f"Invalid '{param}': {kind} above maximum value. Expected a value <= {hi}, "
            f"but got {_shown(value)} instead.",
            param,
            f"{kind}_above_max_value",
            value,
        )


def _integer(lo: int, hi: int):
    def check(param, value, endpoint):
        if type(value) is not int:  # bool is an int subclass: refused here too
            raise _wrong_type(param, "an integer", value)
        _in_range(param, value, lo, hi, "integer")

    return check


def _number(lo: float, hi: float):
    def check(param, value, endpoint):
        if type(value) is not float and type(value) is not int:
            raise _wrong_type(param, "a number", value)
        _in_range(param, value, lo, hi, "decimal")

    return check


def _boolean(param, value, endpoint):
    if value is not True and value is not False:
        raise _wrong_type(param, "a boolean", value)


def _string(param, value, endpoint):
    if type(value) is not str:
        raise _wrong_type(param, "a string", value)


def _object(param, value, endpoint):
    if type(value) is not dict:
        raise _wrong_type(param, "an object", value)


def _string_or_object(param, value, endpoint):
    if type(value) is not str and type(value) is not dict:
        raise _wrong_type(param, "a string or an object", value)


def _one_of(*allowed):
    shown = ", ".join(f"'{a}'" for a in allowed)

    def check(param, value, endpoint):
        if type(value) is not str:
            raise _wrong_type(param, "a string", value)
        if value not in allowed:
            raise Invalid(
                f"Invalid value: '{_shown(value)}'. Supported values are: {shown}.",
                param,
                "invalid_value",
            )

    return check


def _list_of(item_check, item_kind: str, min_items=0, max_items=None):
    def check(param, value, endpoint):
        if type(value) is not list:
            raise _wrong_type(param, f"an array of {item_kind}", value)
        _length(param, value, min_items, max_items)
        for i, item in enumerate(value):
            item_check(f"{param}[{i}]", item, endpoint)

    return check


def _length(param, value, min_items, max_items):
    if len(value) < min_items:
        raise Invalid(
            f"Invalid '{param}': empty array. Expected an array with minimum length "
            f"{min_items}, but got an empty array instead.",
            param,
            "empty_array",
        )
    if max_items is not None and len(value) > max_items:
        raise Invalid(
            f"Invalid '{param}': array too long. Expected an array with maximum length "
            f"{max_items}, but got an array with length {len(value)} instead.",
            param,
            "array_above_max_length",
        )


def _stop(param, value, endpoint):
    if type(value) is str:
        return
    if type(value) is not list:
        raise _wrong_type(param, "a string or an array of strings", value)
    _length(param, value, 0, 4)
    for i, item in enumerate(value):
        if type(item) is not str:
            raise _wrong_type(f"{param}[{i}]", "a string", item)


def _stream_options(param, value, endpoint):
    if type(value) is not dict:
        raise _wrong_type(param, "an object", value)
    usage = value.get("include_usage")
    if usage is not None and usage is not True and usage is not False:
        raise _wrong_type(f"{param}.include_usage", "a boolean", usage)


def _required_string(param, obj: dict, field: str, *, non_empty: bool = False) -> None:
    value = obj.get(field)
    if type(value) is not str or (non_empty and not value):
        if value is None:
            raise Invalid(
                f"Missing required parameter: '{param}.{field}'.",
                f"{param}.{field}",
                "missing_required_parameter",
            )
        raise _wrong_type(
            f"{param}.{field}", "a non-empty string" if non_empty else "a string", value
        )


def _typed_object(param, value, endpoint):
    """An object with a string ``type``: a tool, a response format, a content part."""
    if type(value) is not dict:
        raise _wrong_type(param, "an object", value)
    _required_string(param, value, "type")


def _required_object(param, obj: dict, field: str) -> dict:
    value = obj.get(field)
    if type(value) is not dict:
        if value is None:
            raise Invalid(
                f"Missing required parameter: '{param}.{field}'.",
                f"{param}.{field}",
                "missing_required_parameter",
            )
        raise _wrong_type(f"{param}.{field}", "an object", value)
    return value


def _response_format(param, value, endpoint):
    """OpenAI's: a typed object; a JSON schema one names its schema (an object)."""
    _typed_object(param, value, endpoint)
    if value["type"] == "json_schema":
        spec = _required_object(param, value, "json_schema")
        _required_string(f"{param}.json_schema", spec, "name")
        schema = spec.get("schema")
        if schema is not None and type(schema) is not dict:
            raise _wrong_type(f"{param}.json_schema.schema", "an object", schema)


def _function_def(param, value):
    if type(value) is not dict:
        raise _wrong_type(param, "an object", value)
    _required_string(param, value, "name")
    params = value.get("parameters")
    if params is not None and type(params) is not dict:
        raise _wrong_type(f"{param}.parameters", "an object", params)


def _tool(param, value, endpoint):
    _typed_object(param, value, endpoint)
    if value["type"] == "function":
        _function_def(f"{param}.function", value.get("function"))


def _functions(param, value, endpoint):
    if type(value) is not list:
        raise _wrong_type(param, "an array of objects", value)
    _length(param, value, 1, 128)
    for i, item in enumerate(value):
        _function_def(f"{param}[{i}]", item)


def _logprobs(param, value, endpoint):
    if endpoint == "completions":  # the legacy endpoint takes a count, 0 to 5
        _integer(0, 5)(param, value, endpoint)
    else:
        _boolean(param, value, endpoint)


def _token_list(param, value):
    for i, item in enumerate(value):
        if type(item) is not int:
            raise _wrong_type(f"{param}[{i}]", "an integer", item)
        if item < 0 or item > INT32_MAX:
            raise Invalid(
                f"Invalid '{param}[{i}]': {_shown(item)} is not a token id.",
                f"{param}[{i}]",
                "invalid_value",
                item,
            )


def _text_input(param, value, endpoint):
    """``prompt`` and ``input``: a string, strings, token ids, or lists of token ids."""
    if type(value) is str:
        if not value and param == "input":
            raise Invalid(
                f"Invalid '{param}': empty string. Expected a string with minimum length 1.",
                param,
                "empty_string",
            )
        return
    expected = "a string, an array of strings, an array of integers or an array of integer arrays"
    if type(value) is not list:
        raise _wrong_type(param, expected, value)
    _length(param, value, 1, None)
    first = value[0]
    if type(first) is str:
        for i, item in enumerate(value):
            if type(item) is not str:
                raise _wrong_type(f"{param}[{i}]", "a string", item)
    elif type(first) is int:
        _token_list(param, value)
    elif type(first) is list:
        for i, item in enumerate(value):
            if type(item) is not list:
                raise _wrong_type(f"{param}[{i}]", "an array of integers", item)
            _length(f"{param}[{i}]", item, 1, None)
            _token_list(f"{param}[{i}]", item)
    else:
        raise _wrong_type(f"{param}[0]", "a string, an integer or an array of integers", first)


def _messages(param, value, endpoint):
    if type(value) is not list:
        raise _wrong_type(param, "an array of messages", value)
    _length(param, value, 1, None)
    for i, message in enumerate(value):
        if type(message) is not dict:
            raise _wrong_type(f"{param}[{i}]", "an object", message)
        _required_string(f"{param}[{i}]", message, "role", non_empty=True)
        content = message.get("content")
        if content is None or type(content) is str:
            pass
        elif type(content) is list:
            for j, part in enumerate(content):
                _typed_object(f"{param}[{i}].content[{j}]", part, endpoint)
                if part["type"] == "text":  # its text is what is counted, scored, sent
                    _required_string(f"{param}[{i}].content[{j}]", part, "text")
        else:
            raise _wrong_type(
                f"{param}[{i}].content", "a string, an array of content parts or null", content
            )
        if len(message) > 2:
            for name in ("name", "tool_call_id", "refusal"):
                extra = message.get(name)
                if extra is not None and type(extra) is not str:
                    raise _wrong_type(f"{param}[{i}].{name}", "a string", extra)
            calls = message.get("tool_calls")
            if calls is not None:
                if type(calls) is not list:
                    raise _wrong_type(f"{param}[{i}].tool_calls", "an array of objects", calls)
                for j, call in enumerate(calls):
                    if type(call) is not dict:
                        raise _wrong_type(f"{param}[{i}].tool_calls[{j}]", "an object", call)


_token_count = _integer(1, INT32_MAX)

# name -> check(param, value, endpoint); a null value means "not set" and is not checked.
CHECKS = {
    "messages": _messages,
    "prompt": _text_input,
    "input": _text_input,
    "max_tokens": _token_count,
    "max_completion_tokens": _token_count,
    "n": _integer(1, 128),
    "best_of": _integer(1, 20),
    "temperature": _number(0, 2),
    "top_p": _number(0, 1),
    "presence_penalty": _number(-2, 2),
    "frequency_penalty": _number(-2, 2),
    "stream": _boolean,
    "stream_options": _stream_options,
    "tools": _list_of(_tool, "tools", 0, 128),
    "tool_choice": _string_or_object,
    "parallel_tool_calls": _boolean,
    "functions": _functions,
    "function_call": _string_or_object,
    "response_format": _response_format,
    "web_search_options": _object,
    "thinking": _object,
    "user": _string,
    "seed": _integer(INT64_MIN, INT64_MAX),
    "stop": _stop,
    "logprobs": _logprobs,
    "top_logprobs": _integer(0, 20),
    "logit_bias": _object,
    "echo": _boolean,
    "suffix": _string,
    "store": _boolean,
    "metadata": _object,
    "reasoning_effort": _string,
    "service_tier": _string,
    "modalities": _list_of(_string, "strings"),
    "dimensions": _integer(1, INT32_MAX),
    "encoding_format": _one_of("float", "base64"),
}


# ------------------------------------------------------------------ the Responses API
def _response_content(param, value, endpoint):
    if type(value) is str:
        return
    if type(value) is not list:
        raise _wrong_type(param, "a string or an array of content parts", value)
    for i, part in enumerate(value):
        _typed_object(f"{param}[{i}]", part, endpoint)
        kind = part["type"]
        if kind in ("input_text", "output_text"):
            _required_string(f"{param}[{i}]", part, "text")
        elif kind == "input_image":
            url = part.get("image_url")
            if url is not None and type(url) is not str:
                raise _wrong_type(f"{param}[{i}].image_url", "a string", url)


def _response_input(param, value, endpoint):
    """``input`` of /v1/responses: text, or a list of items (messages, function calls and
    their outputs, …); the items the gateway translates are checked, others pass."""
    if type(value) is str:
        return
    if type(value) is not list:
        raise _wrong_type(param, "a string or an array of input items", value)
    for i, item in enumerate(value):
        where = f"{param}[{i}]"
        if type(item) is not dict:
            raise _wrong_type(where, "an object", item)
        kind = item.get("type")
        if kind is not None and type(kind) is not str:
            raise _wrong_type(f"{where}.type", "a string", kind)
        if kind in (None, "message"):
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                if role is None:
                    raise Invalid(
                        f"Missing required parameter: '{where}.role'.",
                        f"{where}.role",
                        "missing_required_parameter",
                    )
                raise Invalid(
                    f"Invalid value: '{_shown(role)}'. Supported values are: 'user', "
                    "'assistant', 'system' and 'developer'.",
                    f"{where}.role",
                    "invalid_value",
                )
            if "content" not in item:
                raise Invalid(
                    f"Missing required parameter: '{where}.content'.",
                    f"{where}.content",
                    "missing_required_parameter",
                )
            _response_content(f"{where}.content", item["content"], endpoint)
        elif kind == "function_call":
            for name in ("call_id", "name", "arguments"):
                _required_string(where, item, name)
        elif kind == "function_call_output":
            _required_string(where, item, "call_id")
            _response_content(f"{where}.output", item.get("output"), endpoint)


def _response_tool(param, value, endpoint):
    _typed_object(param, value, endpoint)
    if value["type"] == "function":
        _required_string(param, value, "name", non_empty=True)
        params = value.get("parameters")
        if params is not None and type(params) is not dict:
            raise _wrong_type(f"{param}.parameters", "an object", params)


def _response_text(param, value, endpoint):
    _object(param, value, endpoint)
    fmt = value.get("format")
    if fmt is None:
        return
    _typed_object(f"{param}.format", fmt, endpoint)
    if fmt["type"] == "json_schema":
        _required_string(f"{param}.format", fmt, "name", non_empty=True)
        _required_object(f"{param}.format", fmt, "schema")
    elif fmt["type"] not in ("text", "json_object"):
        raise Invalid(
            f"Invalid value: '{_shown(fmt['type'])}'. Supported values are: 'text', "
            "'json_object' and 'json_schema'.",
            f"{param}.format.type",
            "invalid_value",
        )


RESPONSES_CHECKS = {
    "input": _response_input,
    "instructions": _string,
    "previous_response_id": _string,
    "max_output_tokens": _token_count,
    "max_tool_calls": _token_count,
    "temperature": _number(0, 2),
    "top_p": _number(0, 1),
    "top_logprobs": _integer(0, 20),
    "stream": _boolean,
    "stream_options": _object,
    "store": _boolean,
    "background": _boolean,
    "parallel_tool_calls": _boolean,
    "tools": _list_of(_response_tool, "tools", 0, 128),
    "tool_choice": _string_or_object,
    "text": _response_text,
    "reasoning": _object,
    "metadata": _object,
    "include": _list_of(_string, "strings"),
    "truncation": _one_of("auto", "disabled"),
    "user": _string,
    "safety_identifier": _string,
    "prompt_cache_key": _string,
    "service_tier": _string,
}


# ------------------------------------------------------------------ media endpoints
def _text(max_chars: int):
    def check(param, value, endpoint):
        if type(value) is not str:
            raise _wrong_type(param, "a string", value)
        if not value.strip():
            raise Invalid(f"Invalid '{param}': empty string.", param, "empty_string")
        if len(value) > max_chars:
            raise Invalid(
                f"Invalid '{param}': string too long. Expected a string with maximum length "
                f"{max_chars}, but got a string with length {len(value)} instead.",
                param,
                "string_above_max_length",
            )

    return check


def _moderation_input(param, value, endpoint):
    """A string, an array of strings, or an array of content parts (text, image_url)."""
    if type(value) is str:
        return
    if type(value) is not list:
        raise _wrong_type(param, "a string or an array", value)
    _length(param, value, 1, 2048)
    for i, item in enumerate(value):
        if type(item) is not str:
            _typed_object(f"{param}[{i}]", item, endpoint)


def _document(param, value, endpoint):
    if type(value) is str:
        return
    if type(value) is not dict:
        raise _wrong_type(param, "a string or an object with a text", value)
    _required_string(param, value, "text")


def _not_streamed(param, value, endpoint):
    _boolean(param, value, endpoint)
    if value:
        raise Invalid(
            f"Invalid '{param}': streamed {endpoint} are not supported by this gateway; "
            "send the request without it.",
            param,
            "unsupported_value",
        )


MEDIA_CHECKS = {
    "images": {
        "prompt": _text(32000),
        "n": _integer(1, 10),
        "size": _string,
        "quality": _string,
        "style": _string,
        "response_format": _one_of("url", "b64_json"),
        "output_format": _one_of("png", "jpeg", "webp"),
        "background": _string,
        "moderation": _string,
        "output_compression": _integer(0, 100),
        "user": _string,
        "stream": _not_streamed,
    },
    "speech": {
        "input": _text(4096),
        "voice": _string_or_object,
        "response_format": _one_of("mp3", "opus", "aac", "flac", "wav", "pcm"),
        "speed": _number(0.25, 4.0),
        "instructions": _string,
        "stream_format": _one_of("audio"),  # server-sent events are not relayed
        "stream": _not_streamed,
    },
    "moderations": {"input": _moderation_input},
    "rerank": {
        "query": _text(32000),
        "documents": _list_of(_document, "strings or objects", 1, 1000),
        "top_n": _integer(1, 1000),
        "return_documents": _boolean,
        "max_chunks_per_doc": _integer(1, INT32_MAX),
        "rank_fields": _list_of(_string, "strings"),
    },
}


def _too_deep(value, depth: int) -> bool:
    if depth > MAX_DEPTH:
        return True
    if type(value) is dict:
        value = value.values()
    elif type(value) is not list:
        return False
    return any((type(v) is dict or type(v) is list) and _too_deep(v, depth + 1) for v in value)


# ------------------------------------------------------------------ entry point
def requested_model(model: str) -> str:
    """The model a client names, as the org's model names are stored (in NFC: "é" sent as
    e + U+0301 reaches the model named "é"), or ``Invalid`` when the names rule refuses it
    (core.names_rule: a control, bidi or zero-width character) and so no model can have
    that name. Exactly the names an org can create pass: 👩‍💻 with its ZWJ, Persian with
    its ZWNJ. Printable ASCII, nearly every request, costs one check."""
    if model.isascii() and model.isprintable():
        return model
    i = names_rule.first_refused(model)
    if i is not None:
        raise Invalid(
            f"Invalid 'model': model names have no control, invisible or text-direction "
            f"characters such as {names_rule.codepoint(model[i])}.",
            "model",
            "invalid_value",
        )
    return unicodedata.normalize("NFC", model)


def parse_body(raw: bytes, endpoint: str) -> dict:
    """The request's JSON object, every known field checked; a 400 ``GatewayError`` if not."""
    if not raw:
        raise errors.bad_request(
            "The request body is empty; send a JSON object.", code="invalid_json"
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson cannot read an integer of more than about 308 digits ("infinity"): if a
        # field's is, say that it is out of range, as for any other integer
        _out_of_range_integer(raw, endpoint)
        raise errors.bad_request(not_json(exc, raw), code="invalid_json") from exc
    if type(body) is not dict:
        raise errors.bad_request("The request body must be a JSON object.", code="invalid_type")
    try:
        _check(body, endpoint)
    except Invalid as exc:
        if type(exc.value) is float and exc.value.is_integer():
            # orjson reads an integer past 64 bits as a float: if it was written as an
            # integer, it is out of range, not "a decimal"
            _out_of_range_integer(raw, endpoint)
        raise errors.bad_request(str(exc), param=exc.param, code=exc.code) from None
    # Every bracket may open a level: only a body with many of them needs the walk.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
        for name, value in body.items():
            if (type(value) is dict or type(value) is list) and _too_deep(value, 2):
                raise errors.bad_request(
                    f"Invalid '{errors.echoed(name)}': nested more than {MAX_DEPTH} levels deep.",
                    param=errors.echoed(name),
                    code="invalid_value",
                )
    return body


def _refuse_constant(name):
    raise ValueError(name)  # NaN, Infinity: not JSON (orjson refuses them too)


def exact_json(raw: bytes):
    """``raw`` read with Python's json, whose integers have any size (orjson reads one past
    64 bits as a float and one past about 308 digits not at all), or None where it cannot
    be (not JSON, NaN or Infinity, nested past the recursion limit, past 4,300 digits).
    For the way to a 400 only: it is slow."""
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None


def not_json(exc: Exception, raw: bytes) -> str:
    """What a 400 says of a body orjson could not read. A number past a double's range
    (an integer of more than about 308 digits, 1e400) is valid JSON that this gateway
    cannot carry: said so, not "not valid JSON". Only on the way to a 400."""
    if "infinity" in str(exc) and exact_json(raw) is not None:
        where = str(exc).rpartition(": ")[2]
        return (
            "The request body holds a number too large to carry (past about 1.8e308, an "
            f"integer of more than 308 digits): {where}."
        )
    return f"The request body is not valid JSON: {exc}."


def _out_of_range_integer(raw: bytes, endpoint: str) -> None:
    """A 400 ``GatewayError`` for an integer field whose value, written as an integer, is
    past its range but too large for orjson to read as one (past 64 bits it reads a float,
    past about 308 digits not at all): the body read again with Python's json, whose
    integers have any size, and checked again; only a refusal of an integer is raised
    (anything else Python's json reads that orjson does not stays orjson's answer). Only on
    the way to another 400; returns when it finds none."""
    body = exact_json(raw)
    if type(body) is not dict:
        return
    try:
        _check(body, endpoint)
    except Invalid as exc:
        if type(exc.value) is int:  # an integer out of range, or not a token id
            raise errors.bad_request(str(exc), param=exc.param, code=exc.code) from None


def _check(body: dict, endpoint: str) -> None:
    for name, value in body.items():
        if (
            name in FORBIDDEN_FIELDS
            or name.startswith(FORBIDDEN_PREFIXES)
            or name in LITELLM_OWN_PARAMS
        ):
            raise Invalid(
                f"'{errors.echoed(name)}' cannot be set by a client: provider settings come "
                "from the org's configuration.",
                errors.echoed(name),
                "forbidden_parameter",
            )
        if value is not None:
            check = MEDIA_CHECKS.get(
                endpoint, RESPONSES_CHECKS if endpoint == "responses" else CHECKS
            ).get(name)
            if check is not None:
                check(name, value, endpoint)
    model = body.get("model")
    if type(model) is not str or not model:
        if model is None:
            raise Invalid(
                "Missing required parameter: 'model'.", "model", "missing_required_parameter"
            )
        raise _wrong_type("model", "a non-empty string", model)
    body["model"] = requested_model(model)
    needed = ENDPOINT_NEEDS[endpoint]
    if body.get(needed) is None:
        raise Invalid(
            f"Missing required parameter: '{needed}'.", needed, "missing_required_parameter"
        )
