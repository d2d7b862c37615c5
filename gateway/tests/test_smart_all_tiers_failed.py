"""When every deployment a smart-routed request tried failed, the 502 names the tiers (and
fallback models) it went through, not "this model": the client asked for ``auto``. A plain
model's 502 keeps its words."""

import openai
import pytest

from gateway import services
from gateway.tests.conftest import ACTOR, refresh_snapshot
from gateway.tests.fake_upstream import Behaviour
from gateway.tests.test_smart_outside import _deploy

HELLO = "Hello"


def _failing(acme, *upstreams):
    for name in upstreams:
        acme.fake.behaviours[name] = Behaviour(status=500, error_message="boom")


def _ask(acme, model):
    client = openai.OpenAI(base_url=acme.base_url, api_key=acme.raw, max_retries=0)
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": HELLO}])
    assert raised.value.status_code == 502
    error = raised.value.body
    assert (error["type"], error["code"]) == ("server_error", "upstream_error")
    return error["message"]


def _tiers(acme, **config):
    for tier in ("lite", "mid", "pro"):
        _deploy(acme, tier, f"{tier}-up")
    services.gateway_config_set(
        actor=ACTOR,
        org=acme.org,
        smart_tiers=["lite", "mid", "pro"],
        smart={"thresholds": [0.999998, 0.999999]},  # "Hello" scores into lite
        **config,
    )
    refresh_snapshot()


def test_it_names_every_tier_tried(acme, gw):
    _tiers(acme)
    _failing(acme, "lite-up", "mid-up", "pro-up")
    message = _ask(acme, "auto")
    assert message.startswith("Every deployment of tiers lite, mid, pro failed; last error: ")
    assert "boom" in message and "this model" not in message


def test_it_names_the_fallback_models_after_the_tiers(acme, gw):
    _tiers(acme, fallback_models=["chat-small"])
    _failing(acme, "lite-up", "mid-up", "pro-up", "gpt-4o-mini")
    message = _ask(acme, "auto")
    assert message.startswith(
        "Every deployment of tiers lite, mid, pro and of fallback model chat-small failed; "
    )


def test_a_plain_model_keeps_this_model(acme, gw):
    _tiers(acme)
    _failing(acme, "primary-model", "secondary-model")
    message = _ask(acme, "ha-chat")
    assert message.startswith("Every deployment of this model failed; last error: ")


def _refused(acme, model, status):
    client = openai.OpenAI(base_url=acme.base_url, api_key=acme.raw, max_retries=0)
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": HELLO}])
    assert raised.value.status_code == status
    return raised.value.body["message"]


def test_a_rate_limited_429_names_the_tiers_too(acme, gw):
    _tiers(acme)
    for name in ("lite-up", "mid-up", "pro-up"):
        acme.fake.behaviours[name] = Behaviour(status=429, retry_after="1")
    message = _refused(acme, "auto", 429)
    assert message.startswith("Every deployment of tiers lite, mid, pro is rate limited"), message


def test_a_504_names_the_tiers_too(acme, gw):
    from gateway.models import GatewayConfig

    _tiers(acme)
    GatewayConfig.objects.filter(org=acme.org).update(request_timeout_s=2)
    refresh_snapshot()
    gw.retry_rounds = 1
    try:
        for name in ("lite-up", "mid-up", "pro-up"):
            acme.fake.behaviours[name] = Behaviour(hang=True)
        message = _refused(acme, "auto", 504)
    finally:
        gw.retry_rounds = 2
    assert message.startswith("Every deployment of tiers lite, mid, pro timed out"), message
