"""The x-ratelimit-* headers of a 429 say what the key's buckets really hold: a refusal by
one bucket reported the others as full (the per-process limiter stops at the bucket that
refuses), and a request that can never pass carried none at all. The error's type names
the limit that refused (OpenAI's `tokens` or `requests`)."""

import httpx
import pytest
import redis as redis_lib

from gateway.dataplane.limits import Limiter
from gateway.models import ApiKey
from gateway.tests.conftest import (
    pricey_chat_small_under_a_cap,
    refresh_snapshot,
    usage_rows,
)
from gateway.tests.test_limits import _redis_url, _settings_redis


@pytest.fixture(params=["local", "redis"])
def backend(request, gw):
    if request.param == "redis":
        url = _redis_url()
        if url is None:
            pytest.skip("no Redis reachable on this machine")
        gw.limiter = Limiter(url)
        client = redis_lib.Redis.from_url(url)
        for key in client.scan_iter("bonito:*"):
            client.delete(key)
    else:
        gw.limiter = Limiter("")
    yield request.param
    gw.limiter = Limiter(_settings_redis())


def _limits(acme, **fields):
    ApiKey.objects.filter(pk=acme.key.pk).update(**fields)
    refresh_snapshot()


def _chat(acme, max_tokens=5):
    return httpx.post(
        acme.base_url + "/chat/completions",
        json={
            "model": "chat-small",
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers={"Authorization": f"Bearer {acme.raw}"},
        timeout=30,
    )


def _left(response, unit):
    return int(response.headers[f"x-ratelimit-remaining-{unit}"])


def test_a_429_by_the_requests_limit_reports_the_tokens_really_left(acme, backend):
    _limits(acme, rpm_limit=1, tpm_limit=6000)
    ok = _chat(acme, 3000)
    assert ok.status_code == 200, ok.text
    after_ok = _left(ok, "tokens")
    assert after_ok < 3000
    refused = _chat(acme, 10)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "requests"
    assert _left(refused, "requests") == 0
    # what the first took is still out (a few tokens refill a second); it said 6000
    tokens_left = _left(refused, "tokens")
    assert after_ok <= tokens_left < after_ok + 1000
    assert refused.headers["x-ratelimit-limit-tokens"] == "6000"
    assert float(refused.headers["x-ratelimit-reset-tokens"].removesuffix("s")) > 10
    assert [r.http_status for r in usage_rows(acme.org)] == [200, 429]


def test_a_429_by_the_tokens_limit_says_tokens(acme, backend):
    _limits(acme, tpm_limit=1000)
    assert _chat(acme, 600).status_code == 200
    refused = _chat(acme, 600)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("tokens", "rate_limit_exceeded")
    assert 0 <= _left(refused, "tokens") < 1000 - 600


def test_a_request_that_can_never_pass_still_reports_the_buckets(acme, backend):
    _limits(acme, rpm_limit=100, tpm_limit=1000)
    ok = _chat(acme, 500)
    assert ok.status_code == 200
    never = _chat(acme, 5000)
    assert never.status_code == 429 and never.headers["x-should-retry"] == "false"
    assert never.headers["x-ratelimit-limit-tokens"] == "1000"
    assert _left(ok, "tokens") <= _left(never, "tokens") < 1000
    assert never.headers["x-ratelimit-limit-requests"] == "100"
    # the refused request took nothing: the first request's one is all that is gone
    assert _left(ok, "requests") == 99 and _left(never, "requests") >= 99


def test_a_429_at_the_spend_cap_reports_the_buckets_as_they_are(acme, backend):

    # $1000 per million tokens: one request's reservation is past a $0.01 cap
    pricey_chat_small_under_a_cap(acme, "0.01")
    _limits(acme, rpm_limit=10, tpm_limit=6000)
    ok = _chat(acme, 5)
    assert ok.status_code == 200, ok.text
    capped = _chat(acme, 5)
    assert capped.status_code == 429
    assert capped.json()["error"]["code"] == "spend_cap_exceeded"
    # the first request's one is gone from the key's buckets (they said 10 and 6000)
    assert _left(capped, "requests") == 9
    assert _left(ok, "tokens") <= _left(capped, "tokens") < 6000
