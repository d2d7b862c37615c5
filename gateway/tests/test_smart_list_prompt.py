"""A completions prompt given as a list holds several prompts (one completion each) that
one request carries to one model: it is routed by its hardest prompt, each scored as a
prompt of its own, by both classifiers (docs/smart-routing.md, "The score")."""

import random

import pytest

from core.smart import SmartPolicy
from gateway.dataplane import smart
from gateway.tests.conftest import usage_rows
from gateway.tests.test_smart_routing import (
    EASY,
    HARD,
    _smart_key,
    _tiers,
    needs_learned,
)

POLICY = SmartPolicy(tiers=("lite", "pro"), thresholds=(0.5,))
SHORT = ["hello", "world", "hi there", "thanks", "What is 2+2?", "Translate 'yes' to German."]
# As long as the development set's prompts (57 characters and more): the learned head
# scores these itself, not the rules classifier.
LONG = [
    EASY + " Please keep the answer to a single short line of text.",
    HARD,
    "Summarise this paragraph in one sentence: the meeting moved from Monday to Tuesday.",
    "Write a Python function that returns the nth Fibonacci number using memoisation.",
    "Which of these is a mammal?\nA. shark\nB. dolphin\nC. trout\nD. eel\nAnswer:",
]


def _alone(text, classifier):
    return smart.score(POLICY, {"prompt": text}, classifier)


def _listed(texts, classifier):
    return smart.score(POLICY, {"prompt": texts}, classifier)


def test_it_scores_a_list_of_greetings_as_a_greeting_not_as_lines_of_one_prompt():
    assert _listed(["hello", "world"], "rules") == max(
        _alone("hello", "rules"), _alone("world", "rules")
    )
    # joined, the two read as a two-line prompt: what a list used to score
    assert _alone("hello\nworld", "rules") > _listed(["hello", "world"], "rules") + 0.05


@pytest.mark.parametrize("seed", range(6))
def test_it_scores_any_list_as_its_hardest_prompt_with_rules(seed):
    rng = random.Random(seed)
    texts = rng.sample(SHORT + LONG, rng.randint(2, 6))
    listed = _listed(texts, "rules")
    assert listed == max(_alone(t, "rules") for t in texts)
    rng.shuffle(texts)  # the order of the prompts does not matter
    assert _listed(texts, "rules") == listed
    assert _listed(texts + texts, "rules") == listed  # nor repeats


@needs_learned
@pytest.mark.parametrize("seed", range(4))
def test_it_scores_any_list_as_its_hardest_prompt_with_the_learned_classifier(seed):
    rng = random.Random(seed)
    texts = rng.sample(SHORT + LONG, rng.randint(2, 5))
    assert _listed(texts, "learned") == max(_alone(t, "learned") for t in texts)


@needs_learned
def test_the_learned_classifier_embeds_each_long_prompt_of_a_list_itself():
    a, b = LONG[0], LONG[1]
    listed = _listed([a, b], "learned")
    assert listed == max(_alone(a, "learned"), _alone(b, "learned"))
    assert listed != _alone(a + "\n" + b, "learned")


@pytest.mark.parametrize(
    "prompt",
    [["only one"], ["only one", 3, None], [1, 2, 3], [[1, 2], [3]], [], ["same", "same"]],
)
def test_a_list_of_one_text_or_of_tokens_scores_as_before(prompt):
    texts = [p for p in prompt if isinstance(p, str)]
    expected = _alone("\n".join(dict.fromkeys(texts)), "rules")
    assert _listed(prompt, "rules") == expected


def test_a_long_list_is_judged_by_its_longest_prompts_in_bounded_work():
    many = [f"hello {i}" for i in range(5_000)]
    hard_at = 2_500
    many[hard_at] = HARD  # the longest: among those scored
    texts = smart.listed_prompts({"prompt": many})
    assert len(texts) == smart.MAX_LISTED_PROMPTS and HARD in texts
    assert _listed(many, "rules") == _alone(HARD, "rules")


def _as_specified(prompt):
    """What listed_prompts returns, read off its docstring: the distinct texts (each at its
    first place), the MAX_LISTED_PROMPTS longest (of equal lengths the first), in list
    order."""
    texts = [p for p in prompt if isinstance(p, str)]
    if len(texts) < 2:
        return None
    distinct = list(dict.fromkeys(texts))
    ranked = sorted(range(len(distinct)), key=lambda i: (-len(distinct[i]), i))
    return [distinct[i] for i in sorted(ranked[: smart.MAX_LISTED_PROMPTS])]


@pytest.mark.parametrize("seed", range(300))
def test_the_prompts_picked_from_a_list_are_the_longest_distinct_ones(seed):
    """Long lists are picked from by length before their texts are told apart (a million
    texts took a second to hash): the same texts as reading the whole list, copies of the
    longest text included."""
    rng = random.Random(seed)
    n = rng.choice([rng.randint(0, 70), rng.randint(70, 3_000)])
    letters = rng.choice(["ab", "abcdefgh", "abcdefghijklmnopqrstuvwxyz0123456789"])
    longest = rng.choice([1, 2, 3, 8])
    prompt = [
        "x" * rng.randint(0, longest) + "".join(rng.choices(letters, k=rng.randint(0, 2)))
        for _ in range(n)
    ]
    if rng.random() < 0.3:  # copies of one long text, then many short distinct ones
        prompt = ["L" * 20] * rng.randint(1, 200) + prompt
    if rng.random() < 0.2:
        prompt.insert(rng.randint(0, len(prompt)), 3)
    assert smart.listed_prompts({"prompt": prompt}) == _as_specified(prompt)


def test_chat_messages_are_not_read_as_a_list_of_prompts():
    body = {"messages": [{"role": "user", "content": "hello"}], "prompt": ["a", "b"]}
    assert smart.listed_prompts(body) is None


def test_a_list_prompt_is_routed_by_its_hardest_prompt_over_v1(acme, gw):
    import httpx

    _tiers(acme)
    easy = _alone(EASY, "rules")
    hard = _alone(HARD, "rules")
    joined_two = _alone("hello\nworld", "rules")
    cut = (max(_alone("hello", "rules"), _alone("world", "rules")) + joined_two) / 2
    assert cut < min(hard, joined_two) and easy < hard
    client = _smart_key(acme, {"thresholds": [round(cut, 6)]})
    headers = {"Authorization": f"Bearer {client.api_key}"}
    url = f"{acme.base_url}/completions"
    greetings = httpx.post(url, json={"model": "x", "prompt": ["hello", "world"]}, headers=headers)
    assert greetings.status_code == 200, greetings.text
    assert greetings.headers["x-bonito-route-tier"] == "smart-lite"
    mixed = httpx.post(url, json={"model": "x", "prompt": ["hello", HARD]}, headers=headers)
    assert mixed.status_code == 200, mixed.text
    assert mixed.headers["x-bonito-route-tier"] == "smart-pro"
    assert float(mixed.headers["x-bonito-route-score"]) == pytest.approx(hard, abs=1e-4)
    rows = [r for r in usage_rows(acme.org) if r.endpoint == "completions"]
    assert sorted(r.route_tier for r in rows) == ["smart-lite", "smart-pro"]


@needs_learned
@pytest.mark.alone  # a 0.3 s bound
def test_a_list_of_huge_prompts_is_embedded_in_the_time_of_one():
    """The tokenizer holds the GIL: 16 prompts of megabytes must not cost 16 times what one
    does (each is embedded from its ends, within one prompt's budget in all). On this
    machine: 0.09 s, against 0.02 s for one such prompt and 0.7 s for 16 embedded whole."""
    import time

    smart.score(POLICY, {"prompt": LONG[0]}, "learned")  # loaded
    many = [f"{i} " + HARD + " word" * 200_000 for i in range(16)]
    started = time.perf_counter()
    score = _listed(many, "learned")
    assert 0 <= score <= 1 and time.perf_counter() - started < 0.3
