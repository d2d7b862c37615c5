"""How /v1 reads the model a client names, the same on every surface:

- GET /v1/models/{id} reads the name in NFC, as a body's `model` is read (requested_model):
  "café" sent decomposed (e + U+0301) is the model "café" (it was a 404 there alone);
- a name with leading or trailing whitespace is no model's (names are stored trimmed: the
  names rule): a 404 whose message says so, and names the model meant;
- a name that differs from one of the key's models only by case (`AUTO` for the smart
  routing alias `auto`) is a 404 that suggests it; never a model of another org, nor one
  the key may not use."""

import unicodedata
from urllib.parse import quote

import httpx
import openai
import pytest

from gateway import services
from gateway.tests.conftest import ACTOR, refresh_snapshot, smart_tier_deployments, usage_rows

NAME = "café crème"  # NFC, as the org created it
SENT = unicodedata.normalize("NFD", NAME)
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def named(acme):
    services.deployment_save(
        actor=ACTOR,
        org=acme.org,
        model_name=NAME,
        provider=acme.providers["fake"],
        upstream_model="gpt-4o-mini",
    )
    refresh_snapshot()
    return acme


def _get(acme, model, raw=None):
    return httpx.get(
        f"{acme.base_url}/models/{quote(model, safe='')}",
        headers={"Authorization": f"Bearer {raw or acme.raw}"},
        timeout=20,
    )


def _chat(acme, model, raw=None):
    return httpx.post(
        acme.base_url + "/chat/completions",
        json={"model": model, "messages": HI},
        headers={"Authorization": f"Bearer {raw or acme.raw}"},
        timeout=20,
    )


def _not_found(response) -> str:
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "model_not_found",
        "model",
    )
    return error["message"]


# ------------------------------------------------------------------ NFC
def test_a_decomposed_name_retrieves_its_model_as_a_body_reaches_it(named):
    assert SENT != NAME
    for model in (NAME, SENT):
        response = _get(named, model)
        assert response.status_code == 200, response.text
        assert response.json()["id"] == NAME  # the name as stored
        assert _chat(named, model).status_code == 200
    rows = usage_rows(named.org)
    assert [r.model_requested for r in rows] == [NAME] * 4


def test_the_sdk_retrieves_a_decomposed_name(named):
    client = openai.OpenAI(base_url=named.base_url, api_key=named.raw, max_retries=0)
    assert client.models.retrieve(SENT).id == NAME


# ------------------------------------------------------------------ surrounding whitespace
@pytest.mark.parametrize(
    "model", [" chat-small", "chat-small ", "\u00a0chat-small", "  chat-small  "]
)
def test_a_name_with_surrounding_whitespace_is_a_404_that_says_so(acme, model):
    for response in (_chat(acme, model), _get(acme, model)):
        message = _not_found(response)
        assert "leading or trailing whitespace" in message
        assert "Did you mean `chat-small`?" in message
    assert acme.fake.requests == []
    rows = usage_rows(acme.org)
    assert [(r.status, r.http_status) for r in rows] == [("rejected", 404)] * 2


def test_whitespace_around_an_unknown_name_says_so_without_a_suggestion(acme):
    message = _not_found(_chat(acme, " no-such-model "))
    assert "leading or trailing whitespace" in message
    assert "Did you mean" not in message


def test_a_name_with_whitespace_inside_is_only_unknown(acme):
    message = _not_found(_chat(acme, "chat -small"))
    assert "whitespace" not in message and "Did you mean" not in message


# ------------------------------------------------------------------ look-alikes
def _smart_on(acme):
    smart_tier_deployments(acme)
    services.gateway_config_set(actor=ACTOR, org=acme.org, smart_tiers=["smart-lite", "smart-pro"])
    refresh_snapshot()


@pytest.mark.parametrize("model", ["AUTO", "Auto", " auto", "ａｕｔｏ"])
def test_a_look_alike_of_the_smart_alias_suggests_it(acme, model):
    _smart_on(acme)
    for response in (_chat(acme, model), _get(acme, model)):
        assert "Did you mean `auto`?" in _not_found(response)
    assert _chat(acme, "auto").status_code == 200  # the alias itself still routes


def test_a_case_look_alike_of_a_model_suggests_it(acme):
    client = openai.OpenAI(base_url=acme.base_url, api_key=acme.raw, max_retries=0)
    with pytest.raises(openai.NotFoundError, match="Did you mean `chat-small`"):
        client.chat.completions.create(model="Chat-Small", messages=HI)


def test_the_suggestion_is_never_another_orgs_model_nor_one_the_key_may_not_use(acme, org_b):
    services.deployment_save(
        actor=ACTOR,
        org=org_b,
        model_name="globex-secret",
        provider=services.provider_save(actor=ACTOR, org=org_b, name="m", kind="mock"),
        upstream_model="mock",
    )
    _key, scoped = services.api_key_create(
        actor=ACTOR, org=acme.org, name="scoped", allowed_models=["chat-small"]
    )
    refresh_snapshot()
    assert "Did you mean" not in _not_found(_chat(acme, "GLOBEX-SECRET"))
    assert "Did you mean" not in _not_found(_chat(acme, "EMBED-SMALL", scoped))
    assert "Did you mean" not in _not_found(_get(acme, "Embed-Small", scoped))
    assert "Did you mean `chat-small`?" in _not_found(_chat(acme, "CHAT-SMALL", scoped))
