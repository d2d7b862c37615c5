"""A body refused as invalid is refused before it is scored or routed, on every endpoint
(no x-bonito-route-* headers, no score or tier on its row), and its usage row keeps the
model the body named."""

import httpx
import pytest

from gateway.tests.conftest import usage_rows
from gateway.tests.test_smart_routing import _tiers

INVALID = [
    ("/v1/chat/completions", "chat", {"model": "auto", "messages": []}),
    (
        "/v1/chat/completions",
        "chat",
        {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1},
    ),
    ("/v1/completions", "completions", {"model": "auto", "prompt": "hi", "max_tokens": -1}),
    ("/v1/responses", "responses", {"model": "auto", "input": []}),
    ("/v1/messages", "messages", {"model": "auto", "max_tokens": 5, "messages": []}),
]


@pytest.mark.parametrize(("path", "endpoint", "body"), INVALID)
def test_an_invalid_body_is_refused_before_scoring_and_its_row_names_the_model(
    acme, gw, path, endpoint, body
):
    from gateway import services
    from gateway.tests.conftest import ACTOR, refresh_snapshot

    _tiers(acme)
    services.gateway_config_set(
        actor=ACTOR, org=acme.org, smart_tiers=["smart-lite", "smart-pro"], smart={}
    )
    refresh_snapshot()
    r = httpx.post(
        acme.url + path, json=body, headers={"Authorization": f"Bearer {acme.raw}"}, timeout=10
    )
    assert r.status_code == 400, r.text
    assert not [h for h in r.headers if h.startswith("x-bonito-route")]
    [row] = [x for x in usage_rows(acme.org) if x.endpoint == endpoint]
    assert (row.status, row.http_status, row.model_requested) == ("rejected", 400, "auto")
    assert (row.route_tier, row.route_score, row.cost_top_tier) == ("", None, None)
    assert acme.fake.requests == []
