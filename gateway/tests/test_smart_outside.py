"""Smart routing, checked from outside (as a new user and as an attacker would): through
/v1 with the openai SDK against the live gateway and a fake upstream over HTTP."""

from decimal import Decimal

import openai
import pytest

from gateway.tests.conftest import ACTOR, refresh_snapshot, usage_rows
from gateway.tests.fake_upstream import Behaviour

EASY = "Translate 'good morning' into French."


def _deploy(acme, model, upstream, inp=1.0, out=1.0, priority=None):
    """A deployment of ``model`` on the fake provider at those prices (per million tokens)."""
    from gateway import services

    services.deployment_save(
        actor=ACTOR,
        org=acme.org,
        model_name=model,
        provider=acme.providers["fake"],
        upstream_model=upstream,
        input_price_per_mtok=inp,
        output_price_per_mtok=out,
        priority=priority,
    )


def _smart_client(acme, spec, tiers=("s-lite", "s-pro")):
    from gateway import services
    from governance import services as gov

    policy = gov.routing_policy_save(
        actor=ACTOR, org=acme.org, name="saver", strategy="smart", models=list(tiers), smart=spec
    )
    _key, raw = services.api_key_create(
        actor=ACTOR, org=acme.org, name="saver", routing_policy=policy
    )
    refresh_snapshot()
    return openai.OpenAI(base_url=acme.base_url, api_key=raw, max_retries=0)


def _ask(client, text=EASY):
    return client.chat.completions.with_raw_response.create(
        model="x", messages=[{"role": "user", "content": text}]
    )


def _chat_rows(acme):
    return [r for r in usage_rows(acme.org) if r.endpoint == "chat"]


# ------------------------------------------------------------------------------ top-tier cost
# The fake upstream reports 11 prompt and 5 completion tokens. The top tier has two
# deployments at different prices: "what the same tokens would have cost on the top tier" of
# a request the top tier served is what it did cost, whichever of them served it.
@pytest.mark.parametrize("within", ["cost_optimized", "failover", "round_robin"])
def test_a_request_the_top_tier_served_saved_nothing_whichever_deployment_served_it(
    acme, gw, within
):
    _deploy(acme, "s-lite", "s-lite-up", 0.1, 0.2)
    _deploy(acme, "s-pro", "s-pro-dear", 2.0, 8.0, priority=0)
    _deploy(acme, "s-pro", "s-pro-cheap", 0.5, 1.0, priority=1)
    client = _smart_client(acme, {"thresholds": [1e-6], "within": within})  # all to the top
    for _ in range(4):
        assert _ask(client).headers["x-bonito-route-tier"] == "s-pro"
    rows = _chat_rows(acme)
    assert len(rows) == 4 and {r.model_used for r in rows} == {"s-pro"}
    for row in rows:
        assert row.cost_top_tier == row.cost, (row.deployment, row.cost, row.cost_top_tier)


def test_a_top_tier_deployment_that_failed_over_to_a_dearer_one_is_no_negative_saving(acme, gw):
    _deploy(acme, "s-lite", "s-lite-up", 0.1, 0.2)
    _deploy(acme, "s-pro", "s-pro-cheap", 0.5, 1.0, priority=0)
    _deploy(acme, "s-pro", "s-pro-dear", 2.0, 8.0, priority=1)
    acme.fake.behaviours["s-pro-cheap"] = Behaviour(status=503)
    client = _smart_client(acme, {"thresholds": [1e-6]})
    response = _ask(client)
    assert response.headers["x-bonito-model-used"] == "s-pro"
    [row] = _chat_rows(acme)
    assert row.deployment.endswith("s-pro-dear")
    assert row.cost == Decimal("0.00006200")  # 11 x 2 + 5 x 8 per million
    assert row.cost_top_tier == row.cost


def test_a_cheap_tier_request_is_compared_with_the_top_tier_deployment_it_would_have_used(acme, gw):
    """With ``within: cost_optimized`` the top tier would have served the request from its
    cheapest deployment: the saving is counted against that one, not against whichever of
    its deployments was saved first."""
    _deploy(acme, "s-lite", "s-lite-up", 0.1, 0.2)
    _deploy(acme, "s-pro", "s-pro-dear", 2.0, 8.0, priority=0)
    _deploy(acme, "s-pro", "s-pro-cheap", 0.5, 1.0, priority=1)
    client = _smart_client(acme, {"thresholds": [0.999999], "within": "cost_optimized"})
    assert _ask(client).headers["x-bonito-model-used"] == "s-lite"
    [row] = _chat_rows(acme)
    assert row.cost == Decimal("0.00000210")  # 11 x 0.1 + 5 x 0.2 per million
    assert row.cost_top_tier == Decimal("0.00001050")  # 11 x 0.5 + 5 x 1 per million


# ------------------------------------------------------------------------------ configuration
@pytest.mark.parametrize(
    "ab",
    [
        {"share": 0, "classifier": "a\x00b"},  # PostgreSQL's jsonb cannot hold it: a 500
        {"share": 0, "classifier": {"x": [1] * 100}},
        {"share": 0.0, "classifier": "gpt-5"},
    ],
)
def test_an_ab_arm_is_checked_even_at_a_share_of_0(ab):
    """Saved, it is what a share raised later routes by; anything saved is checked."""
    from core import smart as smart_settings

    with pytest.raises(ValueError, match="smart.ab.classifier must be one of"):
        smart_settings.resolve({"ab": ab}, ["a", "b"])
    # what the gateway serves from a row saved before the check: kept, the A/B off
    assert smart_settings.resolve({"ab": ab}, ["a", "b"], serving=True).ab_share == 0


@pytest.mark.django_db
def test_the_rest_api_refuses_a_bad_ab_arm_at_a_share_of_0_with_a_400(org_a, alice):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(alice)
    for ab in ({"share": 0, "classifier": "a\x00b"}, {"share": 0, "classifier": "bogus"}):
        response = client.post(
            f"/api/gateway/routing-policies?org={org_a.slug}",
            {"name": "saver", "strategy": "smart", "models": ["a", "b"], "smart": {"ab": ab}},
            format="json",
        )
        assert response.status_code == 400, response.content
        assert "smart.ab.classifier" in response.json()["smart"][0]
    # A share of 0 with a valid arm (the arm kept for later) is fine.
    ok = {"share": 0, "classifier": "strong"}
    response = client.post(
        f"/api/gateway/routing-policies?org={org_a.slug}",
        {"name": "saver", "strategy": "smart", "models": ["a", "b"], "smart": {"ab": ok}},
        format="json",
    )
    assert response.status_code == 201, response.content


@pytest.mark.parametrize(
    ("tiers", "says"),
    [(["a", "b"], "a list of 1 score (one fewer than the 2 tiers)"), (["a", "b", "c"], "2 scores")],
)
def test_the_thresholds_message_counts_in_words(tiers, says):
    from core import smart as smart_settings

    with pytest.raises(ValueError) as info:
        smart_settings.resolve({"thresholds": [0.1, 0.2, 0.3]}, tiers)
    assert says in str(info.value)


# ------------------------------------------------------------------------------ savings
def test_a_billed_stream_that_broke_counts_in_the_savings(acme, gw):
    """A stream cut after tokens were billed is an error row with a cost: smart-routed
    traffic's cost (and what it would have cost on the top tier) includes it, as the bill
    does."""
    from datetime import UTC, datetime, timedelta

    from billing.selectors import smart_savings

    _deploy(acme, "s-lite", "s-lite-up", 1.0, 2.0)
    _deploy(acme, "s-pro", "s-pro-up", 20.0, 80.0)
    acme.fake.behaviours["s-lite-up"] = Behaviour(stream_chunks=6, reset_after_chunks=3)
    client = _smart_client(acme, {"thresholds": [0.999999]})
    with client.chat.completions.with_streaming_response.create(
        model="x", messages=[{"role": "user", "content": EASY}], stream=True
    ) as response:
        assert response.headers["x-bonito-model-used"] == "s-lite"
        list(response.iter_lines())
    _ask(client)  # and one that ends well
    rows = _chat_rows(acme)
    assert sorted(r.status for r in rows) == ["error", "success"]
    assert all(r.cost > 0 and r.cost_top_tier > r.cost for r in rows)
    now = datetime.now(UTC)
    out = smart_savings(acme.org, now - timedelta(hours=1), now + timedelta(minutes=1))
    assert out["requests"] == 2
    assert Decimal(str(out["cost_usd"])) == sum(r.cost for r in rows)
    assert Decimal(str(out["top_tier_cost_usd"])) == sum(r.cost_top_tier for r in rows)


# ------------------------------------------------------------------------------ browsers
def test_a_page_on_an_allowed_origin_can_read_the_smart_routing_headers(acme, gw):
    """docs/gateway.md: Access-Control-Expose-Headers lets the page read x-bonito-*: the
    route's score, tier and classifier too, or a browser app sees none of them."""
    import httpx

    from gateway import services

    _deploy(acme, "s-lite", "s-lite-up", 0.1, 0.2)
    _deploy(acme, "s-pro", "s-pro-up", 2.0, 8.0)
    services.gateway_config_set(
        actor=ACTOR,
        org=acme.org,
        smart_tiers=["s-lite", "s-pro"],
        cors_origins=["https://app.acme.example"],
    )
    refresh_snapshot()
    response = httpx.post(
        acme.base_url + "/chat/completions",
        headers={"Authorization": f"Bearer {acme.raw}", "Origin": "https://app.acme.example"},
        json={"model": "auto", "messages": [{"role": "user", "content": EASY}]},
        timeout=10,
    )
    assert response.status_code == 200
    exposed = {h.strip() for h in response.headers["access-control-expose-headers"].split(",")}
    sent = {h for h in response.headers if h.startswith("x-bonito-")}
    assert {"x-bonito-route-score", "x-bonito-route-tier", "x-bonito-route-classifier"} <= sent
    assert sent <= exposed, sent - exposed
