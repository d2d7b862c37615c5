"""Token estimates for reservations and counts for streams whose upstream reports none."""

import hashlib
import importlib.util
import os
from functools import cache
from typing import NamedTuple


class Counts(NamedTuple):
    """The tokens a request used, as its usage row and its cost take them: ``input`` is all
    the prompt (as providers count it), of which ``cached`` were read from the provider's
    prompt cache and ``written`` written to it, ``written_1h`` of those for an hour; the
    web searches the provider ran for it (Anthropic's server tool), priced per search; the
    audio tokens of the prompt and of the output (within ``input`` and ``output``), at the
    model's audio prices (DeploymentInfo.cost prices each)."""

    input: int
    output: int
    cached: int = 0
    written: int = 0
    written_1h: int = 0
    searches: int = 0
    audio_in: int = 0
    audio_out: int = 0


# More tokens than any request has (no model reads or writes two billion tokens, and a usage
# row holds no more): a provider's count above it is not believed, but counted instead.
MAX_COUNT = 2**31 - 1

_ASCII = bytes(range(128))


def estimate_prompt_tokens(raw_body: bytes) -> int:
    """An upper-leaning estimate with no parsing, for the spend and TPM reservations.

    ASCII JSON rarely has a token under 3 bytes; text in other scripts can take a token per
    UTF-8 byte (measured: 300 "ꙮ" are 907 tokens), so those bytes count one each."""
    if raw_body.isascii():
        return len(raw_body) // 3 + 16
    other = len(raw_body.translate(None, _ASCII))
    return (len(raw_body) - other) // 3 + other + 16


# cl100k_base's BPE file as tiktoken keeps it in its cache folder (named by the sha1 of its
# URL), and the sha256 tiktoken checks it against (tiktoken_ext/openai_public.py).
CL100K_FILE = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"


def bpe_folder() -> str:
    """The folder tiktoken reads its BPE files from, so that it never downloads one.

    tiktoken fetches an encoding's file from the network on first use unless its cache
    folder (TIKTOKEN_CACHE_DIR) holds it, and no package of tiktoken's ships the files.
    LiteLLM ships cl100k_base and o200k_base in its package (litellm_core_utils/tokenizers)
    and points tiktoken there itself when it is imported. That folder is LiteLLM's, not a
    public API: this is the one place Bonito relies on it (found without importing litellm,
    which is slow to import), and gateway/tests/test_tokens.py loads the encoding through it
    with the network blocked, so a LiteLLM upgrade that moves it fails the tests instead of
    downloading in production. An operator's TIKTOKEN_CACHE_DIR, when set, is used instead
    (LiteLLM replaces it with its folder when imported, unless CUSTOM_TIKTOKEN_CACHE_DIR is
    set to the same folder)."""
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return os.environ["TIKTOKEN_CACHE_DIR"]
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("LiteLLM is not installed: set TIKTOKEN_CACHE_DIR (see bpe_folder).")
    return os.path.join(spec.submodule_search_locations[0], "litellm_core_utils", "tokenizers")


@cache
def _encoding():
    folder = bpe_folder()
    path = os.path.join(folder, CL100K_FILE)
    try:
        with open(path, "rb") as f:
            whole = hashlib.sha256(f.read()).hexdigest() == CL100K_SHA256
    except OSError:
        whole = False
    if not whole:  # tiktoken would download it (and delete an altered copy first)
        raise RuntimeError(
            f"The cl100k_base token file is missing or altered ({path}); the gateway never "
            "downloads it. Reinstall the requirements (LiteLLM ships it) or set "
            "TIKTOKEN_CACHE_DIR to a folder that holds it."
        )
    os.environ["TIKTOKEN_CACHE_DIR"] = folder  # where tiktoken looks (LiteLLM sets the same)
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
            parts.extend(
                p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
            )
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        parts.append(prompt)
    elif isinstance(prompt, list):
        parts.extend(p for p in prompt if isinstance(p, str))
    return "\n".join(parts)


def prompt_text_any(body: dict) -> str:
    """The text of a chat, completion, Responses or Anthropic Messages request: its
    messages' (or input items') text parts, prompt, system prompt and instructions. Parts
    that are not text (images, files, tool calls) are left out: its tokens are at most the
    prompt's."""
    parts = []

    def add(value, depth=0):
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list) and depth < 6:
            for item in value:
                add(item, depth + 1)
        elif isinstance(value, dict) and depth < 6:
            for name in ("text", "content"):
                add(value.get(name), depth + 1)

    for name in ("messages", "prompt", "input", "system", "instructions"):
        add(body.get(name))
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


# Input a request only points to, whose tokens its body cannot tell: an image or a file
# (priced by pixels and pages, not by the bytes sent; by URL or id, not sent at all), a
# stored response, conversation or prompt. A spend reservation holds the model's whole
# context window for such a request (its max_input_tokens, else UNSEEN_INPUT_TOKENS).
UNSEEN_PARTS = frozenset(
    {"image_url", "input_image", "image", "file", "input_file", "document", "item_reference"}
)
UNSEEN_INPUT_TOKENS = 128_000
# Bytes one of which any such request's body holds: most bodies skip the walk below.
_UNSEEN_MARKS = (
    b"image",
    b"file",
    b"document",
    b"item_reference",
    b"previous_response_id",
    b"conversation",
    b'"prompt"',
)


def unseen_input(raw: bytes, body: dict) -> bool:
    """Whether the request (its bytes and parsed body: chat, Responses or Anthropic Messages)
    points to input it does not carry in a size its bytes tell (UNSEEN_PARTS)."""
    if not any(mark in raw for mark in _UNSEEN_MARKS):
        return False
    if body.get("previous_response_id") or body.get("conversation"):
        return True
    if isinstance(body.get("prompt"), dict):  # the Responses API's stored prompt
        return True
    return any(_has_part(body.get(f), UNSEEN_PARTS) for f in ("messages", "input", "system"))


# The content parts that are images: chat's, the Responses API's, Anthropic's.
IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})


def images_sent(raw: bytes, body: dict) -> bool:
    """Whether the request (chat, Responses or Anthropic Messages) holds an image part: a
    deployment whose model takes no images is passed over for it (proxy._taking_images)."""
    if b"image" not in raw:
        return False
    return any(_has_part(body.get(f), IMAGE_PARTS) for f in ("messages", "input"))


def _has_part(node, kinds, depth: int = 0) -> bool:
    if depth > 32:  # bodies are validated far shallower
        return False
    if isinstance(node, list):
        return any(_has_part(item, kinds, depth + 1) for item in node)
    if isinstance(node, dict):
        if node.get("type") in kinds:
            return True
        return any(
            _has_part(value, kinds, depth + 1)
            for value in node.values()
            if isinstance(value, list | dict)
        )
    return False


def audio_asked(body: dict) -> bool:
    """Whether a chat request asks for an answer in audio (``modalities`` or ``audio``),
    whose tokens cost several times a text token's."""
    modalities = body.get("modalities")
    return isinstance(body.get("audio"), dict) or (
        isinstance(modalities, list) and "audio" in modalities
    )


# The web searches a spend reservation holds for a search tool the request sets no bound on.
SEARCH_RESERVE = 5


def search_param(body: dict) -> str | None:
    """The field that asks for web searches (``tools[i].type``, ``web_search_options``),
    or None: what a refusal names."""
    tools = body.get("tools")
    for i, tool in enumerate(tools if isinstance(tools, list) else ()):
        if isinstance(tool, dict) and (
            str(tool.get("type", "")).startswith("web_search")
            or "googleSearch" in tool
            or "google_search" in tool
        ):
            return f"tools[{i}]" + (".type" if "type" in tool else "")
    return "web_search_options" if isinstance(body.get("web_search_options"), dict) else None


def searches_asked(body: dict) -> int:
    """How many web searches a request may make the provider run, for its spend reservation:
    a search tool's ``max_uses`` (Anthropic's) or the request's ``max_tool_calls`` (the
    Responses API's), else SEARCH_RESERVE; one for ``web_search_options`` (a search model's
    one search); 0 without a search tool. Priced afterwards by what the answer reports."""
    asked = 1 if isinstance(body.get("web_search_options"), dict) else 0
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, dict):
            continue
        kind = tool.get("type")
        if not (isinstance(kind, str) and kind.startswith("web_search")) and not (
            "googleSearch" in tool or "google_search" in tool
        ):
            continue
        bound = tool.get("max_uses")
        if not (type(bound) is int and bound > 0):
            bound = body.get("max_tool_calls")
        asked = max(asked, bound if type(bound) is int and bound > 0 else SEARCH_RESERVE)
    return asked
