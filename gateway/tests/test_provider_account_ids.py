"""A provider's account ids ([account]) are taken from every error the client reads,
Anthropic's and Google's too, without breaking the event they are in."""

import json

import httpx
import orjson
import pytest

from gateway.tests.conftest import anthropic_deployment, refresh_snapshot
from gateway.tests.fake_upstream import Behaviour

HI = [{"role": "user", "content": "hi"}]
ANTHROPIC_ORG = "a22cf6e6-a940-4fff-8c4c-1580816ac7be"
ACCOUNT = "210987654321"


def _post(acme, raw, path, body):
    return httpx.post(
        acme.base_url + path, json=body, headers={"Authorization": f"Bearer {raw}"}, timeout=20
    )


# ------------------------------------------------------------------ provider account ids
@pytest.mark.parametrize("path", ["/chat/completions", "/messages"])
def test_anthropic_s_429_names_its_organization_and_the_client_does_not_read_it(acme, gw, path):
    """Anthropic's 429 names the organization the key belongs to ("… exceed the rate limit
    for your organization (<uuid>) of 20,000 input tokens per minute", later "(org: <uuid>,
    model: …)"): as OpenAI's org-… id, the platform's own account with lent credentials."""
    from gateway.models import GatewayConfig

    GatewayConfig.objects.update_or_create(org=acme.org, defaults={"request_timeout_s": 1})
    anthropic_deployment(acme, "claude", "claude-3-5-haiku-20241022")
    acme.fake.behaviours["claude-3-5-haiku-20241022"] = Behaviour(
        status=429,
        retry_after="7",
        error_message=(
            f"This request would exceed the rate limit for your organization ({ANTHROPIC_ORG})"
            " of 20,000 input tokens per minute. Or: your organization's rate limit of 30,000"
            f" input tokens per minute (org: {ANTHROPIC_ORG}, model: claude-3-5-haiku)."
        ),
    )
    body = {"model": "claude", "messages": HI, "max_tokens": 5}
    response = _post(acme, acme.raw, path, body)
    assert response.status_code == 429, response.text
    assert "20,000 input tokens per minute" in response.text
    assert ANTHROPIC_ORG not in response.text


def test_google_s_quota_error_names_its_project_number_and_the_client_does_not_read_it(acme):
    """Google's quota 429s name the consumer project ("for consumer
    'project_number:123…'"): the account of the deployment's credentials."""
    from gateway.models import GatewayConfig

    GatewayConfig.objects.update_or_create(org=acme.org, defaults={"request_timeout_s": 1})
    refresh_snapshot()
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(
        status=429,
        retry_after="7",
        error_message=(
            "Quota exceeded for quota metric 'Generate Content API requests per minute' and "
            "limit 'GenerateContent request limit per minute for a region' of service "
            f"'generativelanguage.googleapis.com' for consumer 'project_number:{ACCOUNT}'."
        ),
    )
    response = _post(acme, acme.raw, "/chat/completions", {"model": "chat-small", "messages": HI})
    assert response.status_code == 429, response.text
    assert "of service 'generativelanguage.googleapis.com'" in response.text
    assert ACCOUNT not in response.text


def _events(text: str) -> list:
    return [
        line.removeprefix("data: ")
        for line in text.split("\n")
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


_CHUNK = {
    "id": "c1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}],
}


def test_an_account_id_in_a_mid_stream_error_event_leaves_the_event_json(acme):
    """The relay redacts a mid-stream error event as the provider's bytes: an ARN followed
    by an escaped character (a quoted ARN, a line break) took the escape's backslash with
    it, and the client got an event that is not JSON. An org id after an escaped line break
    was not seen at all (no word boundary between the escape's `n` and `org-`)."""
    arn = f"arn:aws:iam::{ACCOUNT}:role/bonito-platform"
    org = "org-" + "Zq8" * 8
    message = f'Throttled: the role "{arn}" is over its quota.\n{org} waits.'
    error = {"error": {"message": message, "type": "server_error", "code": None}}
    raw = b"data: " + orjson.dumps(_CHUNK) + b"\n\n" + b"data: " + orjson.dumps(error) + b"\n\n"
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(raw_response=("text/event-stream", raw))
    response = _post(
        acme, acme.raw, "/chat/completions", {"model": "chat-small", "messages": HI, "stream": True}
    )
    assert response.status_code == 200, response.text
    events = _events(response.text)
    sent = orjson.loads(events[-1])  # JSON, as the provider sent it
    assert "is over its quota" in sent["error"]["message"]
    assert ACCOUNT not in response.text and org not in response.text


def _stream_of(acme, raw: bytes):
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(raw_response=("text/event-stream", raw))
    body = {"model": "chat-small", "messages": HI, "stream": True}
    response = _post(acme, acme.raw, "/chat/completions", body)
    assert response.status_code == 200, response.text
    return response


@pytest.mark.parametrize(
    "quoted",
    ["\u201c{}\u201d", "\u00ab{}\u00bb", "<{}>"],
    ids=["curly-quotes", "guillemets", "angle-brackets"],
)
def test_an_account_id_after_a_unicode_escape_in_a_mid_stream_error_event(acme, quoted):
    """An upstream whose JSON is ASCII only (Python's json.dumps by default) writes a
    quote before an id as \\u201c, Go's encoder < as \\u003c: the escape's last hex digit
    and the id had no word boundary between them, and the client's SDK read the id."""
    arn = f"arn:aws:iam::{ACCOUNT}:role/bonito-platform"
    org = "org-" + "Zq8" * 8
    message = f"Throttled: role {quoted.format(arn)} of {quoted.format(org)}."
    error = {"error": {"message": message, "type": "server_error", "code": None}}
    payload = json.dumps(error).replace("<", "\\u003c").replace(">", "\\u003e").encode()
    response = _stream_of(
        acme, b"data: " + orjson.dumps(_CHUNK) + b"\n\n" + b"data: " + payload + b"\n\n"
    )
    sent = orjson.loads(_events(response.text)[-1])  # JSON, as the SDK reads it
    assert sent["error"]["message"].startswith("Throttled: role ")
    assert ACCOUNT not in sent["error"]["message"] and org not in sent["error"]["message"]


def test_an_error_chunk_with_a_choice_is_redacted_too(acme):
    """OpenRouter's mid-stream error is one chunk with both the error and a choice that
    finishes with "error": the relay redacted only an error without choices, so this one
    went out with the account's ids (and any credential quoted) as the provider wrote it."""
    org = "org-" + "Zq8" * 8
    err = {
        **_CHUNK,
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        "error": {"code": 429, "message": f"Rate limit reached in organization {org}."},
    }
    raw = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in (_CHUNK, err))
    response = _stream_of(acme, raw + b"data: [DONE]\n\n")
    assert "Rate limit reached in organization [account]." in response.text
    assert org not in response.text
