"""A prompt with images is not sent to a deployment whose model reads none (LiteLLM's map:
supports_vision false, e.g. o3-mini): it goes to the next candidate, a deployment of the
same model or smart routing's tier up, without a call that can only be refused. A model the
map does not know is called as before, and when no candidate may read images they are all
tried (the provider's answer is the client's). Chat, the Responses API and /v1/messages."""

import httpx
import pytest

from gateway import services
from gateway.dataplane import tokens
from gateway.models import ProviderConnection
from gateway.tests.conftest import ACTOR, refresh_snapshot, usage_rows

PIXEL = "data:image/png;base64,iVBORw0KGgo="
BODIES = {
    "/v1/chat/completions": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": PIXEL}},
                ],
            }
        ]
    },
    "/v1/responses": {
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is in this picture?"},
                    {"type": "input_image", "image_url": PIXEL},
                ],
            }
        ]
    },
    "/v1/messages": {
        "max_tokens": 5,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                    },
                ],
            }
        ],
    },
}
TEXT = {
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "an image_url, in words"}]},
    "/v1/responses": {"input": "an image_url, in words"},
    "/v1/messages": {"max_tokens": 5, "messages": [{"role": "user", "content": "image"}]},
}


def _model(acme, name, upstreams):
    fake = ProviderConnection.objects.get(org=acme.org, name="fake")
    for priority, upstream in enumerate(upstreams):
        services.deployment_save(
            actor=ACTOR,
            org=acme.org,
            model_name=name,
            provider=fake,
            upstream_model=upstream,
            priority=priority,
        )
    refresh_snapshot()


def _post(acme, path, body, model):
    return httpx.post(
        acme.url + path,
        json={"model": model, **body},
        headers={"Authorization": f"Bearer {acme.raw}"},
        timeout=30,
    )


def _called(acme):
    return [r["body"].get("model") for r in acme.fake.requests if "body" in r]


@pytest.mark.parametrize("path", list(BODIES))
def test_an_image_passes_over_a_model_that_reads_none(acme, gw, path):
    _model(acme, "seeing", ["o3-mini", "gpt-4o"])
    response = _post(acme, path, BODIES[path], "seeing")
    assert response.status_code == 200, response.text
    assert _called(acme) == ["gpt-4o"]
    [row] = [r for r in usage_rows(acme.org) if r.model_requested == "seeing"]
    assert row.deployment.endswith("gpt-4o") and row.status == "success"
    # text goes to the first, as ever (a text that names images is text)
    acme.fake.requests.clear()
    assert _post(acme, path, TEXT[path], "seeing").status_code == 200
    assert _called(acme) == ["o3-mini"]


def test_a_model_the_catalog_does_not_know_is_called(acme, gw):
    _model(acme, "unknown", ["my-finetune", "gpt-4o"])
    assert (
        _post(acme, "/v1/chat/completions", BODIES["/v1/chat/completions"], "unknown").status_code
        == 200
    )
    assert _called(acme) == ["my-finetune"]


def test_when_no_candidate_reads_images_they_are_tried_all_the_same(acme, gw):
    _model(acme, "blind", ["o3-mini"])
    response = _post(acme, "/v1/chat/completions", BODIES["/v1/chat/completions"], "blind")
    assert response.status_code == 200, response.text  # the fake upstream answers anyway
    assert _called(acme) == ["o3-mini"]


def test_images_are_found_in_every_api_s_shape_and_only_there():
    for path, body in BODIES.items():
        raw = str(body).encode()
        assert tokens.images_sent(raw, body), path
    for path, body in TEXT.items():
        assert not tokens.images_sent(str(body).encode(), body), path
