"""Chat requests at the default slider (docs/smart-routing.md, "Chat messages"): requests
an app might send, written by hand for these checks (not from any benchmark) by writers who
had not seen the classifiers. fixtures/chat_requests.jsonl: 120, 70 plainly easy and 50
plainly hard; fixtures/chat_short_requests.jsonl: 160 short ones (under 240 characters),
half hard, in a design set and a held-out set scored once the prior was fixed, and 55
hard ones an outside check wrote to open like easy requests after reading the prior, and
100 more written blind with hard and easy requests opening alike. The bounds
below hold the figures measured then, so a change to the classifiers that sends easy chat
up again, or hard requests down, fails here."""

import json
from pathlib import Path

import pytest

from core.smart import SmartPolicy, thresholds_for
from gateway.dataplane import smart
from gateway.tests.test_smart_routing import needs_learned

FIXTURES = Path(__file__).parent / "fixtures"
ROWS = [json.loads(line) for line in (FIXTURES / "chat_requests.jsonl").read_text().splitlines()]
SHORT = [
    json.loads(line) for line in (FIXTURES / "chat_short_requests.jsonl").read_text().splitlines()
]
DEFAULT = SmartPolicy(tiers=("lite", "pro"), thresholds=(0.5,))  # the score alone is used


def _to_top(classifier, label, rows=ROWS):
    (cut,) = thresholds_for(0.5, 2, classifier)  # the default slider's
    return sum(
        smart.score(DEFAULT, {"messages": [{"role": "user", "content": r["prompt"]}]}, classifier)
        > cut
        for r in rows
        if r["label"] == label
    )


def test_the_sets_are_as_described():
    assert [sum(r["label"] == k for r in ROWS) for k in ("easy", "hard")] == [70, 50]
    for name in ("design", "held-out"):
        rows = [r for r in SHORT if r["set"] == name]
        assert [sum(r["label"] == k for r in rows) for k in ("easy", "hard")] == [40, 40]
        assert max(len(r["prompt"]) for r in rows) < 240
    aimed = [r for r in SHORT if r["set"] == "aimed"]
    assert len(aimed) == 55 and {r["label"] for r in aimed} == {"hard"}
    natural = [r for r in SHORT if r["set"] == "natural"]
    assert [sum(r["label"] == k for r in natural) for k in ("easy", "hard")] == [50, 50]
    assert len(SHORT) == 315


# (classifier, easy requests sent to the top tier at most, hard ones at least): measured
# 20 of 70 and 50 of 50 under rules, 9 and 47 under learned (without the chat prior: 33 and
# 50, 15 and 47). Learned with the head before its steps features (2026-12-03): 12 and 46
# (without the prior 23 and 46). Learned with the steps features (2026-12-04): 9 and 47;
# with their weights kept >= 0 and the chat raise (2026-12-04, later): 10 and 47 (below).
@pytest.mark.parametrize(
    ("classifier", "easy_up", "hard_up"),
    [("rules", 20, 50), pytest.param("learned", 10, 47, marks=needs_learned)],
)
def test_easy_chat_goes_to_the_cheap_tier_and_hard_requests_to_the_top(
    classifier, easy_up, hard_up
):
    assert _to_top(classifier, "easy") <= easy_up
    assert _to_top(classifier, "hard") >= hard_up


# (set, classifier, easy sent up at most, hard at least), of 40 and 40 (aimed: 55 hard;
# natural: 50 and 50): measured with the prior as it is. Without a prior: 11 and 37, 10 and
# 38, 43, 30 and 49 under rules; 5 and 33, 4 and 27, 30, 21 and 38 under learned. With the
# first prior (every short request lowered unless it held a reasoning or code keyword): 2
# and 18, 0 and 22, 14, 2 and 37; 1 and 22, 0 and 19, 14, 1 and 35 (learned: the head of
# then).
# Learned's bounds were 2 and 33, 3 and 27, 34, 8 and 40 with the head before its steps
# features (2026-12-03; without a prior 4 and 34, 4 and 27, 34, 18 and 40). The head of
# 2026-12-04 reads the steps features (core/smart_steps.py) of every open prompt and learned
# their weights from maths problems only: a short request without numbers reads as a
# problem of few steps, one with a number as more. Measured once with it, they moved by 1
# to 4 requests, each crossing the cut from near it: the design set sends 1 hard request
# more down (33 -> 32), the aimed set 4 (34 -> 30: thrombolysis contraindications, a range
# minimum query structure, bounded monotone sequences, a rotation's eigenvalues), the
# natural set 2 (40 -> 38) and 3 easy ones more up (8 -> 11: "list 5 fun team building
# activities", a book for a flight, define 'procrastination'); the 120 requests gain
# (12 -> 9 easy up, 46 -> 47 hard). The bounds below are those measured figures, loosened
# by exactly that (docs/smart-routing.md, "The steps features").
# The head of 2026-12-04, later (the steps weights kept >= 0, "nonneg-steps", with the chat
# raise set on a chat set written blind: docs/smart-routing.md, "The steps weights kept >=
# 0") sends more hard requests up and one easy request more in three sets: design 2 and 32
# -> 2 and 35, held-out 3 and 27 -> 4 and 28, aimed 30 -> 34, natural 11 and 38 -> 12 and
# 39, the 120 requests 9 and 47 -> 10 and 47 (above). How well the score orders hard above
# easy (AUC) does not fall: 0.935 -> 0.938 (120), 0.907 -> 0.929 (design), 0.766 -> 0.774
# (held-out), 0.842 -> 0.839 (natural), 0.863 -> 0.862 (the blind set), 0.861 -> 0.866 all
# together: the cut sits at another point of about the same curve. The bounds below are the
# new head's figures.
@pytest.mark.parametrize(
    ("name", "classifier", "easy_up", "hard_up"),
    [
        ("design", "rules", 6, 37),
        ("held-out", "rules", 8, 38),
        ("aimed", "rules", 0, 43),
        ("natural", "rules", 19, 48),
        pytest.param("design", "learned", 2, 35, marks=needs_learned),
        pytest.param("held-out", "learned", 4, 28, marks=needs_learned),
        pytest.param("aimed", "learned", 0, 34, marks=needs_learned),
        pytest.param("natural", "learned", 12, 39, marks=needs_learned),
    ],
)
def test_short_hard_requests_keep_the_top_tier_and_short_easy_ones_go_down(
    name, classifier, easy_up, hard_up
):
    rows = [r for r in SHORT if r["set"] == name]
    assert _to_top(classifier, "easy", rows) <= easy_up
    assert _to_top(classifier, "hard", rows) >= hard_up
