"""A provider's 400 saying the model cannot take a kind of input the request carries (an
image, audio, tools) fails over to the next deployment, fallback model or tier up, as a
prompt past the context window does; an ordinary 400 (a malformed request) still goes
straight back (docs/gateway.md, Routing). Every endpoint, streamed or not, over HTTP."""

import httpx
import pytest

from gateway.tests.conftest import usage_rows
from gateway.tests.fake_upstream import Behaviour
from gateway.tests.test_failover_deadline import CASES, ENDPOINT, _answered, _called, post
from gateway.tests.test_smart_routing import _smart_key, _tiers

NO_IMAGES = "Invalid content type. image_url is only supported by certain models."


def _refuses(message):
    return Behaviour(status=400, error_message=message, error_code=None)


@pytest.mark.parametrize(("path", "stream"), CASES)
def test_a_deployment_that_cannot_take_the_input_fails_over(acme, gw, path, stream):
    acme.fake.behaviours["primary-model"] = _refuses(NO_IMAGES)
    status, text, _headers, _took = post(acme, path, "ha-chat", stream)
    _answered(status, text, stream)
    assert _called(acme) == ["primary-model", "secondary-model"]
    [row] = [r for r in usage_rows(acme.org) if r.endpoint == ENDPOINT[path]]
    assert (row.status, row.http_status) == ("success", 200)


@pytest.mark.parametrize(("path", "stream"), CASES)
def test_a_cheap_tier_without_vision_fails_over_to_the_tier_up(acme, gw, path, stream):
    _tiers(acme)
    client = _smart_key(acme, {"thresholds": [0.999999]})
    acme.fake.behaviours["smart-lite-upstream"] = _refuses(
        "This model doesn't support the image content block."
    )
    status, text, headers, _took = post(acme, path, "auto", stream, key=client.api_key)
    _answered(status, text, stream)
    assert headers["x-bonito-model-used"] == "smart-pro"
    [row] = [r for r in usage_rows(acme.org) if r.endpoint == ENDPOINT[path]]
    assert (row.status, row.model_used, row.route_tier) == ("success", "smart-pro", "smart-lite")


@pytest.mark.parametrize("stream", [False, True])
def test_an_ordinary_400_goes_straight_back(acme, gw, stream):
    acme.fake.behaviours["primary-model"] = _refuses(
        "Invalid value for 'messages[0].content': expected a string or an array."
    )
    status, text, _headers, _took = post(acme, "/v1/chat/completions", "ha-chat", stream)
    assert status == 400 and "expected a string" in text, text
    assert _called(acme) == ["primary-model"]


def test_when_no_deployment_takes_the_input_the_client_gets_the_providers_400(acme, gw):
    acme.fake.behaviours["primary-model"] = _refuses(NO_IMAGES)
    acme.fake.behaviours["secondary-model"] = _refuses(NO_IMAGES)
    status, text, _headers, _took = post(acme, "/v1/chat/completions", "ha-chat", False)
    assert status == 400 and "only supported by certain models" in text, text
    assert _called(acme) == ["primary-model", "secondary-model"]
    [row] = [r for r in usage_rows(acme.org) if r.endpoint == "chat"]
    assert (row.status, row.http_status) == ("rejected", 400)


@pytest.mark.parametrize(
    "phrase",
    [
        "image_url is only supported by certain models",
        "This model doesn't support tools",
        "Prompt is too long",
        "maximum context length",
    ],
)
@pytest.mark.parametrize("escaped", [False, True])
def test_a_prompt_quoted_back_in_an_ordinary_400_does_not_fail_over(acme, gw, phrase, escaped):
    """A provider's ordinary 400 that quotes the request ("Invalid value for
    'messages[0].content': '…'") is not a refusal of an input kind or a context window just
    because the prompt holds those words (even written with JSON escapes): it goes straight
    back, and the next deployment, or tier up, is not called (and billed)."""
    prompt = f"please ignore: {phrase}"
    acme.fake.behaviours["primary-model"] = _refuses(
        f"Invalid value for 'messages[0].content': {prompt!r}"
    )
    text = "".join(f"\\u{ord(c):04x}" for c in prompt) if escaped else prompt
    raw = (
        '{"model": "ha-chat", "messages": [{"role": "user", "content": "' + text + '"}]}'
    ).encode()
    r = httpx.post(
        acme.url + "/v1/chat/completions",
        content=raw,
        headers={"Authorization": f"Bearer {acme.raw}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 400, r.text
    assert _called(acme) == ["primary-model"]
    [row] = [r for r in usage_rows(acme.org) if r.endpoint == "chat"]
    assert (row.status, row.http_status, row.model_used) == ("rejected", 400, "ha-chat")
