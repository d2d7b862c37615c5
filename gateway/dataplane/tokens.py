"""Token estimates for reservations and counts for streams whose upstream reports none."""

import os
from functools import cache

_ASCII = bytes(range(128))


def estimate_prompt_tokens(raw_body: bytes) -> int:
    """An upper-leaning estimate with no parsing, for the spend and TPM reservations.

    ASCII JSON rarely has a token under 3 bytes; text in other scripts can take a token per
    UTF-8 byte (measured: 300 "ꙮ" are 907 tokens), so those bytes count one each."""
    if raw_body.isascii():
        return len(raw_body) // 3 + 16
    other = len(raw_body.translate(None, _ASCII))
    return (len(raw_body) - other) // 3 + other + 16


@cache
def _encoding():
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        import importlib.util

        spec = importlib.util.find_spec("litellm")
        if spec and spec.submodule_search_locations:
            # litellm ships the BPE files, so no download is ever needed.
            os.environ["TIKTOKEN_CACHE_DIR"] = os.path.join(
                spec.submodule_search_locations[0], "litellm_core_utils", "tokenizers"
            )
    import tiktoken

    return tiktoken.get_encoding("cl100k_base")


def count_tokens(text: str) -> int:
    if not text:
        return 0
    return len(_encoding().encode(text, disallowed_special=()))


def prompt_text(body: dict) -> str:
    """The text of a chat or completion request, for counting."""
    parts = []
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        parts.append(prompt)
    elif isinstance(prompt, list):
        parts.extend(p for p in prompt if isinstance(p, str))
    return "\n".join(parts)


def completion_text(data: dict) -> str:
    """The generated text of a non-streamed answer (message content, tool calls and their
    arguments, completion text), for counting when the provider reports no usage."""
    parts = []
    choices = data.get("choices") if isinstance(data, dict) else None
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict):
            continue
        if isinstance(choice.get("text"), str):
            parts.append(choice["text"])
        message = choice.get("message")
        if isinstance(message, dict):
            parts.extend(output_pieces(message))
    return "".join(parts)


def output_pieces(message: dict) -> list[str]:
    """The countable pieces of a message or a stream delta: content and tool calls."""
    parts = []
    for name in ("content", "refusal", "reasoning_content"):
        if isinstance(message.get(name), str):
            parts.append(message[name])
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            parts.extend(v for k in ("name", "arguments") if isinstance(v := function.get(k), str))
    function = message.get("function_call")
    if isinstance(function, dict):
        parts.extend(v for k in ("name", "arguments") if isinstance(v := function.get(k), str))
    return parts


def input_tokens(body: dict) -> int:
    """Tokens of an embeddings request's input (strings counted, token ids as given)."""
    value = body.get("input")
    items = value if isinstance(value, list) else [value]
    total = 0
    for item in items:
        if isinstance(item, str):
            total += count_tokens(item)
        elif isinstance(item, int):
            total += 1
        elif isinstance(item, list):
            total += len(item)
    return total


def count_prompt_tokens(body: dict) -> int:
    messages = body.get("messages") or ()
    # ~4 tokens of framing per chat message, as OpenAI counts them.
    return count_tokens(prompt_text(body)) + 4 * len(messages) + (3 if messages else 0)
