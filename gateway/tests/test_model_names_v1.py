"""The model a client names on /v1 follows the names rule (core.text.name_checked;
docs/security.md, "Names"), as the model names an org creates do: /v1 accepts exactly the
names the rule accepts (👩‍💻 with its ZWJ, Persian with its ZWNJ), in NFC as they are stored
(a name sent decomposed reaches the model stored composed), and refuses the rest with a 400
on every surface. An error that echoes a model name (model_not_found) escapes what the rule
refuses and quotes at most 200 characters of it, so no client, log or UI showing the
message draws a reordered or hidden name from it."""

import json
import unicodedata

import pytest

from core.text import name_error
from gateway.dataplane import anthropic_api, media
from gateway.dataplane.errors import GatewayError
from gateway.dataplane.validation import Invalid, parse_body, requested_model

# Where a character sits decides for the joiners and variation selectors: between Latin
# letters, alone, inside an emoji sequence, between Arabic letters, after a virama, after a
# digit (keycap), after an ideograph.
CONTEXTS = ["x{}y", "{}", "👩{}💻", "م{}ي", "क्{}ष", "1{}\u20e3", "漢{}"]
# The whole BMP (controls, spaces, Cf, marks, surrogates, private use) and the planes' emoji
# and their modifiers, tags, variation selectors, private use and noncharacters.
CODE_POINTS = [
    *range(0x10000),
    *range(0x1F000, 0x1FB00),
    *range(0xE0000, 0xE0080),
    *range(0xE0100, 0xE01F0),
    0xF0000,
    0x10FFFD,
    0x10FFFE,
    0x10FFFF,
]
# Those whose neighbours may matter, tried in every context; the others in two.
CONTEXTUAL = {"Cf", "Mn", "Mc", "Me", "Sk", "So", "Zs", "Lo"}


def _models():
    for cp in CODE_POINTS:
        char = chr(cp)
        contextual = unicodedata.category(char) in CONTEXTUAL and not 0x4E00 <= cp <= 0xD7FF
        for context in CONTEXTS if contextual else CONTEXTS[:2]:
            yield context.format(char)


def _refused(parse, model: str) -> GatewayError | None:
    try:
        parse(model)
    except (GatewayError, Invalid) as exc:
        return exc
    return None


def test_the_v1_check_accepts_exactly_the_names_the_names_rule_accepts():
    """Every code point, in every context where its neighbours may matter: the check /v1
    runs on a requested model and the names rule agree."""
    disagree = []
    for model in _models():
        refused = _refused(requested_model, model)
        if (name_error(model) is None) == (refused is not None):
            disagree.append((model, str(refused)))
        elif refused is not None:
            assert (refused.param, refused.code) == ("model", "invalid_value")
            assert name_error(str(refused)) is None, str(refused)  # the message is safe
    assert disagree == [], f"{len(disagree)} disagree, e.g. {disagree[:10]}"


def _chat(model: str) -> dict:
    raw = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    return parse_body(raw.encode(), "chat")


def _messages(model: str) -> dict:
    raw = json.dumps(
        {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    )
    return anthropic_api.parse_request(raw.encode(), "messages")


def _upload(model: str):
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        f"Content-Type: audio/wav\r\n\r\nRIFF0000WAVE\r\n--{boundary}--\r\n"
    ).encode("utf-8", "surrogatepass")
    return media.parse_upload("transcriptions", f"multipart/form-data; boundary={boundary}", body)


# A few thousand of those: each way a body is read (JSON, Anthropic's, a form) checks the
# model it names with that check.
SAMPLE = [m for i, m in enumerate(_models()) if i % 37 == 0 or "\u200c" in m or "\u200d" in m]


@pytest.mark.parametrize("parse", [_chat, _messages, _upload], ids=["json", "anthropic", "form"])
def test_every_way_in_checks_the_model_by_the_names_rule(parse):
    disagree = []
    for model in SAMPLE:
        if parse is _upload and (
            "\r" in model or "\n" in model or "\ud800" <= model[-1:] <= "\udfff"
        ):
            continue  # not a form field's value (the multipart parser splits it)
        refused = _refused(parse, model)
        if (name_error(model) is None) == (refused is not None):
            disagree.append((model, refused and refused.message))
        elif refused is not None and refused.param is not None:  # a lone surrogate: not JSON
            assert (refused.status, refused.param) == (400, "model"), refused
            assert name_error(refused.message) is None, refused.message
    assert disagree == [], f"{len(disagree)} disagree, e.g. {disagree[:10]}"


@pytest.mark.parametrize("parse", [_chat, _messages, _upload], ids=["json", "anthropic", "form"])
def test_a_decomposed_name_is_read_as_its_composed_form(parse):
    for model in ("cafe\u0301", "A\u030angstro\u0308m", "한국어", "e\u0301 👩\u200d💻"):
        parsed = parse(unicodedata.normalize("NFD", model))
        name = parsed[0] if isinstance(parsed, tuple) else parsed["model"]
        assert name == unicodedata.normalize("NFC", model)


# Client text a 400 quotes besides the model: a provider-control field's name, an unknown
# form field, a value not among the allowed ones, a too-deeply nested field's name.
SPOOF = "\u202e\u2066x\u200b\x1b[31m\n"
_NESTED = "[" * 70 + "]" * 70


def _quoting_400s():
    hi = [{"role": "user", "content": "hi"}]
    yield lambda: parse_body(
        json.dumps({"model": "m", "messages": hi, "litellm_" + SPOOF * 100: 1}).encode(), "chat"
    )
    yield lambda: parse_body(
        json.dumps({"model": "m", "input": "x", "encoding_format": SPOOF * 100}).encode(),
        "embeddings",
    )
    yield lambda: parse_body(
        json.dumps({"model": "m", "messages": hi, "x" + SPOOF * 100: json.loads(_NESTED)}).encode(),
        "chat",
    )
    boundary = "b0undary"
    for field in ("api_key" + SPOOF.replace("\n", ""), "x" + SPOOF.replace("\n", "") * 20):
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"\r\n\r\nv\r\n'
            f"--{boundary}--\r\n"
        ).encode()
        yield lambda body=body: media.parse_upload(
            "transcriptions", f"multipart/form-data; boundary={boundary}", body
        )


@pytest.mark.parametrize(
    "refuse",
    list(_quoting_400s()),
    ids=["forbidden field", "value not allowed", "nested field", "form forbidden", "form unknown"],
)
def test_a_400_quotes_the_clients_text_escaped_and_cut(refuse):
    with pytest.raises(GatewayError) as exc:
        refuse()
    error = exc.value
    assert error.status == 400
    for text in (error.message, error.param):
        assert name_error(text) is None, text  # \u202e written out, never the character
        assert len(text) < 400
    assert "\\u202e" in error.message
