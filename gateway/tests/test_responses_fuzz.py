"""/v1/responses driven with generated bodies (hypothesis), on both paths (passed through
to an ``openai`` connection, translated for an OpenAI-compatible one): whatever a client
sends, no 5xx of Bonito's own, an OpenAI-shaped error for every 4xx, and exactly one usage
row per request."""

import json
import re

import httpx
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from gateway import services
from gateway.tests.conftest import ACTOR, openai_provider, refresh_snapshot
from gateway.tests.test_request_fuzz import ANYTHING, JSON, TEXT, _rows
from orgs import services as org_services

PART = st.fixed_dictionaries(
    {"type": st.sampled_from(["input_text", "output_text"]), "text": TEXT}
) | st.fixed_dictionaries(
    {"type": st.just("input_image"), "image_url": st.just("data:image/png;base64,iVBORw0KGgo=")}
)
MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system", "developer"]),
        "content": TEXT | st.lists(PART, max_size=2),
    },
    optional={"type": st.just("message")},
)
CALL = st.fixed_dictionaries(
    {"type": st.just("function_call"), "call_id": TEXT, "name": TEXT, "arguments": TEXT}
)
OUTPUT = st.fixed_dictionaries(
    {"type": st.just("function_call_output"), "call_id": TEXT, "output": TEXT}
)
TOOL = st.fixed_dictionaries(
    {"type": st.just("function"), "name": st.text(min_size=1, max_size=10)},
    optional={"parameters": st.just({"type": "object"}), "description": TEXT},
)
VALID = {
    "input": st.text(min_size=1, max_size=30)
    | st.lists(MESSAGE | CALL | OUTPUT, min_size=1, max_size=4),
    "instructions": TEXT,
    "max_output_tokens": st.integers(min_value=1, max_value=4096),
    "temperature": st.floats(min_value=0, max_value=2),
    "top_p": st.floats(min_value=0, max_value=1),
    "stream": st.booleans(),
    "store": st.booleans(),
    "tools": st.lists(TOOL, max_size=2),
    "tool_choice": st.sampled_from(["auto", "none", "required"]),
    "parallel_tool_calls": st.booleans(),
    "text": st.fixed_dictionaries(
        {"format": st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object"])})}
    ),
    "user": TEXT,
    "metadata": st.dictionaries(st.text(max_size=5), TEXT, max_size=2),
    "truncation": st.sampled_from(["auto", "disabled"]),
    "previous_response_id": TEXT,
}
EDGES = {
    "input": st.lists(MESSAGE | JSON, max_size=3)
    | st.lists(st.fixed_dictionaries({"role": JSON, "content": JSON, "type": JSON}), max_size=2)
    | st.lists(st.fixed_dictionaries({"type": st.just("function_call_output")}), max_size=2),
    "max_output_tokens": st.integers(min_value=-(2**64), max_value=2**64 - 1),
    "temperature": st.floats(min_value=-1e308, max_value=1e308),
    "tools": st.lists(st.fixed_dictionaries({"type": JSON, "name": JSON}), max_size=2)
    | st.lists(st.fixed_dictionaries({"type": st.text(max_size=12)}), max_size=2),
    "tool_choice": st.fixed_dictionaries({"type": JSON, "name": JSON}),
    "text": st.fixed_dictionaries({"format": st.fixed_dictionaries({"type": JSON})}),
}
FIELDS = sorted(set(VALID) | set(EDGES))


@st.composite
def value_of(draw, name, wild: bool):
    if not wild:
        return draw(VALID.get(name, JSON))
    return draw(st.one_of([EDGES[name]] if name in EDGES else []) | ANYTHING)


@st.composite
def bodies(draw):
    wild = set(draw(st.lists(st.sampled_from(["model", *FIELDS]), min_size=1, max_size=3)))
    if draw(st.integers(0, 3)) == 1:
        wild = set()
    body = {}
    if "model" not in wild:
        body["model"] = draw(st.sampled_from(["gpt", "chat-small"]))
    elif draw(st.booleans()):
        body["model"] = draw(TEXT | JSON)
    if "input" not in wild or draw(st.booleans()):
        body["input"] = draw(value_of("input", "input" in wild))
    names = draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)) + sorted(wild)
    for name in names:
        if name not in ("model", "input") and (
            name != "previous_response_id" or draw(st.booleans())
        ):
            body[name] = draw(value_of(name, name in wild))
    raw = json.dumps(body).encode()
    if draw(st.integers(0, 19)) == 13:
        raw = draw(st.binary(max_size=40))
    return raw


@pytest.fixture
def target(acme, mode):
    org_services.org_update(actor=ACTOR, org=acme.org, tier="enterprise")
    provider = openai_provider(acme)
    services.deployment_save(
        actor=ACTOR, org=acme.org, model_name="gpt", provider=provider, upstream_model="gpt-4o"
    )
    refresh_snapshot()
    with httpx.Client(
        base_url=acme.base_url, headers={"Authorization": f"Bearer {acme.raw}"}, timeout=30
    ) as client:
        yield acme, client


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=bodies())
# A line separator in a string the stream echoes (found by this test): U+0085 is one for
# str.splitlines(), not for SSE.
@example(raw=b'{"model": "gpt", "input": "0", "metadata": {"": "\\u0085"}, "stream": true}')
def test_any_responses_body_gets_an_openai_shaped_answer_and_one_usage_row(target, raw):
    acme, client = target
    before = _rows(acme.org)
    response = client.post("/responses", content=raw, headers={"Content-Type": "application/json"})
    event(f"{response.status_code}")
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        event(f"{error['code']} {error['param']}")
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str) and error["message"]
        assert error["param"] is None or isinstance(error["param"], str)
    elif response.headers["content-type"].startswith("text/event-stream"):
        # SSE lines end only at CR, LF or CRLF: str.splitlines() would also cut at U+0085,
        # U+2028..., which a JSON string may hold as they are (metadata {"": "\x85"}).
        lines = re.split(r"\r\n|\r|\n", response.text)
        last = [line for line in lines if line.startswith("data:")][-1]
        assert json.loads(last[5:])["type"] in ("response.completed", "response.incomplete")
    else:
        assert response.json()["object"] == "response"
    assert _rows(acme.org) == before + 1
