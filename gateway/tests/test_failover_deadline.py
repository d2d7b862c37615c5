"""A deployment that hangs does not take the whole request deadline when other
deployments remain: each attempt with candidates after it gets its share of what is left
(to its first output when streamed), so the next deployment or tier up still answers
(docs/gateway.md, Routing). On every endpoint, streamed or not, for the deployments of one
model and for smart routing's tiers. Over HTTP: the live gateway, the fake upstream."""

import time

import httpx
import pytest

from gateway.tests.conftest import usage_rows
from gateway.tests.fake_upstream import Behaviour
from gateway.tests.test_smart_routing import _smart_key, _tiers

HI = [{"role": "user", "content": "hi"}]
BODIES = {
    "/v1/chat/completions": {"messages": HI},
    "/v1/completions": {"prompt": "hi"},
    "/v1/responses": {"input": "hi"},
    "/v1/messages": {"max_tokens": 5, "messages": HI},
}
CASES = [(path, stream) for path in BODIES for stream in (False, True)]
ENDPOINT = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/responses": "responses",
    "/v1/messages": "messages",
}


def _timeout(acme, seconds):
    from gateway.models import GatewayConfig
    from gateway.tests.conftest import refresh_snapshot

    GatewayConfig.objects.update_or_create(org=acme.org, defaults={"request_timeout_s": seconds})
    refresh_snapshot()


def post(acme, path, model, stream, key=None, timeout=30):
    """(status, the whole body as text, headers, seconds taken)."""
    body = {"model": model, **BODIES[path], "stream": stream}
    started = time.monotonic()
    with httpx.Client(timeout=timeout) as client:
        r = client.post(
            acme.url + path, json=body, headers={"Authorization": f"Bearer {key or acme.raw}"}
        )
    return r.status_code, r.text, r.headers, time.monotonic() - started


def _answered(status, text, stream):
    assert status == 200, text
    if stream:
        assert "data:" in text and '"error":{' not in text and "event: error" not in text, text
    else:
        assert "word0" in text, text


def _called(acme):
    return [r["body"].get("model") for r in acme.fake.requests if "body" in r]


@pytest.mark.parametrize(("path", "stream"), CASES)
def test_a_hanging_deployment_fails_over_to_the_next_within_the_deadline(acme, gw, path, stream):
    _timeout(acme, 2)
    acme.fake.behaviours["primary-model"] = Behaviour(hang=True)
    status, text, headers, took = post(acme, path, "ha-chat", stream)
    _answered(status, text, stream)
    assert took < 2.5
    assert _called(acme) == ["primary-model", "secondary-model"]
    [row] = [r for r in usage_rows(acme.org) if r.endpoint == ENDPOINT[path]]
    assert (row.status, row.http_status) == ("success", 200)
    assert row.deployment.endswith("secondary-model") or "fake2" in row.deployment


@pytest.mark.parametrize(("path", "stream"), CASES)
def test_a_hanging_cheap_tier_fails_over_to_the_tier_up(acme, gw, path, stream):
    _tiers(acme)
    client = _smart_key(acme, {"thresholds": [0.999999]})  # everything scores the cheap tier
    _timeout(acme, 2)
    acme.fake.behaviours["smart-lite-upstream"] = Behaviour(hang=True)
    status, text, headers, took = post(acme, path, "auto", stream, key=client.api_key)
    _answered(status, text, stream)
    assert took < 2.5
    assert headers["x-bonito-route-tier"] == "smart-lite"  # what the score chose
    assert headers["x-bonito-model-used"] == "smart-pro"  # what answered
    [row] = [r for r in usage_rows(acme.org) if r.endpoint == ENDPOINT[path]]
    assert (row.status, row.http_status, row.model_used) == ("success", 200, "smart-pro")
    assert (row.route_tier, float(row.cost) > 0) == ("smart-lite", True)


@pytest.mark.parametrize("stream", [False, True])
def test_when_every_deployment_hangs_the_504_says_so_at_the_deadline(acme, gw, stream):
    _timeout(acme, 2)
    acme.fake.behaviours["primary-model"] = Behaviour(hang=True)
    acme.fake.behaviours["secondary-model"] = Behaviour(hang=True)
    status, text, _headers, took = post(acme, "/v1/chat/completions", "ha-chat", stream)
    assert status == 504, text
    assert "Every deployment of this model timed out" in text
    assert 1.8 < took < 3
    assert _called(acme) == ["primary-model", "secondary-model"]
    [row] = [r for r in usage_rows(acme.org) if r.endpoint == "chat"]
    assert (row.status, row.http_status, row.error_type) == ("error", 504, "upstream_timeout")


def test_a_timeout_after_a_failure_is_not_called_every_deployment_timing_out(acme, gw):
    _timeout(acme, 2)
    gw.retry_rounds = 1
    try:
        acme.fake.behaviours["primary-model"] = Behaviour(status=500)
        acme.fake.behaviours["secondary-model"] = Behaviour(hang=True)
        status, text, _headers, _took = post(acme, "/v1/chat/completions", "ha-chat", False)
    finally:
        gw.retry_rounds = 2
    assert status == 504, text
    assert "Every deployment" not in text
    assert "1 of the deployments tried timed out; 1 failed" in text


@pytest.mark.parametrize("stream", [False, True])
def test_the_last_candidate_gets_the_whole_deadline(acme, gw, stream):
    """One deployment: a slow answer is not cut at a share of the deadline."""
    _timeout(acme, 3)
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(latency=1.8)
    status, text, _headers, took = post(acme, "/v1/chat/completions", "chat-small", stream)
    _answered(status, text, stream)
    assert took >= 1.8
