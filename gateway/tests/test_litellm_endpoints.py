"""Endpoints LiteLLM has no call for on a provider kind: a 400 `unsupported_endpoint` (the
next deployment tried first), never a request sent somewhere else with the org's key, or
with the platform's own, and never a 200 with nothing in it."""

import httpx
import pytest

from gateway import services
from gateway.tests.conftest import ACTOR, refresh_snapshot, usage_rows

CASES = {
    "moderations": ("/moderations", {"input": "hi"}),
    "images": ("/images/generations", {"prompt": "a cat"}),
    "embeddings": ("/embeddings", {"input": "hi"}),
}
UPSTREAM = {
    "embeddings": "text-embedding-3-small",
    "images": "gpt-image-1",
    "moderations": "omni-moderation-latest",
}


def _provider(acme, kind, **fields):
    return services.provider_save(actor=ACTOR, org=acme.org, name=kind[:12], kind=kind, **fields)


def _deploy(acme, provider, name="thing", upstream="some-model", priority=0):
    services.deployment_save(
        actor=ACTOR,
        org=acme.org,
        model_name=name,
        provider=provider,
        upstream_model=upstream,
        priority=priority,
    )


def _post(acme, endpoint, model="thing"):
    path, body = CASES[endpoint]
    return httpx.post(
        acme.base_url + path,
        json={"model": model, **body},
        headers={"Authorization": f"Bearer {acme.raw}"},
        timeout=30,
    )


def _anthropic(acme):
    # Its endpoint ends in /v1 here, so a call LiteLLM sent on as OpenAI's would reach the
    # fake (at Anthropic's own host it went to api.openai.com when no endpoint was set).
    return _provider(
        acme, "anthropic", api_base=acme.fake.url, credentials={"api_key": "sk-ant-org-secret"}
    )


@pytest.mark.parametrize("endpoint", sorted(CASES))
def test_an_anthropic_deployment_serves_no_moderations_images_or_embeddings(acme, gw, endpoint):
    gw.upstreams.prewarm(("anthropic",))
    _deploy(acme, _anthropic(acme))
    refresh_snapshot()
    response = _post(acme, endpoint)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("unsupported_endpoint", "model")
    assert "sk-ant" not in response.text
    assert acme.fake.requests == []  # the Anthropic key went nowhere
    [row] = usage_rows(acme.org)
    assert (row.endpoint, row.status, row.http_status) == (endpoint, "rejected", 400)


@pytest.mark.parametrize("endpoint", sorted(CASES))
def test_the_next_deployment_serves_what_an_anthropic_one_cannot(acme, gw, endpoint):
    gw.upstreams.prewarm(("anthropic",))
    _deploy(acme, _anthropic(acme), priority=0)
    upstream = UPSTREAM[endpoint]
    _deploy(acme, acme.providers["fake"], upstream=upstream, priority=1)
    refresh_snapshot()
    response = _post(acme, endpoint)
    assert response.status_code == 200, response.text
    assert [r["endpoint"] for r in acme.fake.requests] == [endpoint]
    assert "sk-ant" not in str(acme.fake.requests[0]["headers"])
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status, row.deployment) == ("success", 200, "fake/" + upstream)


@pytest.mark.parametrize("kind", ["bedrock", "azure_openai"])
def test_moderations_on_another_kind_never_lend_the_platforms_openai_key(
    acme, gw, monkeypatch, kind
):
    """LiteLLM's moderations call is OpenAI's SDK whatever the provider: it sent a Bedrock
    deployment's moderation to the endpoint (or api.openai.com) with the server's own
    OPENAI_API_KEY, and an Azure one's with its key as a bearer token."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-the-platforms-own-key")
    gw.upstreams.prewarm((kind,))
    if kind == "bedrock":
        creds = {"aws_access_key_id": "AKIAORG", "aws_secret_access_key": "org-secret"}
    else:
        creds = {"api_key": "azure-org-key"}
    _deploy(acme, _provider(acme, kind, api_base=acme.fake.url, credentials=creds))
    refresh_snapshot()
    response = _post(acme, "moderations")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "unsupported_endpoint"
    assert acme.fake.requests == []
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status) == ("rejected", 400)
