"""An integer field sent past its range is told so, with the bound, however large: orjson
reads an integer past 64 bits as a float (it said "expected an integer, but got a
decimal") and one of more than about 308 digits not at all (it said the body was not
valid JSON). Every integer field of every /v1 endpoint that gateway.dataplane.validation
checks (docs/gateway.md *Request checks*)."""

import httpx
import orjson
import pytest

from gateway.dataplane import validation
from gateway.dataplane.errors import GatewayError

BASE = {
    "chat": {"messages": [{"role": "user", "content": "hi"}]},
    "completions": {"prompt": "hi"},
    "embeddings": {"input": "hi"},
    "responses": {"input": "hi"},
    "images": {"prompt": "a cat"},
    "speech": {"input": "hi", "voice": "alloy"},
    "moderations": {"input": "hi"},
    "rerank": {"query": "q", "documents": ["a"]},
}


def _integer_fields():
    """(endpoint, field, lo, hi) of every field checked as an integer in a range."""
    out = []
    for endpoint in BASE:
        table = validation.MEDIA_CHECKS.get(
            endpoint,
            validation.RESPONSES_CHECKS if endpoint == "responses" else validation.CHECKS,
        )
        for name, check in table.items():
            if check.__qualname__ == "_integer.<locals>.check":
                cells = dict(
                    zip(
                        check.__code__.co_freevars,
                        (c.cell_contents for c in check.__closure__),
                        strict=True,
                    )
                )
                out.append((endpoint, name, cells["lo"], cells["hi"]))
    out.append(("completions", "logprobs", 0, 5))  # a count on the legacy endpoint
    return out


FIELDS = _integer_fields()


def test_the_integer_fields_are_the_ones_the_outside_check_named():
    names = {(e, f) for e, f, _lo, _hi in FIELDS}
    for field in ("max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs"):
        assert ("chat", field) in names
    assert ("embeddings", "dimensions") in names
    assert ("responses", "max_output_tokens") in names and ("rerank", "top_n") in names


def _raw(endpoint, field, literal: str) -> bytes:
    body = orjson.dumps({"model": "m", **BASE[endpoint]})
    return body[:-1] + f',"{field}":{literal}}}'.encode()


def _said(endpoint, raw):
    with pytest.raises(GatewayError) as info:
        validation.parse_body(raw, endpoint)
    return info.value


@pytest.mark.parametrize(("endpoint", "field", "lo", "hi"), FIELDS)
@pytest.mark.parametrize("size", [2**64, 10**30, 10**400])
def test_an_integer_too_large_for_a_machine_word_is_above_the_maximum(
    endpoint, field, lo, hi, size
):
    error = _said(endpoint, _raw(endpoint, field, str(size)))
    assert error.status == 400 and error.code == "integer_above_max_value", error.message
    assert error.param == field
    assert f"Invalid '{field}': integer above maximum value. Expected a value <= {hi}" in (
        error.message
    )
    assert "decimal" not in error.message and "JSON" not in error.message
    # and below the minimum the same way
    error = _said(endpoint, _raw(endpoint, field, str(-size)))
    assert error.code == "integer_below_min_value" and f">= {lo}" in error.message


@pytest.mark.parametrize(
    "literal", ["1.8446744073709552e19", "2.0", "1e20", "18446744073709551616.0"]
)
def test_a_decimal_is_still_a_decimal(literal):
    error = _said("chat", _raw("chat", "max_tokens", literal))
    assert error.code == "invalid_type"
    assert "expected an integer, but got a decimal instead" in error.message


def test_a_huge_token_id_is_not_a_token_id_and_a_huge_decimal_is_not_json():
    error = _said(
        "completions", orjson.dumps({"model": "m"})[:-1] + b',"prompt":[1,2,18446744073709551616]}'
    )
    assert (error.code, error.param) == ("invalid_value", "prompt[2]")
    assert "18446744073709551616 is not a token id" in error.message
    error = _said("chat", _raw("chat", "temperature", "1e400"))  # a decimal: as before
    assert error.code == "invalid_json"
    assert error.message.startswith("The request body holds a number too large to carry")
    # NaN is not JSON, whatever else is in the body
    error = _said("chat", _raw("chat", "max_tokens", "18446744073709551616")[:-1] + b',"x":NaN}')
    assert error.code == "invalid_json"


def test_through_v1_the_client_reads_the_maximum(acme, gw):
    raw = (
        b'{"model": "chat-small", "messages": [{"role": "user", "content": "hi"}], '
        b'"max_tokens": 18446744073709551616}'
    )
    response = httpx.post(
        acme.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {acme.raw}", "Content-Type": "application/json"},
        content=raw,
        timeout=10,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("max_tokens", "integer_above_max_value")
    assert error["message"] == (
        "Invalid 'max_tokens': integer above maximum value. Expected a value <= 2147483647, "
        "but got 18446744073709551616 instead."
    )


MESSAGES = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("endpoint", ["messages", "count_tokens"])
@pytest.mark.parametrize("size", [2**64, 10**30, 10**400], ids=["2^64", "10^30", "10^400"])
def test_messages_says_an_integer_too_large_for_a_machine_word_is_out_of_range(endpoint, size):
    """/v1/messages (anthropic_api.parse_request) reads its body with orjson too."""
    from gateway.dataplane import anthropic_api

    for literal, code in ((str(size), "integer_above_max_value"), (f"-{size}", "")):
        raw = orjson.dumps({k: v for k, v in MESSAGES.items() if k != "max_tokens"})
        raw = raw[:-1] + f',"max_tokens":{literal}}}'.encode()
        with pytest.raises(GatewayError) as info:
            anthropic_api.parse_request(raw, endpoint)
        error = info.value
        assert error.param == "max_tokens", error.message
        assert f"max_tokens: must be between 1 and {2**31 - 1}" in error.message
        assert "not a number" not in error.message and "JSON" not in error.message
        assert len(error.message) < 200  # the value quoted short, not 400 digits
        assert error.code == (code or "integer_below_min_value")
    # a decimal stays a decimal; NaN stays not JSON
    with pytest.raises(GatewayError) as info:
        anthropic_api.parse_request(orjson.dumps({**MESSAGES, "max_tokens": 2.5}), endpoint)
    assert info.value.code == "invalid_type"
    raw = orjson.dumps(MESSAGES)[:-1] + b',"x":NaN,"top_k":18446744073709551616}'
    with pytest.raises(GatewayError) as info:
        anthropic_api.parse_request(raw, endpoint)
    assert info.value.code == "invalid_json"


@pytest.mark.parametrize("endpoint", ["chat", "messages"])
def test_a_huge_integer_where_no_field_is_checked_is_too_large_not_invalid_json(endpoint):
    """A tool's JSON schema may hold any JSON number; one orjson cannot read is valid JSON
    the gateway cannot carry, and the 400 says that, where it is."""
    from gateway.dataplane import anthropic_api

    schema = {"type": "integer", "maximum": 1}
    if endpoint == "chat":
        body = {**BASE["chat"], "model": "m"}
        body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    else:
        body = {**MESSAGES, "tools": [{"name": "f", "input_schema": schema}]}
    raw = orjson.dumps(body).replace(b'"maximum":1', b'"maximum":' + b"9" * 400)
    with pytest.raises(GatewayError) as info:
        if endpoint == "chat":
            validation.parse_body(raw, "chat")
        else:
            anthropic_api.parse_request(raw, "messages")
    assert info.value.code == "invalid_json"
    assert info.value.message.startswith("The request body holds a number too large to carry")
    assert "column" in info.value.message and "not valid JSON" not in info.value.message


@pytest.mark.parametrize(
    ("thinking", "said"),
    [
        ('"on"', "thinking: Input should be an object"),
        ('{"budget_tokens": 2048}', "thinking.type: Field required"),
        (
            '{"type": "enabled", "budget_tokens": "x"}',
            "thinking.budget_tokens: Input should be an integer",
        ),
        ('{"type": "enabled", "budget_tokens": 0}', "thinking.budget_tokens: must be between 1"),
        (
            '{"type": "enabled", "budget_tokens": 18446744073709551616}',
            "thinking.budget_tokens: must be between 1",
        ),
        (
            '{"type": "enabled", "budget_tokens": ' + "9" * 400 + "}",
            "thinking.budget_tokens: must be between 1",
        ),
    ],
)
def test_messages_checks_thinking_s_shape(thinking, said):
    from gateway.dataplane import anthropic_api

    raw = orjson.dumps(MESSAGES)[:-1] + b',"thinking":' + thinking.encode() + b"}"
    with pytest.raises(GatewayError) as info:
        anthropic_api.parse_request(raw, "messages")
    assert info.value.message.startswith(said), info.value.message
    assert len(info.value.message) < 200


def test_messages_takes_a_well_formed_thinking():
    from gateway.dataplane import anthropic_api

    for thinking in ({"type": "enabled", "budget_tokens": 2048}, {"type": "disabled"}):
        body = anthropic_api.parse_request(
            orjson.dumps({**MESSAGES, "thinking": thinking}), "messages"
        )
        assert body["thinking"] == thinking
