"""Model names on every /v1 surface, against a live gateway and a fake upstream: a model
whose name the names rule accepts (a ZWJ emoji, Persian with its ZWNJ, an accent) is reached
by its name as the client sends it, composed or decomposed; a name the rule refuses is a 400;
a model_not_found quotes the name escaped and cut (docs/gateway.md, "Model names")."""

import unicodedata
from urllib.parse import quote

import httpx
import pytest

from core.names_rule import name_safe
from core.text import name_error
from gateway import services
from gateway.tests.conftest import ACTOR, refresh_snapshot, usage_rows
from gateway.tests.test_media_api import make_wav

NAME = "café 👩\u200d💻 می\u200cخواهم"  # as the org created it: NFC, joiners where they work
SENT = unicodedata.normalize("NFD", NAME)  # "e" + U+0301, as some clients send it
HI = [{"role": "user", "content": "hi"}]
# Media models: each endpoint's model under NAME plus the endpoint (upstream models the fake
# answers and LiteLLM prices).
MEDIA_UPSTREAMS = {
    "images": "gpt-image-1",
    "transcriptions": "whisper-1",
    "speech": "tts-1",
    "moderations": "omni-moderation-latest",
    "rerank": "rerank-english-v3.0",
}


def _surfaces(model: str) -> dict:
    """httpx keyword arguments of a request naming ``model`` on each /v1 surface."""
    anthropic = {"x-api-key": "{raw}", "anthropic-version": "2023-06-01"}
    wav = {"file": ("a.wav", make_wav(0.2), "audio/wav")}

    def media(endpoint):
        return f"{model} {endpoint}"

    return {
        "chat": ("/chat/completions", {"json": {"model": model, "messages": HI}}),
        "chat stream": (
            "/chat/completions",
            {"json": {"model": model, "messages": HI, "stream": True}},
        ),
        "completions": ("/completions", {"json": {"model": model, "prompt": "hi"}}),
        "embeddings": ("/embeddings", {"json": {"model": model, "input": "hi"}}),
        "responses": ("/responses", {"json": {"model": model, "input": "hi"}}),
        "responses stream": (
            "/responses",
            {"json": {"model": model, "input": "hi", "stream": True}},
        ),
        "messages": (
            "/messages",
            {"json": {"model": model, "max_tokens": 5, "messages": HI}, "headers": anthropic},
        ),
        "messages stream": (
            "/messages",
            {
                "json": {"model": model, "max_tokens": 5, "messages": HI, "stream": True},
                "headers": anthropic,
            },
        ),
        "count_tokens": (
            "/messages/count_tokens",
            {"json": {"model": model, "messages": HI}, "headers": anthropic},
        ),
        "images": ("/images/generations", {"json": {"model": media("images"), "prompt": "x"}}),
        "transcriptions": (
            "/audio/transcriptions",
            {"data": {"model": media("transcriptions")}, "files": wav},
        ),
        "speech": (
            "/audio/speech",
            {"json": {"model": media("speech"), "voice": "alloy", "input": "hi"}},
        ),
        "moderations": ("/moderations", {"json": {"model": media("moderations"), "input": "hi"}}),
        "rerank": (
            "/rerank",
            {"json": {"model": media("rerank"), "query": "q", "documents": ["d"]}},
        ),
    }


SURFACES = sorted(_surfaces("x"))
ANTHROPIC = {"messages", "messages stream", "count_tokens"}


def _post(acme, surface: str, model: str) -> httpx.Response:
    path, kwargs = _surfaces(model)[surface]
    headers = {"Authorization": f"Bearer {acme.raw}"}
    if "headers" in kwargs:
        headers = {k: v.format(raw=acme.raw) for k, v in kwargs.pop("headers").items()}
    return httpx.post(acme.base_url + path, headers=headers, timeout=30, **kwargs)


def _error(response: httpx.Response, surface: str) -> tuple[int, str, str]:
    """(status, code, message) of an error answer, in the surface's own shape."""
    error = response.json()["error"]
    code = error["type"] if surface in ANTHROPIC else error["code"]
    return response.status_code, code, error["message"]


@pytest.fixture
def named(acme):
    """acme with its chat model and each media model under names only Unicode can write."""
    fake = acme.providers["fake"]
    services.deployment_save(
        actor=ACTOR, org=acme.org, model_name=NAME, provider=fake, upstream_model="gpt-4o-mini"
    )
    for endpoint, upstream in MEDIA_UPSTREAMS.items():
        services.deployment_save(
            actor=ACTOR,
            org=acme.org,
            model_name=f"{NAME} {endpoint}",
            provider=fake,
            upstream_model=upstream,
        )
    refresh_snapshot()
    return acme


@pytest.mark.parametrize("surface", SURFACES)
def test_a_name_the_rule_accepts_reaches_its_model_composed_or_not(named, surface):
    for model in (NAME, SENT):
        response = _post(named, surface, model)
        assert response.status_code == 200, (surface, model, response.text)
    rows = usage_rows(named.org)
    assert [r.http_status for r in rows] == [200, 200]
    # Recorded under the model's name, whichever form was sent: the Logs filter finds both.
    kwargs = _surfaces(NAME)[surface][1]
    assert {r.model_requested for r in rows} == {(kwargs.get("json") or kwargs["data"])["model"]}


# Each refused by the names rule (a model cannot be created with it).
HOSTILE = [
    "gpt-4o\u202e-inim",  # RIGHT-TO-LEFT OVERRIDE
    "\u2066gpt\u2069-4o",  # isolates
    "gpt\u200b-4o",  # ZERO WIDTH SPACE
    "gpt\u200d-4o",  # a joiner between Latin letters
    "gpt-4o\x1b[31m",  # ESC
    "gpt-4o\nFAKE",  # a line feed
    "gpt-4o\U000e0041",  # a tag character
    "\u3164",  # a Hangul filler (a letter, printable, draws nothing)
    "gpt-4o\ufe0f",  # a variation selector after ASCII
]


@pytest.mark.parametrize("surface", SURFACES)
def test_a_name_the_rule_refuses_is_a_400_naming_the_model(named, surface):
    for model in HOSTILE:
        if surface == "transcriptions" and "\n" in model:
            continue  # a form field's line break is the multipart body's, not the value's
        response = _post(named, surface, model)
        status, code, message = _error(response, surface)
        assert status == 400, (surface, model, response.text)
        assert code == ("invalid_request_error" if surface in ANTHROPIC else "invalid_value")
        if surface not in ANTHROPIC:
            assert response.json()["error"]["param"] == "model"
        assert name_error(message) is None, message  # the message shows nothing hidden
    assert named.fake.requests == []


@pytest.mark.parametrize("surface", SURFACES)
def test_model_not_found_quotes_at_most_200_characters(named, surface):
    """A name no model has, longer than any model's name: quoted cut, never whole."""
    for model in ("m" * 5000, "👩\u200d💻" * 2000, "مدل" * 2000):
        response = _post(named, surface, model)
        status, code, message = _error(response, surface)
        assert (status, code) == (
            (404, "not_found_error") if surface in ANTHROPIC else (404, "model_not_found")
        ), (surface, response.text)
        quoted = message.split("`")[1]
        assert quoted.endswith("…") and len(quoted) <= 201 and model.startswith(quoted[:-1])
        assert len(message) < 400
    assert named.fake.requests == []


def test_model_not_found_of_the_models_endpoint_escapes_the_name(named):
    """GET /v1/models/{name}: the name is the URL's, never checked as a body's is; the 404
    writes what the rule refuses as escapes (\\u202e), never the character itself."""
    for model in HOSTILE + ["m" * 300]:
        response = httpx.get(
            f"{named.base_url}/models/{quote(model, safe='')}",
            headers={"Authorization": f"Bearer {named.raw}"},
            timeout=30,
        )
        assert response.status_code == 404, response.text
        message = response.json()["error"]["message"]
        assert name_error(message) is None, message
        assert f"`{name_safe(model, 200)}`" in message
    ok = httpx.get(
        f"{named.base_url}/models/{quote(NAME, safe='')}",
        headers={"Authorization": f"Bearer {named.raw}"},
        timeout=30,
    )
    assert ok.status_code == 200 and ok.json()["id"] == NAME
