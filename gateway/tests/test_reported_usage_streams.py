"""Where the provider reports a stream's usage, the row bills the provider's counts; the
tokenizer counts only what the provider did not report. On the Responses API and the
Messages API, translated to chat (the chat stream's final usage chunk) or passed through
(Anthropic's message_start and message_delta usage), and when the client leaves mid-stream
(a 499) after the provider reported part of it. The fake reports a prompt of 777 tokens,
far from what the tokenizer counts of "hi", and one output token per word."""

import time

import httpx
import pytest

from gateway.tests.conftest import anthropic_deployment, openai_provider, usage_rows
from gateway.tests.fake_upstream import Behaviour
from gateway.tests.test_messages_api import UPSTREAM

PROMPT = 777
WORDS = 7


def _stream(acme, path, body, headers=None):
    with httpx.stream(
        "POST",
        acme.url + path,
        json={**body, "stream": True},
        headers={"Authorization": f"Bearer {acme.raw}", **(headers or {})},
        timeout=20,
    ) as response:
        assert response.status_code == 200, response.read()
        return list(response.iter_lines())


def _row(acme):
    [row] = usage_rows(acme.org)
    return row


@pytest.fixture
def claude(acme):
    anthropic_deployment(acme, "claude", UPSTREAM["claude"])
    return acme


def test_a_translated_responses_stream_bills_the_providers_usage(acme, mode):
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(prompt_tokens=PROMPT, stream_chunks=WORDS)
    lines = _stream(acme, "/v1/responses", {"model": "chat-small", "input": "hi"})
    assert "event: response.completed" in lines
    row = _row(acme)
    assert (row.status, row.input_tokens, row.output_tokens) == ("success", PROMPT, WORDS)


def test_a_passed_through_responses_stream_bills_the_providers_usage(acme):
    from gateway import services
    from gateway.tests.conftest import ACTOR, refresh_snapshot

    services.deployment_save(
        actor=ACTOR,
        org=acme.org,
        model_name="oai-chat",
        provider=openai_provider(acme),
        upstream_model="gpt-4o-mini",
    )
    refresh_snapshot()
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(prompt_tokens=PROMPT, stream_chunks=WORDS)
    _stream(acme, "/v1/responses", {"model": "oai-chat", "input": "hi"})
    row = _row(acme)
    assert (row.status, row.input_tokens, row.output_tokens) == ("success", PROMPT, WORDS)


@pytest.mark.parametrize("model", ["claude", "chat-small"])
def test_a_messages_stream_bills_the_providers_usage(claude, mode, model):
    claude.fake.behaviours[UPSTREAM[model]] = Behaviour(prompt_tokens=PROMPT, stream_chunks=WORDS)
    lines = _stream(
        claude,
        "/v1/messages",
        {"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]},
        {"anthropic-version": "2023-06-01"},
    )
    assert "event: message_stop" in lines
    row = _row(claude)
    assert (row.status, row.input_tokens, row.output_tokens) == ("success", PROMPT, WORDS)


def test_a_client_leaving_an_anthropic_stream_bills_the_prompt_it_reported(claude):
    """Anthropic reports the prompt's tokens in message_start: a client that leaves after
    the first words is billed those, and the output relayed (counted), not the tokenizer's
    count of the prompt."""
    claude.fake.behaviours[UPSTREAM["claude"]] = Behaviour(
        prompt_tokens=PROMPT, stream_chunks=200, chunk_delay=0.05
    )
    with httpx.stream(
        "POST",
        claude.url + "/v1/messages",
        json={
            "model": "claude",
            "max_tokens": 500,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        },
        headers={"x-api-key": claude.raw, "anthropic-version": "2023-06-01"},
        timeout=20,
    ) as response:
        for line in response.iter_lines():
            if "content_block_delta" in line:
                break  # the client goes away mid-answer
    deadline = time.monotonic() + 10
    while not usage_rows(claude.org) and time.monotonic() < deadline:
        time.sleep(0.1)
    row = _row(claude)
    assert (row.status, row.http_status, row.error_type) == ("error", 499, "client_disconnected")
    assert row.input_tokens == PROMPT
    assert 1 <= row.output_tokens < 200
