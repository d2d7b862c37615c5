"""What a provider refuses, and whose fault it is: a field the provider lacks (left out if it
only tunes sampling, else a clear 400, or the next deployment that has it), the provider
refusing the deployment's credentials (the deployment failing: the next one is tried, the
client never sees the provider's words), and a client's bad request (which counts against
no deployment's health). Driven by the openai SDK against a live gateway."""

import httpx
import openai
import orjson
import pytest

from gateway import runtime, services
from gateway.dataplane.routing import FAILURES_TO_OPEN
from gateway.tests.conftest import ACTOR, anthropic_deployment, refresh_snapshot, usage_rows
from gateway.tests.fake_upstream import Behaviour
from gateway.tests.openai_schema import assert_openai_schema

CLAUDE = "claude-sonnet-4-5-20250929"
HI = [{"role": "user", "content": "hi"}]
# What LangChain, LibreChat and others send on every request: Anthropic has none of them.
SAMPLING = {"presence_penalty": 0, "frequency_penalty": 0.5, "seed": 7}


def sdk(acme) -> openai.OpenAI:
    return openai.OpenAI(base_url=acme.base_url, api_key=acme.raw, max_retries=0, timeout=20)


def sent(acme) -> dict:
    return acme.fake.requests[-1]["body"]


@pytest.mark.parametrize("stream", [False, True])
def test_sampling_fields_a_provider_lacks_are_left_out(acme, stream):
    anthropic_deployment(acme, "claude", CLAUDE)
    answer = sdk(acme).chat.completions.create(
        model="claude", messages=HI, stream=stream, service_tier="flex", user="u-1", **SAMPLING
    )
    text = (
        "".join(c.choices[0].delta.content or "" for c in answer if c.choices)
        if stream
        else answer.choices[0].message.content
    )
    assert text.startswith("word0")
    body = sent(acme)
    assert body["model"] == CLAUDE and not set(SAMPLING) & set(body)
    assert "service_tier" not in body
    assert body["metadata"] == {"user_id": "u-1"}  # Anthropic has `user`: kept
    (row,) = usage_rows(acme.org)
    assert row.http_status == 200 and row.cost > 0


def test_a_field_that_shapes_the_answer_is_refused_by_name(acme):
    anthropic_deployment(acme, "claude", CLAUDE)
    before = len(acme.fake.requests)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk(acme).chat.completions.create(model="claude", messages=HI, n=2, logprobs=True, seed=1)
    error = refused.value.body
    assert error["param"] == "logprobs" and error["code"] == "unsupported_parameter"
    assert "'logprobs', 'n'" in error["message"] and "seed" not in error["message"]
    assert "UnsupportedParamsError" not in error["message"]
    assert len(acme.fake.requests) == before  # refused before any provider call
    response = httpx.post(
        acme.base_url + "/chat/completions",
        headers={"Authorization": f"Bearer {acme.raw}"},
        json={"model": "claude", "messages": HI, "functions": [{"name": "f"}]},
    )
    assert response.status_code == 400
    assert_openai_schema(response.json(), "ErrorResponse")
    assert response.json()["error"]["param"] == "functions"
    rows = usage_rows(acme.org)
    assert [r.http_status for r in rows] == [400, 400]  # each request one row
    # n=1 is what every SDK may send: never refused.
    answer = sdk(acme).chat.completions.create(model="claude", messages=HI, n=1)
    assert answer.choices[0].message.content


def test_a_request_one_deployment_cannot_serve_goes_to_one_that_can(acme):
    """A model served by Anthropic first and an OpenAI-compatible upstream second: n=2 is
    the second one's (no provider call to the first), a plain request stays on the first."""
    anthropic_deployment(acme, "mixed", CLAUDE)
    services.deployment_save(
        actor=ACTOR,
        org=acme.org,
        model_name="mixed",
        provider=acme.providers["fake"],
        upstream_model="gpt-4o-mini",
        priority=5,
    )
    refresh_snapshot()
    client = sdk(acme)
    two = client.chat.completions.with_raw_response.create(model="mixed", messages=HI, n=2)
    assert two.headers["x-bonito-provider"] == "fake"
    assert sent(acme)["n"] == 2 and sent(acme)["model"] == "gpt-4o-mini"
    one = client.chat.completions.with_raw_response.create(model="mixed", messages=HI)
    assert one.headers["x-bonito-provider"] == "anth"
    rows = usage_rows(acme.org)
    assert [r.http_status for r in rows] == [200, 200]
    assert [r.deployment for r in rows] == ["fake/gpt-4o-mini", f"anth/{CLAUDE}"]
    # Unfit deployments are not failing ones: the Anthropic one is healthy.
    health = runtime.gateway().health
    assert all(h.consecutive_failures == 0 for h in health._health.values())


# OpenAI's 401 quotes the key's last characters: the client must never see them.
LEAKY = "Incorrect API key provided: sk-proj-****************************wxyz."


@pytest.mark.parametrize("status", [401, 403])
def test_a_provider_refusing_the_credentials_fails_over(acme, mode, status):
    acme.fake.behaviours["primary-model"] = Behaviour(status=status, error_message=LEAKY)
    answer = sdk(acme).chat.completions.with_raw_response.create(model="ha-chat", messages=HI)
    assert answer.headers["x-bonito-provider"] == "fake2"
    (row,) = usage_rows(acme.org)
    assert row.http_status == 200 and row.deployment == "fake2/secondary-model"


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_never_the_clients_401(acme, mode, status):
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(status=status, error_message=LEAKY)
    response = httpx.post(
        acme.base_url + "/chat/completions",
        headers={"Authorization": f"Bearer {acme.raw}"},
        json={"model": "chat-small", "messages": HI},
        timeout=20,
    )
    assert response.status_code == 502, response.text  # not the client's key: a 502
    assert_openai_schema(response.json(), "ErrorResponse")
    message = response.json()["error"]["message"]
    assert f"refused this deployment's credentials (HTTP {status})" in message
    assert "wxyz" not in response.text and "sk-" not in response.text
    # The org's admin still reads the provider's words in the connection test.
    ok, said = services.provider_test(provider=acme.providers["fake"])
    assert not ok and f"HTTP {status}: Incorrect API key provided" in said
    rows = usage_rows(acme.org)
    assert rows and {r.http_status for r in rows} == {502}


def test_a_clients_bad_requests_do_not_move_traffic_off_a_healthy_deployment(acme, mode):
    acme.fake.behaviours["primary-model"] = Behaviour(
        status=400, fail_times=FAILURES_TO_OPEN + 2, error_message="bad max_tokens"
    )
    client = sdk(acme)
    for _ in range(FAILURES_TO_OPEN + 2):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="ha-chat", messages=HI)
    answer = client.chat.completions.with_raw_response.create(model="ha-chat", messages=HI)
    assert answer.headers["x-bonito-provider"] == "fake"  # still the primary


# JSON that is not an object: what a broken proxy or a misconfigured server may answer.
NOT_OBJECTS = [b"[1, 2]", b'"hello"', b"null", b"5"]


@pytest.mark.parametrize("raw", NOT_OBJECTS)
def test_an_answer_that_is_not_a_json_object_is_the_deployment_failing(acme, raw):
    """Every endpoint's answer is an object: anything else fails that deployment (the next
    one answers), or is a 502 with the request's one usage row; never a 500."""
    acme.fake.behaviours["primary-model"] = Behaviour(raw_response=("application/json", raw))
    answer = sdk(acme).chat.completions.with_raw_response.create(model="ha-chat", messages=HI)
    assert answer.headers["x-bonito-provider"] == "fake2"
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(raw_response=("application/json", raw))
    acme.fake.behaviours["text-embedding-3-small"] = acme.fake.behaviours["gpt-4o-mini"]
    calls = [
        ("chat/completions", {"model": "chat-small", "messages": HI}),
        ("completions", {"model": "chat-small", "prompt": "hi"}),
        ("embeddings", {"model": "embed-small", "input": "hi"}),
    ]
    for path, body in calls:
        response = httpx.post(
            f"{acme.base_url}/{path}",
            headers={"Authorization": f"Bearer {acme.raw}"},
            json=body,
            timeout=20,
        )
        assert response.status_code == 502, (path, response.text)
        assert_openai_schema(response.json(), "ErrorResponse")
        assert "not a JSON object" in response.json()["error"]["message"]
    rows = usage_rows(acme.org)
    assert [r.http_status for r in rows] == [200, 502, 502, 502]


@pytest.mark.parametrize("raw", NOT_OBJECTS)
def test_an_anthropic_answer_that_is_not_a_json_object_is_a_502(acme, raw):
    anthropic_deployment(acme, "claude", CLAUDE)
    acme.fake.behaviours[CLAUDE] = Behaviour(raw_response=("application/json", raw))
    response = httpx.post(
        f"{acme.url}/v1/messages",
        headers={"x-api-key": acme.raw, "anthropic-version": "2023-06-01"},
        json={"model": "claude", "max_tokens": 5, "messages": HI},
        timeout=20,
    )
    assert response.status_code == 502, response.text
    assert response.json()["type"] == "error"  # Anthropic's error shape
    (row,) = usage_rows(acme.org)
    assert row.http_status == 502


# Requests LiteLLM cannot turn into an Anthropic call: it raises its catch-all
# APIConnectionError over a KeyError, TypeError or bare Exception, with nothing that failed
# to connect underneath.
UNTRANSLATABLE = [
    ("chat/completions", {"messages": HI, "tools": [{"type": "retrieval"}]}),
    ("chat/completions", {"messages": HI, "thinking": {"type": "enabled", "budget_tokens": "x"}}),
    ("audio/speech", {"input": "hello", "voice": "alloy"}),
    ("rerank", {"query": "q", "documents": ["a", "b"]}),
]


@pytest.mark.parametrize("path, body", UNTRANSLATABLE, ids=lambda v: str(v)[:40])
def test_what_litellm_cannot_translate_is_the_requests_400_not_an_outage(acme, mode, path, body):
    """A 400 that says so, not a retried "could not reach the provider" 502 that cools a
    healthy deployment down for the whole org."""
    anthropic_deployment(acme, "claude", CLAUDE)
    for _ in range(FAILURES_TO_OPEN + 1):
        response = httpx.post(
            f"{acme.base_url}/{path}",
            headers={"Authorization": f"Bearer {acme.raw}"},
            json={"model": "claude", **body},
            timeout=20,
        )
        assert response.status_code == 400, response.text
        assert_openai_schema(response.json(), "ErrorResponse")
        assert response.json()["error"]["code"] == "unsupported_request"
    health = runtime.gateway().health
    assert all(h.consecutive_failures == 0 and not h.open_until for h in health._health.values())
    answer = sdk(acme).chat.completions.create(model="claude", messages=HI)
    assert answer.choices[0].message.content
    rows = usage_rows(acme.org)
    assert [r.http_status for r in rows] == [400] * (FAILURES_TO_OPEN + 1) + [200]


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": 5}},
            "response_format.json_schema",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {}}},
            "response_format.json_schema.name",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "a", "schema": []},
                }
            },
            "response_format.json_schema.schema",
        ),
        ({"web_search_options": 5}, "web_search_options"),
        ({"thinking": "on"}, "thinking"),
    ],
)
def test_malformed_structured_fields_are_refused_before_any_provider_call(acme, fields, param):
    response = httpx.post(
        f"{acme.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {acme.raw}"},
        json={"model": "chat-small", "messages": HI, **fields},
        timeout=20,
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == param
    assert acme.fake.requests == []


def test_a_provider_error_that_echoes_the_credential_never_shows_it(acme, mode, caplog):
    """An upstream (or a proxy before it) that quotes the key Bonito sent it in its error:
    the key is redacted from what the client gets and from the log."""
    secret = "sk-fake-upstream-credential"
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(
        status=400, error_message=f"bad request (Authorization: Bearer {secret})"
    )
    acme.fake.behaviours["primary-model"] = Behaviour(
        status=500, error_message=f"upstream broke for key {secret}"
    )
    acme.fake.behaviours["secondary-model"] = acme.fake.behaviours["primary-model"]
    with caplog.at_level("INFO"):
        for model in ("chat-small", "ha-chat"):
            response = httpx.post(
                f"{acme.base_url}/chat/completions",
                headers={"Authorization": f"Bearer {acme.raw}"},
                json={"model": model, "messages": HI},
                timeout=20,
            )
            assert response.status_code in (400, 502), response.text
            assert secret not in response.text
            if mode == "passthrough":  # (LiteLLM's path never relays a 5xx's words)
                assert "[redacted]" in response.text
    assert secret not in caplog.text


def test_a_provider_error_s_fields_are_openai_s_types(acme):
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(status=400, error_code=["not", "a", "string"])
    response = httpx.post(
        f"{acme.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {acme.raw}"},
        json={"model": "chat-small", "messages": HI},
        timeout=20,
    )
    assert response.status_code == 400
    assert_openai_schema(response.json(), "ErrorResponse")
    assert response.json()["error"]["code"] is None


@pytest.mark.parametrize("raw", [b"{}", b'{"type": "message", "content": [{"type": "text"}]}'])
def test_an_answer_litellm_cannot_read_is_the_deployments_failure(acme, mode, raw):
    """LiteLLM's catch-all over its own KeyError once the provider has answered is a broken
    answer (the deployment's: a 502, health counted), not the request's 400."""
    anthropic_deployment(acme, "claude", CLAUDE)
    acme.fake.behaviours[CLAUDE] = Behaviour(raw_response=("application/json", raw))
    for _ in range(2):
        response = httpx.post(
            f"{acme.base_url}/chat/completions",
            headers={"Authorization": f"Bearer {acme.raw}"},
            json={"model": "claude", "messages": HI},
            timeout=20,
        )
        assert response.status_code == 502, response.text
    health = runtime.gateway().health
    assert max(h.consecutive_failures for h in health._health.values()) >= FAILURES_TO_OPEN


def test_a_403_fails_over_but_cools_nothing_down(acme, mode):
    """Some 403s are about what the request named (a file the key may not read): the next
    deployment answers, and one app's requests never cool the org's deployment down."""
    acme.fake.behaviours["primary-model"] = Behaviour(status=403, error_message="no access")
    for _ in range(FAILURES_TO_OPEN + 1):
        answer = sdk(acme).chat.completions.with_raw_response.create(model="ha-chat", messages=HI)
        assert answer.headers["x-bonito-provider"] == "fake2"
    health = runtime.gateway().health
    assert all(h.consecutive_failures == 0 and not h.open_until for h in health._health.values())


def test_count_tokens_counts_locally_when_the_credentials_are_refused(acme):
    anthropic_deployment(acme, "claude", CLAUDE)
    acme.fake.behaviours[CLAUDE] = Behaviour(status=401, error_message="invalid x-api-key")
    response = httpx.post(
        f"{acme.url}/v1/messages/count_tokens",
        headers={"x-api-key": acme.raw, "anthropic-version": "2023-06-01"},
        json={"model": "claude", "messages": HI},
        timeout=20,
    )
    assert response.status_code == 200, response.text
    assert response.json()["input_tokens"] > 0


def test_logit_bias_is_refused_not_dropped(acme):
    """It bans or forces tokens: an answer without it is not the answer asked for."""
    anthropic_deployment(acme, "claude", CLAUDE)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk(acme).chat.completions.create(model="claude", messages=HI, logit_bias={"50256": -100})
    assert refused.value.body["param"] == "logit_bias"


SECRET = "sk-fake-upstream-credential"
CHUNK = {
    "id": "c",
    "object": "chat.completion.chunk",
    "created": 0,
    "model": "m",
    "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
}


@pytest.mark.parametrize(
    "path, body",
    [
        ("chat/completions", {"messages": HI}),
        ("responses", {"input": "hi"}),  # (its translation's own error event)
    ],
)
def test_a_mid_stream_error_event_quoting_the_credential_is_redacted(acme, path, body):
    events = (
        b"data: " + orjson.dumps(CHUNK) + b"\n\n"
        b'data: {"error": {"message": "quota for Bearer ' + SECRET.encode() + b' exceeded"}}\n\n'
    )
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(
        raw_response=("text/event-stream", events), raw_cuts=[len(events) // 2]
    )
    with httpx.stream(
        "POST",
        f"{acme.base_url}/{path}",
        headers={"Authorization": f"Bearer {acme.raw}"},
        json={"model": "chat-small", "stream": True, **body},
        timeout=20,
    ) as response:
        text = response.read().decode()
    assert "[redacted]" in text and SECRET not in text


def test_a_service_account_json_credential_is_redacted_part_by_part():
    from gateway.dataplane.snapshot import DeploymentInfo
    from gateway.dataplane.upstream import redact

    account = orjson.dumps(
        {"type": "service_account", "private_key_id": "abcdef0123456789", "client_email": "x"}
    ).decode()
    dep = DeploymentInfo(1, "m", "p", "vertex", "x", credentials={"service_account": account})
    assert redact("bad key id abcdef0123456789", dep) == "bad key id [redacted]"
    assert redact(b'{"message": "' + account.encode().replace(b'"', b'\\"') + b'"}', dep) == (
        b'{"message": "[redacted]"}'
    )


def test_a_credential_quoted_in_another_letter_case_is_redacted():
    """An upstream (or a proxy before it) that quotes the key upper-cased, or in a JSON
    event's text, still shows no form of it: in text, in JSON, in an event's bytes."""
    from gateway.dataplane.snapshot import DeploymentInfo
    from gateway.dataplane.upstream import redact

    key = "sk-Secret-Fake-Upstream-Key-123456"
    dep = DeploymentInfo(1, "m", "p", "openai", "x", credentials={"api_key": key})
    assert redact(f"bad key {key.upper()} and {key.lower()}", dep) == (
        "bad key [redacted] and [redacted]"
    )
    assert redact({"error": {"message": f"key={key.upper()}"}}, dep) == {
        "error": {"message": "key=[redacted]"}
    }
    event = b'data: {"error": {"message": "' + key.upper().encode() + b'"}}\n\n'
    assert key.upper().encode() not in redact(event, dep)
    assert b"[redacted]" in redact(event, dep)


def test_a_long_error_is_redacted_before_it_is_cut(acme):
    """A key across the cut (200 characters) would leave its first part in the message."""
    message = "x" * 185 + " key " + SECRET + " refused"
    events = b'data: {"error": {"message": "' + message.encode() + b'"}}\n\n'
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(raw_response=("text/event-stream", events))
    response = httpx.post(
        f"{acme.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {acme.raw}"},
        json={"model": "chat-small", "messages": HI, "stream": True},
        timeout=20,
    )
    assert response.status_code == 502
    assert "sk-fake" not in response.text and SECRET[:8] not in response.text


def test_a_service_account_s_names_stay_readable_in_errors():
    from gateway.dataplane.snapshot import DeploymentInfo
    from gateway.dataplane.upstream import redact

    account = orjson.dumps(
        {
            "type": "service_account",
            "project_id": "acme-prod-123",
            "private_key_id": "abcdef0123456789",
            "client_email": "bonito@acme-prod-123.iam.gserviceaccount.com",
        }
    ).decode()
    dep = DeploymentInfo(1, "m", "p", "vertex", "x", credentials={"service_account": account})
    said = "project acme-prod-123 denied bonito@acme-prod-123.iam.gserviceaccount.com"
    assert redact(said, dep) == said


def test_streamed_web_search_calls_are_billed_if_the_stream_is_cut():
    """Anthropic's web search tool: each server_tool_use block is a search the provider
    ran; a stream cut before its final usage still bills them."""
    from gateway.dataplane.anthropic_api import StreamSeen, usage_counts

    seen = StreamSeen()
    seen.add(
        {"type": "message_start", "message": {"usage": {"input_tokens": 20, "output_tokens": 1}}}
    )
    for i in range(2):
        block = {
            "type": "server_tool_use",
            "id": f"srvtoolu_{i}",
            "name": "web_search",
            "input": {},
        }
        seen.add({"type": "content_block_start", "index": i, "content_block": block})
    seen.add(
        {"type": "content_block_start", "index": 2, "content_block": {"type": "text", "text": ""}}
    )
    assert usage_counts(seen.reported()).searches == 2
    # The final usage, when it comes, says the same or more: never counted twice.
    seen.add(
        {
            "type": "message_delta",
            "usage": {"output_tokens": 9, "server_tool_use": {"web_search_requests": 2}},
        }
    )
    assert usage_counts(seen.reported()).searches == 2
