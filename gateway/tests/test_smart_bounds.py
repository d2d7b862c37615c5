"""The rules classifier's cost is bounded by the body's shape, not only its text: a
conversation of hundreds of thousands of messages, or a message of as many content parts,
is read at its first and last MAX_READ_ITEMS / 2 (300,000 empty messages took 180 ms of the
event loop, every request on that worker waiting). Its depth still counts every message."""

import math

from core.smart import SmartPolicy
from gateway.dataplane import smart

HALF = smart.MAX_READ_ITEMS // 2
POLICY = SmartPolicy(tiers=("lite", "pro"), thresholds=(0.5,))
TURNS = smart.FEATURE_NAMES.index("turns")


def _user(text):
    return {"role": "user", "content": text}


def test_a_long_conversation_is_read_at_its_ends_and_counted_whole():
    said = [_user(f"message {i} about {'maths' if i % 7 else 'why'}") for i in range(5_000)]
    ends = said[:HALF] + said[-HALF:]
    whole, read = smart.features({"messages": said}), smart.features({"messages": ends})
    assert whole[TURNS] == math.log1p(5_000) and read[TURNS] == math.log1p(2 * HALF)
    assert whole[:TURNS] + whole[TURNS + 1 :] == read[:TURNS] + read[TURNS + 1 :]
    # instructions are still left out of the depth, within the ends
    instructed = [{"role": "system", "content": "be brief"}, *said]
    assert smart.features({"messages": instructed})[TURNS] == math.log1p(5_000)


def test_a_message_of_many_parts_is_read_at_its_ends():
    parts = [{"type": "text", "text": f"part {i}"} for i in range(10_000)]
    ends = parts[:HALF] + parts[-HALF:]
    assert smart.features({"messages": [_user(parts)]}) == smart.features(
        {"messages": [_user(ends)]}
    )


def test_a_conversation_within_the_bound_is_read_whole():
    said = [_user(f"line {i}") for i in range(smart.MAX_READ_ITEMS)]
    assert smart.prompt_parts({"messages": said})[0] == [m["content"] for m in said]


def test_an_absurd_body_scores_like_its_ends_under_both_paths():
    body = {"messages": [_user("")] * 300_000}
    ends = {"messages": [_user("")] * (2 * HALF)}
    x_body, x_ends = smart.features(body), smart.features(ends)
    assert x_body[TURNS] > x_ends[TURNS]
    # the depth's prior is capped at 50 turns: past it, both score the same
    assert smart.score(POLICY, body, "rules") == smart.score(POLICY, ends, "rules")
