"""A provider's rate limit on every deployment tried is the client's 429, not a 502.

When every failure of the last round of attempts was a provider 429, the gateway answers
429 (`rate_limit_error`, code `upstream_rate_limited`) with a Retry-After from the
providers' own (the smallest, rounded up, at least 1; 5 s when none said), so the SDKs
raise RateLimitError and wait; a mix of 429 and 5xx stays a 502. Streams that fail before
their first byte answer the same. The request still has exactly one usage row."""

import anthropic
import httpx
import openai
import pytest

from gateway.dataplane import errors
from gateway.models import GatewayConfig
from gateway.tests.conftest import refresh_snapshot, usage_rows
from gateway.tests.fake_upstream import Behaviour

HI = [{"role": "user", "content": "hi"}]


def _short_deadline(acme):
    """A 1 s deadline: a Retry-After longer than what is left ends the attempts at once
    (rather than the gateway sleeping it out between its rounds)."""
    GatewayConfig.objects.update_or_create(org=acme.org, defaults={"request_timeout_s": 1})
    refresh_snapshot()


def _client(acme):
    return openai.OpenAI(base_url=acme.base_url, api_key=acme.raw, max_retries=0, timeout=20)


def _chat(acme, model: str, *, stream: bool = False) -> httpx.Response:
    """A raw chat request (the status and headers as sent, no SDK retry or parsing)."""
    return httpx.post(
        acme.base_url + "/chat/completions",
        json={"model": model, "messages": HI, "stream": stream},
        headers={"Authorization": f"Bearer {acme.raw}"},
        timeout=20,
    )


def _one_row(acme):
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status, row.error_type) == (
        "error",
        429,
        "upstream_rate_limited",
    )
    assert (row.input_tokens, row.output_tokens, float(row.cost)) == (0, 0, 0.0)
    return row


def _assert_openai_429(response, retry_after: str):
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == retry_after
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("rate_limit_error", "upstream_rate_limited")
    assert f"retry after {retry_after}s" in error["message"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_the_only_deployment_rate_limited_is_a_rate_limit_error(acme, mode, stream):
    _short_deadline(acme)
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(
        status=429, retry_after="2.5", error_message="Rate limit reached for requests"
    )
    with pytest.raises(openai.RateLimitError) as info:
        _client(acme).chat.completions.create(model="chat-small", messages=HI, stream=stream)
    _assert_openai_429(info.value.response, "3")  # 2.5 s rounded up
    assert "Rate limit reached for requests" in info.value.message  # the provider's words
    assert acme.fake.requests, "the provider was called"
    _one_row(acme)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_every_deployment_rate_limited_takes_the_smallest_retry_after(acme, mode, stream):
    _short_deadline(acme)
    acme.fake.behaviours["primary-model"] = Behaviour(status=429, retry_after="7")
    acme.fake.behaviours["secondary-model"] = Behaviour(status=429, retry_after="1.2")
    response = _chat(acme, "ha-chat", stream=stream)
    _assert_openai_429(response, "2")
    tried = {r["body"]["model"] for r in acme.fake.requests}
    assert tried == {"primary-model", "secondary-model"}
    _one_row(acme)


def test_no_retry_after_from_the_providers_is_the_default(acme, mode):
    """Without a Retry-After the gateway goes round again (after its backoff) before it
    answers; the client is told to wait the default."""
    acme.fake.behaviours["primary-model"] = Behaviour(status=429)
    acme.fake.behaviours["secondary-model"] = Behaviour(status=429)
    response = _chat(acme, "ha-chat")
    _assert_openai_429(response, str(errors.UPSTREAM_RETRY_AFTER_DEFAULT_S))
    assert len(acme.fake.requests) == 4  # two rounds of two deployments
    _one_row(acme)


@pytest.mark.parametrize("value", ["0", "0.01", "-5", "nan", "inf", "soon"])
def test_a_retry_after_that_is_zero_or_not_a_number_still_says_at_least_1(acme, value):
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(status=429, retry_after=value)
    response = _chat(acme, "chat-small")
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    _one_row(acme)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_rate_limit_beside_a_server_error_stays_a_502(acme, mode, stream):
    acme.fake.behaviours["primary-model"] = Behaviour(status=429, retry_after="1")
    acme.fake.behaviours["secondary-model"] = Behaviour(status=503)
    response = _chat(acme, "ha-chat", stream=stream)
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "upstream_error"
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status, row.error_type) == ("error", 502, "upstream_error")


def test_a_rate_limit_then_a_success_is_served(acme):
    """Failover still works: a 429 moves on to the next deployment, which answers."""
    acme.fake.behaviours["primary-model"] = Behaviour(status=429, retry_after="30")
    response = _client(acme).chat.completions.with_raw_response.create(model="ha-chat", messages=HI)
    assert response.headers["x-bonito-model-used"] == "ha-chat"
    assert response.parse().choices[0].message.content
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status) == ("success", 200)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_the_responses_api_rate_limited_is_a_rate_limit_error(acme, mode, stream):
    _short_deadline(acme)
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(status=429, retry_after="4")
    with pytest.raises(openai.RateLimitError) as info:
        _client(acme).responses.create(model="chat-small", input="hi", stream=stream)
    _assert_openai_429(info.value.response, "4")
    _one_row(acme)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_the_messages_api_rate_limited_is_anthropics_rate_limit_error(acme, mode, stream):
    _short_deadline(acme)
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(status=429, retry_after="4")
    client = anthropic.Anthropic(base_url=acme.url, api_key=acme.raw, max_retries=0, timeout=20)
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model="chat-small", max_tokens=5, messages=HI, stream=stream)
    assert info.value.response.headers["retry-after"] == "4"
    assert info.value.body["error"]["type"] == "rate_limit_error"
    _one_row(acme)


def test_the_next_round_waits_the_smallest_retry_after_not_the_last_deployments(acme):
    """The first deployment asks for 0.3 s, the second for 30 s: the gateway goes round again
    after 0.3 s (it waited the last one's 30 s, or, past its deadline, gave up at once), and
    the wait is not counted as Bonito's overhead."""
    GatewayConfig.objects.update_or_create(org=acme.org, defaults={"request_timeout_s": 5})
    refresh_snapshot()
    acme.fake.behaviours["primary-model"] = Behaviour(status=429, retry_after="0.3", fail_times=1)
    acme.fake.behaviours["secondary-model"] = Behaviour(status=429, retry_after="30")
    response = _chat(acme, "ha-chat")
    assert response.status_code == 200, response.text
    tried = [r["body"]["model"] for r in acme.fake.requests]
    assert tried == ["primary-model", "secondary-model", "primary-model"]
    assert float(response.headers["x-bonito-overhead-ms"]) < 250  # the 0.3 s wait excluded
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status) == ("success", 200)


def test_a_context_refusal_beside_an_outage_says_both(acme, mode):
    """One deployment refuses the prompt as too long, the other is down: the 502 says the
    first could not take the request (not only "failed"); beside a rate limit, the 429 says
    it is every deployment *that can take it* that is rate limited."""
    acme.fake.behaviours["primary-model"] = Behaviour(
        status=400,
        error_message="This model's maximum context length is 8192 tokens.",
        error_code="context_length_exceeded",
    )
    acme.fake.behaviours["secondary-model"] = Behaviour(status=503, error_message="boom")
    response = _chat(acme, "ha-chat")
    assert response.status_code == 502, response.text
    message = response.json()["error"]["message"]
    assert "boom" in message and "maximum context length is 8192 tokens" in message, message
    acme.fake.behaviours["secondary-model"] = Behaviour(status=429, retry_after="1")
    response = _chat(acme, "ha-chat")
    assert response.status_code == 429, response.text
    assert "that can take this request is rate limited" in response.json()["error"]["message"]
    assert len(usage_rows(acme.org)) == 2


ORG_ID = "org-" + "Zq8" * 8  # OpenAI's shape: org- and 24 letters and digits
PROJECT_ID = "proj_" + "k4W" * 8
ARN = "arn:aws:iam::210987654321:role/bonito-platform"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_the_provider_account_a_429_names_is_not_the_clients_to_read(acme, mode, stream):
    """OpenAI's 429 names the account the credentials belong to ("… in organization org-…
    on tokens per min"); on a shared gateway with lent credentials, the platform's own.
    The client gets the provider's words without it; the limits and the wait stay."""
    _short_deadline(acme)
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(
        status=429,
        retry_after="7",  # past the deadline: the attempts end at once
        error_message=(
            f"Rate limit reached for gpt-4o-mini in organization {ORG_ID} (project"
            f" {PROJECT_ID}, {ARN}) on tokens per min (TPM): Limit 30000, Used 29950."
        ),
    )
    response = _chat(acme, "chat-small", stream=stream)
    assert response.status_code == 429, response.text
    for account in (ORG_ID, PROJECT_ID, ARN, "210987654321"):
        assert account not in response.text
    message = response.json()["error"]["message"]
    assert "Rate limit reached for gpt-4o-mini in organization [account]" in message
    assert "on tokens per min (TPM): Limit 30000, Used 29950." in message
    _one_row(acme)
