"""The official openai SDK against a live gateway, through both provider paths."""

import openai
import pytest

from gateway.tests.conftest import usage_rows
from gateway.tests.fake_upstream import Behaviour


def client(acme, key=None):
    return openai.OpenAI(base_url=acme.base_url, api_key=key or acme.raw, max_retries=0, timeout=20)


def test_chat(acme, mode):
    response = client(acme).chat.completions.create(
        model="chat-small", messages=[{"role": "user", "content": "hi"}]
    )
    assert response.choices[0].message.content == "word0 word1 word2 word3 word4"
    assert response.usage.prompt_tokens == 11 and response.usage.completion_tokens == 5
    sent = acme.fake.requests[-1]
    assert sent["body"]["model"] == "gpt-4o-mini"  # the upstream id, not the public name
    assert sent["headers"]["Authorization"] == "Bearer sk-fake-upstream-credential"
    [row] = usage_rows(acme.org)
    assert (row.status, row.model_requested, row.model_used, row.provider) == (
        "success",
        "chat-small",
        "chat-small",
        "fake",
    )
    assert (row.input_tokens, row.output_tokens) == (11, 5)
    assert row.key_id == acme.key.id and row.source == "shared_gateway"


def test_chat_stream(acme, mode):
    stream = client(acme).chat.completions.create(
        model="chat-small", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "word0 word1 word2 word3 word4"
    assert all(c.usage is None for c in chunks)  # not asked for, so not sent
    [row] = usage_rows(acme.org)
    assert (row.status, row.input_tokens, row.output_tokens) == ("success", 11, 5)
    assert row.ttft_ms is not None


def test_chat_stream_with_usage(acme, mode):
    stream = client(acme).chat.completions.create(
        model="chat-small",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage.completion_tokens == 5 and chunks[-1].choices == []


def test_completions(acme, mode):
    response = client(acme).completions.create(model="chat-small", prompt="Say hi")
    assert response.choices[0].text == "word0 word1 word2 word3 word4"
    assert usage_rows(acme.org)[0].endpoint == "completions"


def test_embeddings(acme, mode):
    response = client(acme).embeddings.create(model="embed-small", input=["a", "b"])
    assert len(response.data) == 2 and response.data[0].embedding == [0.1, 0.2, 0.3]
    [row] = usage_rows(acme.org)
    assert (row.endpoint, row.input_tokens) == ("embeddings", 6)


def test_models_lists_only_what_the_key_may_use(acme):
    from gateway import services
    from gateway.tests.conftest import ACTOR, refresh_snapshot

    assert sorted(m.id for m in client(acme).models.list()) == [
        "chat-small",
        "embed-small",
        "ha-chat",
    ]
    _key, narrow = services.api_key_create(
        actor=ACTOR, org=acme.org, name="narrow", allowed_models=["embed-small"]
    )
    refresh_snapshot()
    assert [m.id for m in client(acme, narrow).models.list()] == ["embed-small"]
    assert client(acme, narrow).models.retrieve("embed-small").id == "embed-small"
    with pytest.raises(openai.NotFoundError):
        client(acme, narrow).models.retrieve("chat-small")


def test_tools_json_mode_and_multimodal_pass_through(acme, mode):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    response = client(acme).chat.completions.create(
        model="chat-small",
        tools=tools,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "weather?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                ],
            }
        ],
        response_format={"type": "json_object"},
    )
    assert response.choices[0].message.tool_calls[0].function.name == "get_weather"
    sent = acme.fake.requests[-1]["body"]
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png")


def test_bad_key_is_401(acme):
    with pytest.raises(openai.AuthenticationError) as info:
        client(acme, "bn-" + "x" * 38).chat.completions.create(
            model="chat-small", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.body["code"] == "invalid_api_key"
    assert usage_rows() == []  # no valid key: nothing to attribute


def test_revoked_key_is_401(acme):
    from gateway import services
    from gateway.tests.conftest import ACTOR, refresh_snapshot

    services.api_key_revoke(actor=ACTOR, key=acme.key)
    refresh_snapshot()
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        client(acme).chat.completions.create(
            model="chat-small", messages=[{"role": "user", "content": "x"}]
        )


def test_expired_key_is_401(acme):
    from datetime import timedelta

    from django.utils import timezone

    from gateway.models import ApiKey
    from gateway.tests.conftest import refresh_snapshot

    ApiKey.objects.filter(pk=acme.key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    refresh_snapshot()
    with pytest.raises(openai.AuthenticationError, match="expired"):
        client(acme).chat.completions.create(
            model="chat-small", messages=[{"role": "user", "content": "x"}]
        )


def test_model_not_permitted_is_403(acme):
    from gateway.tests.conftest import ACTOR, refresh_snapshot
    from governance import services as gov

    gov.policy_set(actor=ACTOR, org=acme.org, allowed_models=["chat-small", "embed-small"])
    refresh_snapshot()
    with pytest.raises(
        openai.PermissionDeniedError, match="not allowed to use the model `ha-chat`"
    ):
        client(acme).chat.completions.create(
            model="ha-chat", messages=[{"role": "user", "content": "x"}]
        )
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status, row.error_type) == ("rejected", 403, "model_not_permitted")
    assert acme.fake.requests == []


def test_unknown_model_is_404(acme):
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client(acme).chat.completions.create(
            model="gpt-5-ultra", messages=[{"role": "user", "content": "x"}]
        )


def test_model_names_match_exactly(acme):
    for trick in ("Chat-Small", "chat-small ", "fake/chat-small"):
        with pytest.raises(openai.NotFoundError):
            client(acme).chat.completions.create(
                model=trick, messages=[{"role": "user", "content": "x"}]
            )


def test_provider_4xx_is_passed_through_not_retried(acme, mode):
    # (A context-length 400 is the exception: another deployment's window may be larger,
    # so it is tried: test_context_window.py.)
    acme.fake.behaviours["primary-model"] = Behaviour(
        status=400, error_message="Invalid value for 'temperature'", error_code="invalid_value"
    )
    with pytest.raises(openai.BadRequestError, match="Invalid value for 'temperature'"):
        client(acme).chat.completions.create(
            model="ha-chat", messages=[{"role": "user", "content": "x"}]
        )
    assert len(acme.fake.requests) == 1  # the secondary was not tried
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status) == ("rejected", 400)


def test_failover_to_the_secondary(acme, mode):
    acme.fake.behaviours["primary-model"] = Behaviour(status=500)
    response = client(acme).chat.completions.with_raw_response.create(
        model="ha-chat", messages=[{"role": "user", "content": "x"}]
    )
    assert response.headers["x-bonito-provider"] == "fake2"
    assert response.headers["x-bonito-model-used"] == "ha-chat"
    assert [r["body"]["model"] for r in acme.fake.requests] == ["primary-model", "secondary-model"]
    [row] = usage_rows(acme.org)
    assert (row.status, row.model_used, row.deployment) == (
        "success",
        "ha-chat",
        "fake2/secondary-model",
    )


def test_every_deployment_down_is_502(acme, mode):
    acme.fake.behaviours["primary-model"] = Behaviour(status=500)
    acme.fake.behaviours["secondary-model"] = Behaviour(status=503)
    with pytest.raises(openai.InternalServerError) as info:
        client(acme).chat.completions.create(
            model="ha-chat", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 502
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status, row.error_type) == ("error", 502, "upstream_error")


def test_upstream_timeout_is_504(acme, mode):
    from gateway.models import GatewayConfig
    from gateway.tests.conftest import refresh_snapshot

    GatewayConfig.objects.update_or_create(org=acme.org, defaults={"request_timeout_s": 1})
    refresh_snapshot()
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(hang=True)
    with pytest.raises(openai.InternalServerError) as info:
        client(acme).chat.completions.create(
            model="chat-small", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 504


def test_rate_limit_is_429_with_retry_after(acme):
    from gateway.models import ApiKey
    from gateway.tests.conftest import refresh_snapshot

    ApiKey.objects.filter(pk=acme.key.pk).update(rpm_limit=2)
    refresh_snapshot()
    c = client(acme)
    for _ in range(2):
        c.chat.completions.create(model="chat-small", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.RateLimitError) as info:
        c.chat.completions.create(model="chat-small", messages=[{"role": "user", "content": "x"}])
    assert int(info.value.response.headers["retry-after"]) >= 1
    assert info.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert info.value.response.headers["x-ratelimit-limit-requests"] == "2"
    statuses = [r.status for r in usage_rows(acme.org)]
    assert statuses == ["success", "success", "rejected"]


def test_spend_cap_is_429_and_says_why(acme):
    from gateway.tests.conftest import ACTOR, refresh_snapshot
    from governance import services as gov

    gov.policy_set(actor=ACTOR, org=acme.org, monthly_spend_cap_usd=0)
    refresh_snapshot()
    with pytest.raises(openai.RateLimitError, match="monthly spend cap") as info:
        client(acme).chat.completions.create(
            model="chat-small", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.body["code"] == "spend_cap_exceeded"
    assert acme.fake.requests == []


def test_response_headers(acme):
    response = client(acme).chat.completions.with_raw_response.create(
        model="chat-small",
        messages=[{"role": "user", "content": "x"}],
        extra_headers={"X-Request-ID": "trace-42"},
    )
    h = response.headers
    assert h["x-request-id"] == "trace-42"
    assert float(h["x-bonito-overhead-ms"]) >= 0
    assert h["x-bonito-model-used"] == "chat-small" and h["x-bonito-provider"] == "fake"
    assert h["x-ratelimit-limit-requests"] == "300"  # the Pro tier's default
    assert usage_rows(acme.org)[0].request_id == "trace-42"
    generated = (
        client(acme)
        .chat.completions.with_raw_response.create(
            model="chat-small", messages=[{"role": "user", "content": "x"}]
        )
        .headers["x-request-id"]
    )
    assert generated.startswith("req_")


def test_charlies_key_cannot_reach_alices_models(acme, charlie, org_b):
    from gateway import services
    from gateway.tests.conftest import ACTOR, refresh_snapshot

    _key, charlie_raw = services.api_key_create(actor=ACTOR, org=org_b, name="charlie's")
    refresh_snapshot()
    with pytest.raises(openai.NotFoundError):
        client(acme, charlie_raw).chat.completions.create(
            model="chat-small", messages=[{"role": "user", "content": "x"}]
        )
    assert [m.id for m in client(acme, charlie_raw).models.list()] == []
    assert acme.fake.requests == []
    assert usage_rows(acme.org) == []  # nothing lands on Alice's org
