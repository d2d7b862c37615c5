"""A request that needs more tokens than a TPM limit holds in a whole minute (its prompt,
estimated, and max_tokens x n: without max_tokens the policy's estimate, 1,024) can never
pass: a 429 that says so and how to fix it, with `x-should-retry: false`, which the SDKs
obey before Retry-After. It was "Rate limit reached ... Retry after 60s" for ever, which
they waited out (two retries, 60 s apart) for nothing."""

import time

import httpx
import openai
import pytest

from gateway import services
from gateway.tests.conftest import ACTOR, refresh_snapshot, usage_rows


def _key(acme, **limits):
    _key, raw = services.api_key_create(actor=ACTOR, org=acme.org, name="small", **limits)
    refresh_snapshot()
    return raw


def _chat(acme, raw, **extra):
    return httpx.post(
        acme.base_url + "/chat/completions",
        json={"model": "chat-small", "messages": [{"role": "user", "content": "hi"}], **extra},
        headers={"Authorization": f"Bearer {raw}"},
        timeout=30,
    )


@pytest.mark.parametrize("extra", [{}, {"max_tokens": 5000}, {"max_tokens": 400, "n": 3}])
def test_a_request_bigger_than_the_key_tpm_says_it_can_never_pass(acme, extra):
    raw = _key(acme, tpm_limit=1000)
    response = _chat(acme, raw, **extra)
    assert response.status_code == 429, response.text
    assert response.headers["x-should-retry"] == "false"
    error = response.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "tokens"
    assert "1000 tokens per minute" in error["message"] and "max_tokens" in error["message"]
    assert acme.fake.requests == []
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status) == ("rejected", 429)
    # one that fits passes, and the refused one took nothing from the bucket
    assert _chat(acme, raw, max_tokens=900).status_code == 200


def test_the_sdk_gets_its_rate_limit_error_at_once(acme):
    raw = _key(acme, tpm_limit=1000)
    client = openai.OpenAI(base_url=acme.base_url, api_key=raw, max_retries=2)
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="chat-small", messages=[{"role": "user", "content": "hi"}]
        )
    assert time.monotonic() - started < 20  # its own short backoff, not 60 s a retry


def test_the_org_tpm_too(acme):
    services.gateway_config_set(actor=ACTOR, org=acme.org, org_tpm_limit=1000)
    raw = _key(acme)
    response = _chat(acme, raw)
    assert response.status_code == 429 and response.headers["x-should-retry"] == "false"
    assert "organization" in response.json()["error"]["message"]
