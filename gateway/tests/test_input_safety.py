"""Bad input gets a clear OpenAI-shaped error, nothing reaches a provider, nothing is lost."""

import httpx
import pytest

from gateway.tests.conftest import usage_rows


def post(acme, body: bytes | str, path="/v1/chat/completions", **headers):
    headers = {"Authorization": f"Bearer {acme.raw}", "Content-Type": "application/json", **headers}
    return httpx.post(acme.url + path, content=body, headers=headers, timeout=30)


@pytest.mark.parametrize(
    "field",
    [
        "api_base",
        "base_url",
        "api_key",
        "extra_headers",
        "custom_llm_provider",
        "litellm_params",
        "aws_secret_access_key",
        "vertex_credentials",
        "input_cost_per_token",
        "api_version",
    ],
)
def test_a_smuggled_provider_field_is_refused(acme, field):
    body = f'{{"model": "chat-small", "messages": [{{"role": "user", "content": "x"}}], "{field}": "http://evil"}}'
    response = post(acme, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == field and error["code"] == "forbidden_parameter"
    assert acme.fake.requests == []  # nothing reached a provider
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status) == ("rejected", 400)


@pytest.mark.parametrize(
    "body,message",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"", "body is empty"),
        (
            b'{"messages": [{"role": "user", "content": "x"}]}',
            "Missing required parameter: 'model'",
        ),
        (b'{"model": "chat-small"}', "Missing required parameter: 'messages'"),
        (b'{"model": "chat-small", "messages": "hi"}', "expected an array of messages"),
        (
            b'{"model": "chat-small", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}',
            "max_tokens",
        ),
    ],
)
def test_malformed_bodies_get_400_with_a_clear_message(acme, body, message):
    response = post(acme, body)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert acme.fake.requests == []


def test_an_oversized_body_is_413_before_it_is_read(acme, settings):
    limit = settings.GATEWAY_MAX_BODY_BYTES
    response = post(acme, b"x" * (limit + 1))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status) == ("rejected", 413)


def test_an_oversized_chunked_body_is_413(acme, settings):
    limit = settings.GATEWAY_MAX_BODY_BYTES

    def chunks():
        for _ in range(limit // (1 << 20) + 2):
            yield b"x" * (1 << 20)

    response = httpx.post(
        acme.url + "/v1/chat/completions",
        content=chunks(),
        timeout=30,
        headers={"Authorization": f"Bearer {acme.raw}"},
    )
    assert response.status_code == 413
    assert acme.fake.requests == []


def test_a_body_just_under_the_cap_is_accepted(acme):
    filler = "y" * (1 << 20)
    body = f'{{"model": "chat-small", "messages": [{{"role": "user", "content": "{filler}"}}]}}'
    assert post(acme, body).status_code == 200


def test_missing_key_is_401(acme):
    response = httpx.post(
        acme.url + "/v1/chat/completions", json={"model": "chat-small"}, timeout=10
    )
    assert response.status_code == 401
    assert "didn't provide an API key" in response.json()["error"]["message"]


def test_a_key_with_a_bad_checksum_is_refused_without_lookup(acme):
    tampered = acme.raw[:-1] + ("A" if acme.raw[-1] != "A" else "B")
    response = post(
        acme,
        b'{"model": "chat-small", "messages": [{"role": "user", "content": "x"}]}',
        Authorization=f"Bearer {tampered}",
    )
    assert response.status_code == 401


def test_wrong_method_and_unknown_path_are_openai_shaped(acme):
    response = httpx.get(
        acme.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {acme.raw}"}
    )
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
    response = httpx.post(
        acme.url + "/v1/images/generations", headers={"Authorization": f"Bearer {acme.raw}"}
    )
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_url"


def test_no_key_or_credential_lands_in_logs_or_errors(acme, caplog):
    from gateway.tests.fake_upstream import Behaviour

    acme.fake.behaviours["primary-model"] = Behaviour(status=500)
    acme.fake.behaviours["secondary-model"] = Behaviour(status=500)
    with caplog.at_level("DEBUG"):
        response = post(
            acme,
            b'{"model": "ha-chat", "messages": [{"role": "user", "content": "secret prompt"}]}',
        )
    assert response.status_code == 502
    text = caplog.text + response.text
    assert acme.raw not in text
    assert "sk-fake-upstream-credential" not in text
    assert "secret prompt" not in text


def test_a_foreign_host_header_is_refused_on_v1(acme):
    response = httpx.post(
        acme.base_url + "/chat/completions",
        headers={"Host": "evil.example.com", "Authorization": f"Bearer {acme.raw}"},
        json={"model": "chat-small"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_host"
