"""Bad input gets a clear OpenAI-shaped error, nothing reaches a provider, nothing is lost."""

import httpx
import orjson
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
        # LiteLLM's own call parameters (an outside check: they passed to LiteLLM)
        "openai_identity_token_file",
        "anthropic_keycloak_token_url",
        "ssl_verify",
        "use_litellm_proxy",
        "langfuse_host",
        "s3_endpoint_url",
        "output_cost_per_token_batches",
        "model_info",
        "no-log",
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
        acme.url + "/v1/images/edits", headers={"Authorization": f"Bearer {acme.raw}"}
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


# ------------------------------------------------------------------ field validation
CHAT = {"model": "chat-small", "messages": [{"role": "user", "content": "x"}]}


def test_a_negative_token_count_is_refused_and_cannot_unlock_tpm(acme):
    from gateway.models import ApiKey
    from gateway.tests.conftest import refresh_snapshot

    ApiKey.objects.filter(pk=acme.key.pk).update(tpm_limit=1000)
    refresh_snapshot()
    response = post(acme, orjson.dumps({**CHAT, "max_completion_tokens": -1_000_000_000}))
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("max_completion_tokens", "integer_below_min_value")
    assert acme.fake.requests == []
    # The tokens bucket was never credited: a valid request still sees the real limit.
    ok = post(acme, orjson.dumps({**CHAT, "max_tokens": 5}))
    assert ok.status_code == 200
    assert int(ok.headers["x-ratelimit-remaining-tokens"]) < 1000
    rows = usage_rows(acme.org)
    assert [(r.status, r.http_status) for r in rows] == [("rejected", 400), ("success", 200)]


@pytest.mark.parametrize(
    "extra,param,code",
    [
        ({"max_completion_tokens": "abc"}, "max_completion_tokens", "invalid_type"),
        ({"stream_options": "x"}, "stream_options", "invalid_type"),
        (
            {"stream": True, "stream_options": {"include_usage": "yes"}},
            "stream_options.include_usage",
            "invalid_type",
        ),
        ({"max_tokens": True}, "max_tokens", "invalid_type"),
        ({"max_tokens": 1.5}, "max_tokens", "invalid_type"),
        ({"max_tokens": 0}, "max_tokens", "integer_below_min_value"),
        ({"max_tokens": 18446744073709551615}, "max_tokens", "integer_above_max_value"),
        ({"n": 0}, "n", "integer_below_min_value"),
        ({"n": "2"}, "n", "invalid_type"),
        ({"temperature": 2.5}, "temperature", "decimal_above_max_value"),
        ({"temperature": "hot"}, "temperature", "invalid_type"),
        ({"top_p": -0.1}, "top_p", "decimal_below_min_value"),
        ({"presence_penalty": False}, "presence_penalty", "invalid_type"),
        ({"frequency_penalty": 3}, "frequency_penalty", "decimal_above_max_value"),
        ({"stream": "yes"}, "stream", "invalid_type"),
        ({"stream": 1}, "stream", "invalid_type"),
        ({"tools": {"type": "function"}}, "tools", "invalid_type"),
        (
            {"tools": [{"type": "function", "function": {}}]},
            "tools[0].function.name",
            "missing_required_parameter",
        ),
        ({"tools": ["search"]}, "tools[0]", "invalid_type"),
        ({"tool_choice": 3}, "tool_choice", "invalid_type"),
        ({"response_format": "json"}, "response_format", "invalid_type"),
        ({"response_format": {"type": 1}}, "response_format.type", "invalid_type"),
        ({"user": 42}, "user", "invalid_type"),
        ({"seed": 2**63}, "seed", "integer_above_max_value"),
        ({"stop": 7}, "stop", "invalid_type"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "array_above_max_length"),
        ({"logprobs": 1}, "logprobs", "invalid_type"),
        ({"top_logprobs": 21}, "top_logprobs", "integer_above_max_value"),
        ({"messages": []}, "messages", "empty_array"),
        ({"messages": ["hi"]}, "messages[0]", "invalid_type"),
        ({"messages": [{"content": "hi"}]}, "messages[0].role", "missing_required_parameter"),
        ({"messages": [{"role": 1, "content": "hi"}]}, "messages[0].role", "invalid_type"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_type"),
        (
            {"messages": [{"role": "user", "content": [{"text": "x"}]}]},
            "messages[0].content[0].type",
            "missing_required_parameter",
        ),
        ({"model": 5}, "model", "invalid_type"),
        ({"model": "chat-small\u0000"}, "model", "invalid_value"),
    ],
)
def test_a_field_of_the_wrong_type_or_range_is_a_400_naming_it(acme, extra, param, code):
    response = post(acme, orjson.dumps({**CHAT, **extra}))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert param.split("[")[0].split(".")[0] in error["message"]
    assert acme.fake.requests == []
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status) == ("rejected", 400)


@pytest.mark.parametrize(
    "path,body,param,code",
    [
        ("/v1/embeddings", {"model": "embed-small", "input": ""}, "input", "empty_string"),
        ("/v1/embeddings", {"model": "embed-small", "input": [1, "a"]}, "input[1]", "invalid_type"),
        ("/v1/embeddings", {"model": "embed-small", "input": [[1], 2]}, "input[1]", "invalid_type"),
        ("/v1/embeddings", {"model": "embed-small", "input": [-1]}, "input[0]", "invalid_value"),
        ("/v1/embeddings", {"model": "embed-small", "input": {"a": 1}}, "input", "invalid_type"),
        (
            "/v1/embeddings",
            {"model": "embed-small", "input": "x", "encoding_format": "hex"},
            "encoding_format",
            "invalid_value",
        ),
        (
            "/v1/embeddings",
            {"model": "embed-small", "input": "x", "dimensions": 0},
            "dimensions",
            "integer_below_min_value",
        ),
        ("/v1/completions", {"model": "chat-small", "prompt": [True]}, "prompt[0]", "invalid_type"),
        (
            "/v1/completions",
            {"model": "chat-small", "prompt": "x", "logprobs": 6},
            "logprobs",
            "integer_above_max_value",
        ),
        (
            "/v1/completions",
            {"model": "chat-small", "prompt": "x", "echo": "no"},
            "echo",
            "invalid_type",
        ),
    ],
)
def test_embeddings_and_completions_inputs_are_checked(acme, path, body, param, code):
    response = post(acme, orjson.dumps(body), path=path)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code)
    assert acme.fake.requests == []


def test_every_valid_field_passes_through(acme):
    body = {
        **CHAT,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "weather?"}], "name": "ann"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        "max_tokens": 50,
        "max_completion_tokens": None,
        "n": 1,
        "temperature": 0,
        "top_p": 0.5,
        "presence_penalty": -2,
        "frequency_penalty": 1.5,
        "stream": False,
        "tools": [
            {"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}
        ],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "user": "u-1",
        "seed": -(2**63),
        "stop": ["\n"],
        "logprobs": True,
        "top_logprobs": 2,
        "logit_bias": {"50256": -100},
        "vendor_specific_knob": {"anything": [1, 2, 3]},  # unknown fields pass through
        "ünïcødé": "ok",
    }
    response = post(acme, orjson.dumps(body))
    assert response.status_code == 200, response.text
    [sent] = acme.fake.requests
    assert sent["body"]["vendor_specific_knob"] == {"anything": [1, 2, 3]}
    assert sent["body"]["ünïcødé"] == "ok" and sent["body"]["seed"] == -(2**63)


def test_deep_nesting_and_huge_numbers_are_a_400_not_a_500(acme):
    # 300 levels: orjson reads 1024 but writes only 254, so this could not be forwarded.
    deep = b"[" * 300 + b"1" + b"]" * 300
    response = post(acme, orjson.dumps(CHAT)[:-1] + b', "vendor_knob": ' + deep + b"}")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "vendor_knob"
    assert acme.fake.requests == []
    too_big = orjson.dumps(CHAT)[:-1] + b', "max_tokens": 18446744073709551616}'
    response = post(acme, too_big)  # past 64 bits orjson reads a float: read again, told so
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "integer_above_max_value"
    for raw, says in (
        (b'{"model": "chat-small", "max_tokens": 1e400}', "holds a number too large to carry"),
        (b'{"model": NaN}', "not valid JSON"),
    ):
        response = post(acme, raw)
        assert response.status_code == 400 and says in response.json()["error"]["message"]
        assert response.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize(
    "path,body",
    [
        ("/completions", {"model": "chat-small", "prompt": "", "messages": [{"role": "system"}]}),
        ("/chat/completions", {**CHAT, "prompt": "x", "input": ["y"]}),
        (
            "/embeddings",
            {"model": "embed-small", "input": "hi", "messages": CHAT["messages"], "prompt": "p"},
        ),
    ],
    ids=["completions+messages", "chat+prompt+input", "embeddings+messages+prompt"],
)
def test_another_endpoints_main_field_is_not_a_5xx(acme, mode, path, body):
    # Found by the property test: LiteLLM took `messages` on /v1/completions as a second
    # value for its own argument and failed, which read as "could not reach the provider".
    response = httpx.post(
        acme.base_url + path,
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {acme.raw}"},
    )
    assert response.status_code == 200, response.text


def test_litellm_s_own_parameters_are_all_refused_and_metadata_is_not():
    """The constant is the installed LiteLLM's list (an upgrade that adds parameters fails
    here until they are refused too), less what FORBIDDEN_FIELDS and the prefixes refuse
    already and ``metadata``, which OpenAI's and Anthropic's APIs take."""
    from litellm.types.utils import all_litellm_params

    from gateway.dataplane import validation
    from gateway.dataplane.litellm_params import LITELLM_OWN_PARAMS

    expected = {
        p
        for p in all_litellm_params
        if p not in validation.FORBIDDEN_FIELDS and not p.startswith(validation.FORBIDDEN_PREFIXES)
    } - {"metadata"}
    assert expected == LITELLM_OWN_PARAMS


def test_metadata_is_still_taken(acme):
    body = orjson.dumps(
        {
            "model": "chat-small",
            "messages": [{"role": "user", "content": "x"}],
            "metadata": {"user_id": "u-1"},
        }
    )
    assert post(acme, body).status_code == 200
