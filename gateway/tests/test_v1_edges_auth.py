"""Ambiguous credentials are refused, never resolved by picking one: a key header sent twice
with different values (the last one used to win), or two different Bonito keys in
Authorization, api-key and x-api-key. A 401 in OpenAI's shape, and nothing recorded."""

import httpx
import openai
import pytest

from gateway import services
from gateway.tests.conftest import ACTOR, refresh_snapshot, usage_rows
from gateway.tests.openai_schema import assert_openai_schema

CHAT = {"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def other(acme):
    """A second valid key of the same org."""
    _key, raw = services.api_key_create(actor=ACTOR, org=acme.org, name="other")
    refresh_snapshot()
    return raw


def _assert_ambiguous(response):
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/json"
    assert_openai_schema(response.json(), "ErrorResponse")
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert "more than once" in error["message"] or "two different" in error["message"]


def _pairs(acme, other):
    return [
        # two Authorization headers, either order: two valid keys, or a valid one and junk
        [("Authorization", f"Bearer {acme.raw}"), ("Authorization", f"Bearer {other}")],
        [("Authorization", "Bearer bn-forged"), ("Authorization", f"Bearer {acme.raw}")],
        [("Authorization", f"Bearer {acme.raw}"), ("Authorization", "Bearer bn-forged")],
        [("x-api-key", acme.raw), ("x-api-key", other)],
        [("api-key", "junk"), ("api-key", acme.raw)],
        # two different Bonito keys in two of the places a key may be
        [("Authorization", f"Bearer {acme.raw}"), ("x-api-key", other)],
        [("api-key", other), ("x-api-key", acme.raw)],
    ]


@pytest.mark.parametrize("case", range(7))
@pytest.mark.parametrize("method,path", [("POST", "/chat/completions"), ("GET", "/models")])
def test_two_credentials_are_a_401_and_nothing_is_recorded(acme, other, case, method, path):
    headers = _pairs(acme, other)[case]
    response = httpx.request(
        method,
        acme.base_url + path,
        headers=headers,
        json=CHAT if method == "POST" else None,
        timeout=30,
    )
    _assert_ambiguous(response)
    assert usage_rows() == [] and acme.fake.requests == []


def test_the_same_key_sent_twice_is_still_one_key(acme):
    for headers in (
        [("Authorization", f"Bearer {acme.raw}"), ("Authorization", f"Bearer {acme.raw}")],
        [("Authorization", f"Bearer {acme.raw}"), ("x-api-key", acme.raw)],
    ):
        response = httpx.post(acme.base_url + "/chat/completions", headers=headers, json=CHAT)
        assert response.status_code == 200, response.text
    assert [r.key_id for r in usage_rows(acme.org)] == [acme.key.id] * 2


def test_a_proxy_token_beside_one_bonito_key_still_works(acme):
    response = httpx.post(
        acme.base_url + "/chat/completions",
        headers={"Authorization": "Bearer corp-proxy-token", "x-api-key": acme.raw},
        json=CHAT,
    )
    assert response.status_code == 200, response.text


def test_the_sdk_raises_its_authentication_error(acme, other):
    client = openai.OpenAI(
        base_url=acme.base_url,
        api_key=acme.raw,
        max_retries=0,
        default_headers={"x-api-key": other},
    )
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(**CHAT)
    assert usage_rows() == []
