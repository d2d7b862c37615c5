"""Round robin takes turns per set of deployments: each model's (each smart tier's)
deployments alternate whatever other traffic the process serves, and a tier ordered only as
a failover candidate (above the one a prompt scored) uses no turn. Through /v1 with the
openai SDK against the live gateway and the fake upstream."""

import random
from collections import Counter
from decimal import Decimal

import openai

from gateway import services
from gateway.dataplane import routing, smart
from gateway.dataplane.snapshot import DeploymentInfo
from gateway.tests.conftest import ACTOR, refresh_snapshot, usage_rows
from gateway.tests.test_smart_outside import _deploy

HARD = (
    "A train leaves at 3 pm going 60 mph; a second leaves 2 hours later at 80 mph. "
    "How many miles from the station does the second catch the first? Then compute the "
    "total fuel cost if each mile costs $0.35 and explain step by step why."
)
EASY = "Hello"


def _client(acme):
    return openai.OpenAI(base_url=acme.base_url, api_key=acme.raw, max_retries=0)


def _ask(client, model, text="hi"):
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}]
    )


def _called(acme):
    return [r["body"]["model"] for r in acme.fake.requests if r["endpoint"] == "chat"]


def _three_tiers(acme):
    """lite -> mid -> pro, ``within: round_robin``; pro has two deployments at different
    prices. "Hello" scores into lite, HARD into pro."""
    _deploy(acme, "lite", "lite-up", 0.1, 0.2)
    _deploy(acme, "mid", "mid-up", 0.5, 1.0)
    _deploy(acme, "pro", "pro-a", 2.0, 8.0)
    _deploy(acme, "pro", "pro-b", 3.0, 12.0)
    easy = smart.rules_score({"messages": [{"role": "user", "content": EASY}]})
    hard = smart.rules_score({"messages": [{"role": "user", "content": HARD}]})
    assert easy < hard
    step = (hard - easy) / 3
    services.gateway_config_set(
        actor=ACTOR,
        org=acme.org,
        smart_tiers=["lite", "mid", "pro"],
        smart={
            "thresholds": [round(easy + step, 6), round(easy + 2 * step, 6)],
            "within": "round_robin",
        },
    )
    refresh_snapshot()


def test_it_alternates_the_top_tier_while_easy_prompts_come_in_between(acme, gw):
    _three_tiers(acme)
    client = _client(acme)
    for _ in range(10):
        assert _ask(client, "auto", HARD).headers["x-bonito-route-tier"] == "pro"
        assert _ask(client, "auto", EASY).headers["x-bonito-route-tier"] == "lite"
    called = _called(acme)
    assert Counter(called) == {"lite-up": 10, "pro-a": 5, "pro-b": 5}
    pro = [m for m in called if m != "lite-up"]
    assert all(a != b for a, b in zip(pro, pro[1:], strict=False)), pro


def test_an_easy_prompt_is_priced_at_the_top_tier_deployment_the_next_hard_one_gets(acme, gw):
    """The savings counterfactual (cost_top_tier) of an easy request is the pro deployment
    whose turn it is: the one a hard request in its place would have gone to."""
    _three_tiers(acme)
    client = _client(acme)
    for _ in range(3):
        _ask(client, "auto", EASY)
        _ask(client, "auto", HARD)
    rows = [r for r in usage_rows(acme.org) if r.endpoint == "chat"]
    assert len(rows) == 6
    # The fake upstream reports 11 prompt and 5 completion tokens.
    price = {"pro-a": Decimal("0.00006200"), "pro-b": Decimal("0.00009300")}
    for easy, hard in zip(rows[::2], rows[1::2], strict=True):
        assert easy.model_used == "lite" and hard.model_used == "pro"
        served = hard.deployment.rsplit("/", 1)[-1]
        assert easy.cost_top_tier == price[served] == hard.cost, (easy.deployment, served)
    assert {r.deployment.rsplit("/", 1)[-1] for r in rows[1::2]} == {"pro-a", "pro-b"}


def test_each_model_takes_its_own_turns_when_requests_alternate_models(acme, gw):
    """Org default round_robin, two models of two deployments each, requests alternating
    the models: each model's deployments alternate (the shared counter sent every request
    of a model to the same deployment)."""
    _deploy(acme, "duo", "duo-a")
    _deploy(acme, "duo", "duo-b")
    services.gateway_config_set(actor=ACTOR, org=acme.org, default_strategy="round_robin")
    refresh_snapshot()
    client = _client(acme)
    for _ in range(10):
        _ask(client, "ha-chat")
        _ask(client, "duo")
    called = _called(acme)
    assert Counter(called) == {
        "primary-model": 5,
        "secondary-model": 5,
        "duo-a": 5,
        "duo-b": 5,
    }
    for model in (["primary-model", "secondary-model"], ["duo-a", "duo-b"]):
        mine = [m for m in called if m in model]
        assert all(a != b for a, b in zip(mine, mine[1:], strict=False)), mine


def test_other_models_traffic_in_random_amounts_leaves_the_turns_even(acme, gw):
    _deploy(acme, "duo", "duo-a")
    _deploy(acme, "duo", "duo-b")
    services.gateway_config_set(actor=ACTOR, org=acme.org, default_strategy="round_robin")
    refresh_snapshot()
    client = _client(acme)
    draw = random.Random(8)  # one per-process counter split these 8/2
    for _ in range(10):
        for _ in range(draw.randint(0, 3)):
            _ask(client, "ha-chat")
        _ask(client, "duo")
    duo = [m for m in _called(acme) if m.startswith("duo-")]
    assert Counter(duo) == {"duo-a": 5, "duo-b": 5}


# ------------------------------------------------------------------------------ in process
def _dep(i):
    return DeploymentInfo(id=i, model="m", provider=f"p{i}", kind="openai", upstream_model=f"u{i}")


def test_a_list_ordered_as_failover_candidates_takes_no_turn():
    health = routing.DeploymentHealth()
    deps = [_dep(1), _dep(2)]
    firsts = []
    for _ in range(4):
        peeked = routing.order("round_robin", deps, health, turn=False)[0].id
        taken = routing.order("round_robin", deps, health)[0].id
        assert peeked == taken  # the candidate list shows the deployment whose turn it is
        firsts.append(taken)
    assert firsts == [1, 2, 1, 2]


def test_the_counters_are_bounded_however_many_sets_are_ordered():
    health = routing.DeploymentHealth()
    for i in range(routing.MAX_TURN_SETS + 500):
        routing.order("round_robin", [_dep(2 * i), _dep(2 * i + 1)], health)
    assert len(health._turns) == routing.MAX_TURN_SETS
