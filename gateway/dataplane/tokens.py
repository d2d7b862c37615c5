"""Token estimates for reservations and counts for streams whose upstream reports none."""

import os
from functools import cache


def estimate_prompt_tokens(raw_body: bytes) -> int:
    # An upper-leaning estimate with no parsing: a token is rarely under 3 bytes of JSON.
    return len(raw_body) // 3 + 16


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


def count_prompt_tokens(body: dict) -> int:
    messages = body.get("messages") or ()
    # ~4 tokens of framing per chat message, as OpenAI counts them.
    return count_tokens(prompt_text(body)) + 4 * len(messages) + (3 if messages else 0)
