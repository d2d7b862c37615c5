"""A key's remembered rpm refusal (proxy._refused_before_routing) answers and records as the
limiter's own 429 did, and spares the score on every endpoint that scores."""

import time

import httpx
import pytest

from gateway import services
from gateway.tests.conftest import (
    ACTOR,
    refresh_snapshot,
    smart_policy_key,
    smart_tier_deployments,
    usage_rows,
)

HI = [{"role": "user", "content": "hi"}]


def _post(acme, raw, path, body):
    return httpx.post(
        acme.base_url + path, json=body, headers={"Authorization": f"Bearer {raw}"}, timeout=20
    )


# ------------------------------------------------------------------ remembered rpm refusals
def test_a_remembered_rpm_refusal_is_recorded_with_the_model_asked_for(acme):
    """The usage row of a 429 the worker answers from a remembered refusal names the model
    (and service tier) asked for, as the limiter's own 429's row does: the dashboard's
    per-model view counted the first refusal and lost the others."""
    key, raw = services.api_key_create(actor=ACTOR, org=acme.org, name="one-rpm", rpm_limit=1)
    refresh_snapshot()
    body = {"model": "chat-small", "messages": HI, "service_tier": "flex"}
    statuses = [_post(acme, raw, "/chat/completions", body).status_code for _ in range(3)]
    assert statuses == [200, 429, 429]
    rows = [r for r in usage_rows(acme.org) if r.key_id == key.id]
    assert [r.http_status for r in rows] == [200, 429, 429]
    assert [r.model_requested for r in rows] == ["chat-small"] * 3


def test_a_remembered_rpm_refusal_does_not_hide_a_model_the_key_cannot_use(acme):
    """A request routing refuses (a model that does not exist: 404) is answered so, as
    before: the limiter was never asked for it (routing comes first), and a 429 sends the
    client's SDK into retries of a request that can never pass."""
    _, raw = services.api_key_create(actor=ACTOR, org=acme.org, name="one-rpm", rpm_limit=1)
    refresh_snapshot()
    ok = {"model": "chat-small", "messages": HI}
    assert [_post(acme, raw, "/chat/completions", ok).status_code for _ in range(2)] == [200, 429]
    typo = _post(acme, raw, "/chat/completions", {"model": "chat-smal", "messages": HI})
    assert typo.status_code == 404, typo.text


@pytest.mark.parametrize(
    "path,body",
    [
        ("/responses", {"input": "Explain step by step why the sky is blue."}),
        ("/messages/count_tokens", {"messages": HI}),
    ],
    ids=["responses", "count_tokens"],
)
def test_a_smart_key_over_its_rpm_limit_is_not_scored_on_other_endpoints(acme, path, body):
    """/v1/responses and /v1/messages/count_tokens route a smart key's request through its
    policy too (the score), and take a request of its rpm: after the limiter's refusal the
    worker's remembered one answers them before the score, as on chat completions."""
    smart_tier_deployments(acme)
    key, raw = smart_policy_key(acme, "limited", {"thresholds": [0.5]}, rpm_limit=1)
    body = {"model": "auto", **body}
    statuses = [_post(acme, raw, path, body).status_code for _ in range(3)]
    assert statuses == [200, 429, 429]
    rows = [r for r in usage_rows(acme.org) if r.key_id == key.id]
    assert [r.http_status for r in rows] == [200, 429, 429]
    assert rows[1].route_score is not None  # the limiter's refusal: routed, scored
    assert rows[2].route_score is None  # the remembered one: not scored
    assert rows[2].model_requested == "auto" and rows[2].routing_policy == "limited"


def test_a_limit_raised_and_put_back_asks_the_limiter_again(acme):
    """A refusal is remembered under the configuration it was given in: the key's limit
    raised (its requests pass) and put back within the refusal's wait leaves the limiter's
    bucket holding requests again, and the worker asks it rather than answering the 429 it
    remembered for the same limit (any configuration change asks again)."""
    key, raw = services.api_key_create(actor=ACTOR, org=acme.org, name="one-rpm", rpm_limit=1)
    refresh_snapshot()
    ok = {"model": "chat-small", "messages": HI}
    assert [_post(acme, raw, "/chat/completions", ok).status_code for _ in range(2)] == [200, 429]
    services.api_key_update(actor=ACTOR, key=key, rpm_limit=300)
    refresh_snapshot()
    time.sleep(1.0)  # the emptied bucket refills at the new rate: 5 a second
    assert _post(acme, raw, "/chat/completions", ok).status_code == 200
    key.refresh_from_db()
    services.api_key_update(actor=ACTOR, key=key, rpm_limit=1)
    refresh_snapshot()
    # the bucket holds min(1, what 300 a minute left it): one request passes, the next not
    again = [_post(acme, raw, "/chat/completions", ok) for _ in range(2)]
    assert [r.status_code for r in again] == [200, 429], again[0].text
    rows = [r for r in usage_rows(acme.org) if r.key_id == key.id]
    assert [r.http_status for r in rows] == [200, 429, 200, 200, 429]


def test_a_remembered_rpm_refusal_does_not_hide_a_request_that_can_never_pass(acme):
    """A request larger than the key's tokens per minute gets the 429 that says it can never
    pass (x-should-retry: false), not a retryable rpm 429 from a remembered refusal: the
    limiter would have answered so, and the SDK would retry a request that cannot pass."""
    _, raw = services.api_key_create(
        actor=ACTOR, org=acme.org, name="small", rpm_limit=1, tpm_limit=100
    )
    refresh_snapshot()
    ok = {"model": "chat-small", "messages": HI, "max_tokens": 10}
    assert [_post(acme, raw, "/chat/completions", ok).status_code for _ in range(2)] == [200, 429]
    big = _post(acme, raw, "/chat/completions", {**ok, "max_tokens": 1000})
    assert big.status_code == 429, big.text
    assert big.headers["x-should-retry"] == "false"
    assert "cannot pass at any time" in big.json()["error"]["message"]
