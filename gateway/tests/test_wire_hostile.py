"""What real clients send and get on the /v1 wire when names, ids and bodies are odd: a
model name no HTTP header can carry as it is, feedback ids no request has; every request
with a valid key is one usage row, never a 500."""

import httpx
import openai
import pytest
from django.core.exceptions import ValidationError

from gateway import services
from gateway.models import Deployment
from gateway.tests.conftest import ACTOR, refresh_snapshot, usage_rows
from gateway.tests.fake_upstream import Behaviour
from governance.models import RoutingPolicy


def _auth(raw):
    return {"Authorization": f"Bearer {raw}"}


NAMES = ["模型-chat", "café", "chat\u2028small", "chat\r\nx-evil: 1", "gpt\tmini"]


def _deploy(acme, name):
    try:
        services.deployment_save(
            actor=ACTOR,
            org=acme.org,
            model_name=name,
            provider=acme.providers["fake"],
            upstream_model="gpt-4o-mini",
        )
    except ValidationError:
        # Control characters are refused now; a row saved before that rule still has them.
        Deployment.objects.create(
            org=acme.org,
            model_name=name,
            provider=acme.providers["fake"],
            upstream_model="gpt-4o-mini",
        )
    refresh_snapshot()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("stream", [False, True])
def test_a_model_name_headers_cannot_carry_is_percent_encoded_in_them(acme, name, stream):
    """x-bonito-model-used carries the org's model name: one that is not printable ASCII is
    percent-encoded (it was a 500 with no body, and a stream lost its usage row)."""
    _deploy(acme, name)
    policy_free = {"model": name, "messages": [{"role": "user", "content": "hi"}]}
    # The request body cannot name a model with control characters (a 400); an rt- key can.
    if not name.isprintable():
        # Such names are refused in a policy now too; one saved before that rule has them.
        policy = RoutingPolicy.objects.create(
            org=acme.org, name="odd", strategy="failover", model_names=[name]
        )
        _key, raw = services.api_key_create(
            actor=ACTOR, org=acme.org, name="rt", routing_policy=policy
        )
        refresh_snapshot()
        policy_free["model"] = "anything"
    else:
        raw = acme.raw
    response = httpx.post(
        acme.base_url + "/chat/completions",
        json={**policy_free, "stream": stream},
        headers=_auth(raw),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    used = response.headers["x-bonito-model-used"]
    assert used.isascii() and used.isprintable()
    assert httpx.URL("http://x/?m=" + used).params["m"] == name
    if stream:
        assert response.text.rstrip().endswith("data: [DONE]")
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status, row.model_used) == ("success", 200, name)


def test_the_openai_sdk_reads_an_answer_of_a_non_ascii_model_name(acme):
    _deploy(acme, "модель")
    client = openai.OpenAI(base_url=acme.base_url, api_key=acme.raw, max_retries=0)
    answer = client.chat.completions.create(
        model="модель", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model="модель", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert chunks
    assert [r.http_status for r in usage_rows(acme.org)] == [200, 200]


# ---------------------------------------------------------------------- POST /v1/feedback
@pytest.mark.parametrize("rid", ["req\x00abc", "req\nabc", "запрос-1", "x\u2028y", "\x7f"])
def test_feedback_for_an_id_no_request_can_have_is_a_404_and_one_row(acme, rid):
    """Request ids are printable ASCII (the client's x-request-id only when it is so), so
    an id with a NUL, a line break or another script names no request: a 404, never the
    500 PostgreSQL's refusal of a NUL made of it."""
    response = httpx.post(
        acme.base_url + "/feedback",
        json={"request_id": rid, "thumbs": "up"},
        headers=_auth(acme.raw),
        timeout=30,
    )
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "request_not_found"
    [row] = usage_rows(acme.org)
    assert (row.endpoint, row.status, row.http_status) == ("feedback", "rejected", 404)


def test_feedback_still_rates_a_request_of_the_keys_org(acme):
    first = httpx.post(
        acme.base_url + "/chat/completions",
        json={"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]},
        headers={**_auth(acme.raw), "x-request-id": "my-app-42 ~!"},
        timeout=30,
    )
    assert first.headers["x-request-id"] == "my-app-42 ~!"
    usage_rows()
    response = httpx.post(
        acme.base_url + "/feedback",
        json={"request_id": "my-app-42 ~!", "score": 0.25},
        headers=_auth(acme.raw),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["rated"] == 1
    rows = usage_rows(acme.org)
    assert [r.feedback_score for r in rows if r.endpoint == "chat"] == [0.25]
    assert len(rows) == 2


# ---------------------------------------------------------------------- content parts
@pytest.mark.parametrize(
    "part,code",
    [
        ({"type": "text", "text": None}, "missing_required_parameter"),
        ({"type": "text"}, "missing_required_parameter"),
        ({"type": "text", "text": 123}, "invalid_type"),
        ({"type": "text", "text": ["a"]}, "invalid_type"),
    ],
)
@pytest.mark.parametrize("model", ["chat-small", "mocked"])
def test_a_text_part_without_text_is_a_400_naming_it(acme, part, code, model):
    """A text part's text is a string (OpenAI refuses anything else): a part with null, a
    number or a list there was a 500 when the prompt was counted (the mock's answer, an
    upstream that reports no usage, smart routing's tiers on the mock)."""
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(report_usage=False)
    mock = services.provider_save(actor=ACTOR, org=acme.org, name="mocky", kind="mock")
    services.deployment_save(
        actor=ACTOR, org=acme.org, model_name="mocked", provider=mock, upstream_model="m"
    )
    refresh_snapshot()
    messages = [{"role": "user", "content": [{"type": "text", "text": "hi"}, part]}]
    response = httpx.post(
        acme.base_url + "/chat/completions",
        json={"model": model, "messages": messages},
        headers=_auth(acme.raw),
        timeout=30,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("messages[0].content[1].text", code)
    assert acme.fake.requests == []
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status) == ("rejected", 400)


def test_other_parts_and_text_parts_with_text_still_pass(acme):
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(report_usage=False)
    content = [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "refusal", "refusal": "no"},
    ]
    response = httpx.post(
        acme.base_url + "/chat/completions",
        json={"model": "chat-small", "messages": [{"role": "user", "content": content}]},
        headers=_auth(acme.raw),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    [row] = usage_rows(acme.org)
    assert row.status == "success" and row.input_tokens > 0


# ---------------------------------------------------------------------- where the key is
@pytest.mark.parametrize("where", ["x-api-key", "api-key"])
@pytest.mark.parametrize("path", ["/chat/completions", "/messages"])
def test_the_bonito_key_is_found_beside_another_token_in_authorization(acme, where, path):
    """A proxy in front (or Claude Code with an auth token set) may put its own bearer
    token in Authorization while the app sends its bn- key as x-api-key or api-key: the
    well-formed Bonito key is the one used (the bearer alone was read: a 401)."""
    body = {"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]}
    if path == "/messages":
        body["max_tokens"] = 5
    response = httpx.post(
        acme.base_url + path,
        json=body,
        headers={"Authorization": "Bearer corp-proxy-token-123", where: acme.raw},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    [row] = usage_rows(acme.org)
    assert row.key_id == acme.key.id


def test_no_bonito_key_anywhere_is_still_a_401(acme):
    response = httpx.post(
        acme.base_url + "/chat/completions",
        json={"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": "Bearer corp-proxy-token-123", "x-api-key": "bn-not-a-key"},
        timeout=30,
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert usage_rows() == []
