"""/v1 driven with generated bodies (hypothesis): whatever a client sends, Bonito answers
with no 5xx of its own (the fake upstream answers 200 to anything, so a 5xx could only
come from Bonito), an OpenAI-shaped error for every 4xx, and exactly one usage row."""

import json

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from billing.models import UsageRecord
from gateway.tests.conftest import ACTOR, refresh_snapshot
from orgs import services as org_services

# Any JSON value, nested a few levels.
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# A value of any type but null (which means "not set"), never empty: the wrong types.
ANYTHING = st.one_of(
    st.text(min_size=1, max_size=10),
    st.integers(min_value=-(2**64), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.lists(JSON, min_size=1, max_size=3),
    st.dictionaries(st.text(max_size=5), JSON, min_size=1, max_size=3),
)
TEXT = st.text(max_size=30)
TOKENS = st.lists(st.integers(min_value=0, max_value=100_000), min_size=1, max_size=4)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool"])},
    optional={
        "content": TEXT
        | st.none()
        | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}), max_size=2),
        "name": TEXT,
    },
)
TOOL = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": TEXT}, optional={"parameters": st.just({"type": "object"})}
        ),
    }
)
# Per field: values OpenAI accepts, and values at or past the edges of what it accepts.
VALID = {
    "messages": st.lists(MESSAGE, min_size=1, max_size=4),
    "prompt": TEXT | st.lists(TEXT, min_size=1, max_size=3) | TOKENS,
    "input": st.text(min_size=1, max_size=30) | st.lists(TEXT, min_size=1, max_size=3) | TOKENS,
    "max_tokens": st.integers(min_value=1, max_value=4096),
    "max_completion_tokens": st.integers(min_value=1, max_value=4096),
    "n": st.integers(min_value=1, max_value=4),
    "temperature": st.floats(min_value=0, max_value=2),
    "top_p": st.floats(min_value=0, max_value=1),
    "presence_penalty": st.floats(min_value=-2, max_value=2),
    "frequency_penalty": st.floats(min_value=-2, max_value=2),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}),
    "tools": st.lists(TOOL, max_size=2),
    "tool_choice": st.sampled_from(["auto", "none", "required"]),
    "response_format": st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object"])}),
    "user": TEXT,
    "seed": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "stop": TEXT | st.lists(TEXT, max_size=4),
    "top_logprobs": st.integers(min_value=0, max_value=20),
    "dimensions": st.integers(min_value=1, max_value=4096),
    "encoding_format": st.sampled_from(["float", "base64"]),
    "logit_bias": st.dictionaries(
        st.integers(0, 100_000).map(str), st.integers(min_value=-100, max_value=100), max_size=2
    ),
}
EDGES = {
    "messages": st.lists(MESSAGE | JSON, max_size=3)
    | st.lists(st.fixed_dictionaries({"role": JSON, "content": JSON}), max_size=2),
    "prompt": st.lists(st.integers(min_value=-5, max_value=2**40) | JSON, max_size=3),
    "input": st.lists(st.lists(st.integers(min_value=-5, max_value=2**40)), max_size=2),
    "max_tokens": st.integers(min_value=-(2**64), max_value=2**64 - 1),
    "max_completion_tokens": st.integers(min_value=-(2**64), max_value=2**64 - 1),
    "n": st.integers(min_value=-2, max_value=200),
    "temperature": st.floats(min_value=-1e308, max_value=1e308),
    "stream_options": st.fixed_dictionaries({"include_usage": JSON}),
    "tools": st.lists(st.fixed_dictionaries({"type": JSON, "function": JSON}), max_size=2),
    "seed": st.integers(min_value=-(2**64), max_value=2**64 - 1),
    "logprobs": st.booleans() | st.integers(min_value=-1, max_value=6),
}
FIELDS = sorted(set(VALID) | set(EDGES))
ENDPOINTS = {"chat": "messages", "completions": "prompt", "embeddings": "input"}
MODELS = {"chat": "chat-small", "completions": "chat-small", "embeddings": "embed-small"}


@st.composite
def value_of(draw, name, wild: bool):
    """A valid value, or when ``wild`` one past the edges or any other JSON value."""
    if not wild:
        return draw(VALID.get(name, JSON))
    return draw(st.one_of([EDGES[name]] if name in EDGES else []) | ANYTHING)


@st.composite
def requests(draw):
    endpoint = draw(st.sampled_from(sorted(ENDPOINTS)))
    # A quarter of the bodies are well-formed throughout; the rest have wild fields.
    wild = set(draw(st.lists(st.sampled_from(["model", *FIELDS]), min_size=1, max_size=3)))
    if draw(st.integers(0, 3)) == 1:
        wild = set()
    body = {}
    if "model" not in wild:
        body["model"] = MODELS[endpoint]
    elif draw(st.booleans()):
        body["model"] = draw(TEXT | JSON)
    needed = ENDPOINTS[endpoint]
    if needed not in wild or draw(st.booleans()):
        body[needed] = draw(value_of(needed, needed in wild))
    names = draw(st.lists(st.sampled_from(FIELDS), max_size=5, unique=True)) + sorted(wild)
    for name in names:
        if name != "model" and name != needed:
            body[name] = draw(value_of(name, name in wild))
    if draw(st.integers(0, 3)) == 2:  # fields no OpenAI API has: passed through
        body.update(draw(st.dictionaries(st.text(min_size=1, max_size=12), JSON, max_size=3)))
    raw = json.dumps(body).encode()  # (orjson writes no integer past 64 bits)
    if draw(st.integers(0, 19)) == 13:  # now and then, not JSON at all (0 would be drawn often)
        raw = draw(st.binary(max_size=40))
    return endpoint, raw


@pytest.fixture
def fuzz_target(acme, mode):
    # Enterprise: no per-key RPM of the tier, so 200 requests a minute are all served.
    org_services.org_update(actor=ACTOR, org=acme.org, tier="enterprise")
    refresh_snapshot()
    with httpx.Client(
        base_url=acme.base_url, headers={"Authorization": f"Bearer {acme.raw}"}, timeout=30
    ) as client:
        yield acme, client


def _rows(org) -> int:
    from gateway import runtime

    runtime.gateway().sink.flush()
    return UsageRecord.objects.filter(org=org).count()


PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests())
def test_any_body_gets_an_openai_shaped_answer_and_one_usage_row(fuzz_target, request):
    acme, client = fuzz_target
    endpoint, raw = request
    before = _rows(acme.org)
    response = client.post(
        PATHS[endpoint], content=raw, headers={"Content-Type": "application/json"}
    )
    event(f"{endpoint} {response.status_code}")
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        event(
            f"{error['code']} {error['param']} {error['message'][:60] if error['code'] is None else ''}"
        )
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["type"], str)
        assert error["param"] is None or isinstance(error["param"], str)
    elif response.headers["content-type"].startswith("text/event-stream"):
        assert response.text.endswith("data: [DONE]\n\n")
    else:
        assert response.status_code == 200 and response.json()
    assert _rows(acme.org) == before + 1
