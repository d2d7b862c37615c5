"""An edit made in the dashboard or REST changes what /v1 does with the next config
(issue 19.1): a deployment's priority reorders failover, a disabled deployment or provider
is not routed to, a routing policy's weights move its traffic, and a disabled policy's rt-
keys are refused. Every request with a valid key is still exactly one usage row. Through
both provider paths (pass-through and LiteLLM)."""

import collections

import httpx
import openai
import pytest
from django.test import Client
from django.urls import reverse

from gateway import services
from gateway.tests.conftest import ACTOR, refresh_snapshot, usage_rows
from governance import services as governance_services

JSON = "application/json"
N = 6


@pytest.fixture
def admin(acme):
    client = Client()
    client.force_login(acme.alice)
    return client


def _served(acme, raw, model, n=N):
    """Where n chat requests went: Counter of (model used, provider)."""
    client = openai.OpenAI(base_url=acme.base_url, api_key=raw, max_retries=0)
    served = collections.Counter()
    for _ in range(n):
        response = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "x"}]
        )
        served[
            (response.headers["x-bonito-model-used"], response.headers["x-bonito-provider"])
        ] += 1
    return served


def _deployment_body(d, **changes):
    body = {
        "provider": d.provider_id,
        "model_name": d.model_name,
        "upstream_model": d.upstream_model,
        "region": d.region,
        "priority": d.priority,
        "weight": d.weight,
        "input_price_per_mtok": "",
        "output_price_per_mtok": "",
        "is_active": "on" if d.is_active else "",
    }
    return {**body, **changes}


def test_a_priority_edit_in_the_dashboard_reorders_failover(acme, mode, admin):
    assert _served(acme, acme.raw, "ha-chat") == {("ha-chat", "fake"): N}
    primary, secondary = acme.deployments["ha-primary"], acme.deployments["ha-secondary"]
    for d, priority in ((primary, 5), (secondary, 0)):
        response = admin.post(
            reverse("deployment_edit", args=[acme.org.slug, d.pk]),
            _deployment_body(d, priority=priority),
        )
        assert response.status_code == 302
    refresh_snapshot()
    assert _served(acme, acme.raw, "ha-chat") == {("ha-chat", "fake2"): N}
    assert len([r for r in usage_rows(acme.org) if r.endpoint == "chat"]) == 2 * N


def test_a_deployment_disabled_over_rest_is_not_routed_to(acme, mode, admin):
    primary = acme.deployments["ha-primary"]
    response = admin.patch(
        f"/api/gateway/deployments/{primary.pk}", {"is_active": False}, content_type=JSON
    )
    assert response.status_code == 200
    refresh_snapshot()
    assert _served(acme, acme.raw, "ha-chat") == {("ha-chat", "fake2"): N}
    assert not [r for r in acme.fake.requests if r["body"]["model"] == "primary-model"]
    # Enabled again, it serves again.
    admin.patch(f"/api/gateway/deployments/{primary.pk}", {"is_active": True}, content_type=JSON)
    refresh_snapshot()
    assert _served(acme, acme.raw, "ha-chat") == {("ha-chat", "fake"): N}


def test_a_provider_disabled_in_the_dashboard_is_not_routed_to(acme, mode, admin):
    # fake2 first in failover, then fake2 disabled: ha-chat goes back to fake.
    services.deployment_save(
        actor=ACTOR,
        org=acme.org,
        deployment=acme.deployments["ha-secondary"],
        model_name="ha-chat",
        provider=acme.providers["fake2"],
        upstream_model="secondary-model",
        priority=0,
    )
    services.deployment_save(
        actor=ACTOR,
        org=acme.org,
        deployment=acme.deployments["ha-primary"],
        model_name="ha-chat",
        provider=acme.providers["fake"],
        upstream_model="primary-model",
        priority=5,
    )
    refresh_snapshot()
    assert _served(acme, acme.raw, "ha-chat") == {("ha-chat", "fake2"): N}
    fake2 = acme.providers["fake2"]
    # The edit form as the page sends it: the endpoint kept, the Active box unticked.
    response = admin.post(
        reverse("provider_edit", args=[acme.org.slug, fake2.pk]),
        {"openai_compatible-api_base": fake2.api_base},
    )
    assert response.status_code == 302
    refresh_snapshot()
    assert _served(acme, acme.raw, "ha-chat") == {("ha-chat", "fake"): N}


def test_a_weights_edit_moves_an_rt_keys_traffic_and_disabling_the_policy_refuses_it(
    acme, mode, admin
):
    policy = governance_services.routing_policy_save(
        actor=ACTOR,
        org=acme.org,
        name="ab",
        strategy="weighted",
        models=["chat-small", "ha-chat"],
        weights={"chat-small": 1, "ha-chat": 0},
    )
    _key, raw = services.api_key_create(actor=ACTOR, org=acme.org, name="ab", routing_policy=policy)
    refresh_snapshot()
    assert _served(acme, raw, "ab") == {("chat-small", "fake"): N}
    url = reverse("routing_policy_edit", args=[acme.org.slug, policy.pk])
    body = {"strategy": "weighted", "models": "chat-small, ha-chat", "is_active": "on"}
    response = admin.post(url, {**body, "weights": "chat-small=0, ha-chat=1"})
    assert response.status_code == 302
    refresh_snapshot()
    served = _served(acme, raw, "ab")  # ha-chat's two deployments split by their own weights
    assert sum(n for (model, _), n in served.items() if model == "ha-chat") == N

    # Disabled: its rt- key is refused at once (and each refusal is still one usage row).
    before = len(usage_rows(acme.org))
    response = admin.post(url, {**body, "weights": "chat-small=0, ha-chat=1", "is_active": ""})
    assert response.status_code == 302
    refresh_snapshot()
    client = openai.OpenAI(base_url=acme.base_url, api_key=raw, max_retries=0)
    for _ in range(3):
        with pytest.raises(openai.APIStatusError) as exc:
            client.chat.completions.create(model="ab", messages=[{"role": "user", "content": "x"}])
        assert exc.value.status_code == 503
        assert exc.value.body["code"] == "routing_policy_missing"
    assert len(usage_rows(acme.org)) == before + 3
    # Feedback too (it was taken: 200 for a request of the org)
    rated = httpx.post(
        acme.base_url + "/feedback",
        json={"request_id": usage_rows(acme.org)[0].request_id, "score": 1},
        headers={"Authorization": f"Bearer {raw}"},
        timeout=30,
    )
    assert rated.status_code == 503 and rated.json()["error"]["code"] == "routing_policy_missing"
    assert len(usage_rows(acme.org)) == before + 4
    # And the model list (it was a 200 with an empty list, an outside check).
    for path in ("/models", "/models/ab"):
        listed = httpx.get(
            acme.base_url + path, headers={"Authorization": f"Bearer {raw}"}, timeout=30
        )
        assert listed.status_code == 503, path
        assert listed.json()["error"]["code"] == "routing_policy_missing"
