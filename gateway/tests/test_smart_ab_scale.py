"""An A/B arm of the other classifier cuts its own scores (docs/smart-routing.md, "A/B arms
on their own scale"): at the policy's slider position read from that classifier's
quantiles, or, for thresholds set by hand or by a re-calibration, at the same share of the
development set's prompts. The `strong` arm still goes straight to the top tier."""

import dataclasses
import random

import orjson
import pytest

from core import smart as smart_settings
from core.smart import on_scale
from gateway.dataplane import routing, smart
from gateway.dataplane.snapshot import OrgInfo, RoutingPolicyInfo, org_from_dict, org_to_dict
from gateway.tests.conftest import usage_rows
from gateway.tests.test_smart_routing import HARD, _ask, _chat, _smart_key, _tiers, needs_learned

RULES_Q = tuple(smart_settings.quantiles("rules"))
LEARNED_Q = tuple(smart_settings.quantiles("learned"))


def _served(spec, tiers=("lite", "pro")) -> smart_settings.SmartPolicy:
    return smart_settings.resolve(spec, list(tiers))


def test_the_slider_cuts_each_arm_at_its_own_classifier_s_quantiles():
    # the figures of the outside check: 0.8, two tiers; 0, three tiers
    policy = _served({"aggressiveness": 0.8, "ab": {"share": 0.2, "classifier": "learned"}})
    assert policy.arm_thresholds == {"rules": (0.165573,), "learned": (0.178682,)}
    policy = _served(
        {"aggressiveness": 0.0, "ab": {"share": 0.2, "classifier": "learned"}},
        ("lite", "mid", "pro"),
    )
    assert policy.arm_thresholds == {
        "rules": (0.096241, 0.102133),
        "learned": (0.076886, 0.086164),
    }
    # the other way round: a learned policy's rules arm
    policy = _served(
        {
            "classifier": "learned",
            "aggressiveness": 0.8,
            "ab": {"share": 0.2, "classifier": "rules"},
        }
    )
    assert policy.arm_thresholds == {"learned": (0.178682,), "rules": (0.165573,)}
    for a in (0.0, 0.3, 0.5, 0.77, 1.0):  # exactly the slider's thresholds of each classifier
        policy = _served(
            {"aggressiveness": a, "ab": {"share": 0.5, "classifier": "learned"}},
            ("t1", "t2", "t3", "t4"),
        )
        for classifier in ("rules", "learned"):
            want = smart_settings.thresholds_for(a, 4, classifier)
            assert policy.arm_thresholds[classifier] == want


def test_thresholds_by_hand_move_to_the_arm_s_scale_by_share():
    # A threshold at the rules median cuts learned scores at the learned median; one half
    # way between two percentiles, half way between the learned ones; past the last
    # percentile, as far on towards 1; below the first, as far down towards 0.
    mid = (RULES_Q[50] + RULES_Q[51]) / 2
    high = RULES_Q[100] + (1 - RULES_Q[100]) / 4
    low = RULES_Q[0] / 2
    policy = _served(
        {
            "thresholds": [low, RULES_Q[50], mid, high],
            "ab": {"share": 0.1, "classifier": "learned"},
        },
        ("t1", "t2", "t3", "t4", "t5"),
    )
    assert policy.arm_thresholds["rules"] == (low, RULES_Q[50], mid, high)
    assert policy.arm_thresholds["learned"] == (
        round(LEARNED_Q[0] / 2, 6),
        LEARNED_Q[50],
        round((LEARNED_Q[50] + LEARNED_Q[51]) / 2, 6),
        round(LEARNED_Q[100] + (1 - LEARNED_Q[100]) / 4, 6),
    )
    # and back: the map from learned to rules is its inverse (to the 6 decimals kept)
    back = on_scale(policy.arm_thresholds["learned"], "learned", "rules")
    assert back == pytest.approx((low, RULES_Q[50], mid, high), abs=2e-6)


def test_a_request_s_tier_depends_on_the_arm_s_own_cut():
    """The same score 0.175 lies above the rules cut at 0.8 (0.165573) and below the learned
    one (0.178682): the rules arm sends it up, the learned arm keeps it on the cheap tier
    (before, both arms cut at 0.165573)."""
    policy = _served({"aggressiveness": 0.8, "ab": {"share": 0.5, "classifier": "learned"}})
    assert smart.tier_index(policy, "rules", 0.175) == 1
    assert smart.tier_index(policy, "learned", 0.175) == 0
    assert smart.tier_index(policy, "learned", 0.178682) == 1
    # the strong arm is not cut at all: the top tier
    strong = _served({"aggressiveness": 0.8, "ab": {"share": 0.5, "classifier": "strong"}})
    assert strong.arm_thresholds == {"rules": (0.165573,)}
    assert smart.choose(strong, _chat("hi"), 0.1) == ("strong", None, 1)
    # a policy not from a snapshot (the bench, a test) is cut the same way
    plain = smart_settings.resolve(
        {"aggressiveness": 0.8, "ab": {"share": 0.5, "classifier": "learned"}}, ["lite", "pro"]
    )
    assert smart.tier_index(plain, "learned", 0.175) == 0


def test_rules_standing_in_for_learned_cuts_at_the_rules_scale(monkeypatch):
    """Where the learned extra is missing, its arm is scored by rules: cut by rules' own."""
    import sys

    policy = _served({"classifier": "learned", "aggressiveness": 0.8})
    assert policy.arm_thresholds == {"learned": (0.178682,), "rules": (0.165573,)}
    monkeypatch.setitem(sys.modules, "numpy", None)
    smart.learned_ready.cache_clear()
    try:
        body = _chat("Could you tell me what time the museum in the old town opens on Sunday?")
        arm, score, tier = smart.choose(policy, body, 0.9)
        assert arm == "rules" and tier == (0 if score < 0.165573 else 1)
    finally:
        smart.learned_ready.cache_clear()


def test_the_snapshot_serves_the_cuts_and_its_documents_carry_only_the_settings():
    plain = smart_settings.resolve(
        {"thresholds": [0.3], "ab": {"share": 0.25, "classifier": "learned"}}, ["lite", "pro"]
    )
    org = OrgInfo(
        id=1,
        slug="a",
        routing_policies={"s": RoutingPolicyInfo("s", "smart", ("lite", "pro"), smart=plain)},
        smart=plain,
    )
    for served in (org.smart, org.routing_policies["s"].smart):
        assert served == plain
        assert served.arm_thresholds["learned"] == on_scale((0.3,), "rules", "learned")
    document = org_to_dict(org)
    assert "arm_thresholds" not in document["smart"]
    assert "arm_thresholds" not in document["routing_policies"]["s"]["smart"]
    again = org_from_dict(orjson.loads(orjson.dumps(document)))
    assert again == org and again.smart.arm_thresholds == org.smart.arm_thresholds
    # a copy with other thresholds works its cuts out afresh
    moved = dataclasses.replace(org.smart, thresholds=(0.2,))
    assert moved.arm_thresholds["learned"] == on_scale((0.2,), "rules", "learned")


# HARD and a question more: the head of 2026-12-04 (its steps features) scores HARD itself
# 0.36, where the learned scale lies on the rules one (0.361 for 0.36), so no hand-set
# threshold tells the arms apart on it as 0.4 did with the head before (0.37 against 0.385).
# The head with the steps weights kept >= 0 (2026-12-04, later) scores HARDER 0.503, where
# the learned scale lies a little under the rules one (0.501 for 0.505), so the test's cut
# moved from 0.42 to 0.505. The head's maths weights (2026-12-05) read it, a word problem,
# as 0.456, where the learned scale lies above the rules one; two more questions make
# HARDEST, 0.568 by learned (0.333 by rules), where the learned scale lies under the rules
# one (0.557 for 0.58): the test's cut moved to 0.58.
HARDER = (
    HARD + " Then find the average speed of the second train if it stops for 15 minutes halfway."
)
HARDEST = (
    HARDER
    + " If the first train instead leaves 30 minutes earlier, how much sooner is it caught?"
    + " Suppose fuel rises by 20% after the first 100 miles; what is the new total cost?"
)
CUT = 0.58


@needs_learned
def test_through_v1_each_arm_routes_one_prompt_by_its_own_cut(acme, gw):
    """A rules policy with the threshold CUT (0.58) set by hand and a learned A/B arm:
    HARDEST scores 0.33 by rules (under 0.58: the cheap tier) and 0.568 by learned, which is
    above 0.58 moved to the learned scale (0.557: both between the same two percentiles, as
    far along): the top tier. Cut at 0.58 itself, the learned arm sent it to the cheap
    tier."""
    rules_score = smart.score(_served({}), _chat(HARDEST), "rules")
    learned_score = smart.score(_served({}), _chat(HARDEST), "learned")
    [cut] = on_scale((CUT,), "rules", "learned")
    # CUT lies between two rules percentiles; the cut as far between learned's same two
    k = max(i for i in range(100) if RULES_Q[i] <= CUT)
    part = (CUT - RULES_Q[k]) / (RULES_Q[k + 1] - RULES_Q[k])
    assert cut == round(LEARNED_Q[k] + (LEARNED_Q[k + 1] - LEARNED_Q[k]) * part, 6)
    assert rules_score < CUT and cut <= learned_score < CUT  # the case this test is about
    _tiers(acme)
    client = _smart_key(acme, {"thresholds": [CUT], "ab": {"share": 0.5, "classifier": "learned"}})
    gw.health = routing.DeploymentHealth(rng=random.Random(3))
    seen = {}
    for _ in range(16):
        r = _ask(client, HARDEST)
        seen.setdefault(r.headers["x-bonito-route-classifier"], set()).add(
            r.headers["x-bonito-route-tier"]
        )
    assert seen == {"rules": {"smart-lite"}, "learned": {"smart-pro"}}
    rows = [r for r in usage_rows(acme.org) if r.endpoint == "chat"]
    assert {(r.route_classifier, r.route_tier) for r in rows} == {
        ("rules", "smart-lite"),
        ("learned", "smart-pro"),
    }
