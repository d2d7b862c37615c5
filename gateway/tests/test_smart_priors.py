"""Signals the development set cannot teach (docs/smart-routing.md, "Signals the data
cannot teach"): a code block, the conversation's depth, tool definitions and the requested
output length. Every development-set prompt is a single user message without them, so
their fitted weights are 0 and they changed no score. Each now adds a fixed prior to the
log-odds, under both classifiers, bounded, and nothing to any development-set prompt."""

import json
import math

import pytest

from core.smart import SmartPolicy
from gateway.dataplane import smart
from gateway.tests.test_smart_routing import DEV_SET, _smart_key, _tiers, needs_learned

QUESTION = "Which of these two routes from the station to the museum is the shorter one?"
TOOL = {"type": "function", "function": {"name": "route", "parameters": {"type": "object"}}}
POLICY = SmartPolicy(tiers=("lite", "pro"), thresholds=(0.5,))


def _user(text):
    return {"role": "user", "content": text}


def _logit(p):
    return math.log(p / (1 - p))


def _turns(n):
    said = [
        _user("Hi!") if i % 2 == 0 else {"role": "assistant", "content": "Hello!"}
        for i in range(n - 1)
    ]
    return [*said, _user(QUESTION)]


# (feature, the request without it, with it, log-odds added)
CASES = [
    (
        "tools",
        {"messages": [_user(QUESTION)]},
        {"messages": [_user(QUESTION)], "tools": [TOOL]},
        0.4 * math.log1p(1),
    ),
    (
        "tools",
        {"messages": [_user(QUESTION)]},
        {"messages": [_user(QUESTION)], "tools": [TOOL] * 100},
        0.4 * math.log1p(32),
    ),
    (
        "max_output",
        {"messages": [_user(QUESTION)]},
        {"messages": [_user(QUESTION)], "max_tokens": 4096},
        0.2 * (math.log1p(4096) - math.log1p(1000)),
    ),
    (
        "max_output",
        {"messages": [_user(QUESTION)]},
        {"messages": [_user(QUESTION)], "max_tokens": 800},
        0.0,
    ),
    (
        "max_output",
        {"messages": [_user(QUESTION)]},
        {"messages": [_user(QUESTION)], "max_completion_tokens": 10**6},
        0.2 * (math.log1p(32000) - math.log1p(1000)),
    ),
]


@pytest.mark.parametrize(("feature", "without", "with_", "added"), CASES)
@pytest.mark.parametrize("classifier", ["rules", pytest.param("learned", marks=needs_learned)])
def test_each_prior_adds_its_log_odds_under_both_classifiers(
    classifier, feature, without, with_, added
):
    plain, more = smart.score(POLICY, without, classifier), smart.score(POLICY, with_, classifier)
    assert _logit(more) - _logit(plain) == pytest.approx(added, abs=1e-9), feature


@pytest.mark.parametrize("classifier", ["rules", pytest.param("learned", marks=needs_learned)])
def test_the_depth_of_a_conversation_adds_its_prior(classifier, monkeypatch):
    """Eleven turns against the same eleven turns read as one: the greetings' words count
    either way; the depth adds 0.1 per unit of log(1 + turns) past one turn."""
    body = {"messages": _turns(11)}
    depth = smart.FEATURE_NAMES.index("turns")
    features = smart.features

    def as_one_turn(b, keywords=None):
        x = features(b, keywords)
        x[depth] = math.log1p(1)
        return x

    deep = smart.score(POLICY, body, classifier)
    monkeypatch.setattr(smart, "features", as_one_turn)
    flat = smart.score(POLICY, body, classifier)
    added = 0.1 * (math.log1p(11) - math.log1p(1))
    assert _logit(deep) - _logit(flat) == pytest.approx(added, abs=1e-9)


def test_a_code_block_adds_its_prior():
    body = {"messages": [_user("Why does this fail?\n```python\nprint(1\n```")]}
    fenced = smart.features(body)
    unfenced = list(fenced)
    unfenced[smart.FEATURE_NAMES.index("code_block")] = 0.0
    added = _logit(smart.score_features(fenced, smart.rules_model())) - _logit(
        smart.score_features(unfenced, smart.rules_model())
    )
    assert added == pytest.approx(0.6, abs=1e-9)


def test_no_prior_touches_a_development_set_prompt():
    if not DEV_SET.is_file():
        pytest.skip("the development set is not beside the repo")
    rows = [json.loads(line) for line in DEV_SET.read_text().splitlines() if line.strip()]
    for row in rows:
        body = {"messages": [_user(row["prompt"])]}
        x = smart.features(body)
        assert smart.prior_logit(x) == 0.0
        assert smart.chat_prior(body, x) == 0.0, row["prompt"]
        # nor the learned head's chat raise (every open prompt there is a maths problem)
        steps = smart.steps_features(body, x)
        assert not smart.chat_shaped(x, steps), row["prompt"]
        # and the head's maths weights read every GSM8K problem and no MMLU question, so
        # the documented figures are the maths weights' (GSM8K) and the main ones' (MMLU)
        assert smart.maths_shaped(x, steps) is (row["source"] == "gsm8k"), row["prompt"]


def _without_the_chat_prior(monkeypatch, body, classifier, policy=POLICY):
    monkeypatch.setattr(smart, "CHAT_LOGIT", 0.0)
    plain = smart.score(policy, body, classifier)
    monkeypatch.undo()
    return plain


# Chat messages that ask for something easy (a word of CHAT_EASY in the last message)
CHATS = [
    [_user("Write a haiku about autumn leaves.")],
    [_user("Translate 'good morning' to Spanish.")],
    [_user("Rephrase this to sound friendlier: “Send me the report now.”")],
    [_user("Give me a synonym for happy")],
    [
        _user("Write a poem about the sea"),
        {"role": "assistant", "content": "Waves..."},
        _user("Make it rhyme more"),
    ],
    # long enough for the learned head (57+ characters)
    [_user("Write a birthday message for my coworker Sarah, who loves gardening and long walks.")],
]


@pytest.mark.parametrize("messages", CHATS, ids=lambda m: m[-1]["content"][:30])
@pytest.mark.parametrize("classifier", ["rules", pytest.param("learned", marks=needs_learned)])
def test_a_chat_message_asking_for_something_easy_gets_the_chat_prior(
    monkeypatch, classifier, messages
):
    body = {"messages": messages}
    plain = _without_the_chat_prior(monkeypatch, body, classifier)
    assert _logit(smart.score(POLICY, body, classifier)) - _logit(plain) == pytest.approx(
        smart.CHAT_LOGIT, abs=1e-9
    )


NOT_CHAT = [
    [_user("Tom buys 3 apples and 4 pears. How many fruits?")],  # two numbers: a word problem
    [_user("Tom buys three apples and four pears. How many fruits does he have now?")],
    [_user("Translate 3 sentences into 2 languages")],  # two numbers, an easy word
    [_user("Which planet is largest?\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth")],
    [_user("Please summarize this and tell me what you think of it: " + "a long story " * 20)],
    # short, but nothing it asks for is recognised as easy: the score is the request's own
    [_user("Implement a red-black tree in C with deletion")],
    [_user("Design a distributed rate limiter for a multi-region API")],
    [_user("Is P equal to NP?")],
    [_user("Show that the square root of two is irrational")],
    [_user("What is the best treatment for refractory status epilepticus in a child?")],
    [_user("List the conditions for a Markov chain to have a unique stationary distribution.")],
    [_user("Hi! Implement a B-tree in C with insertion and deletion.")],
    [_user("Thanks! Now give me a formal proof of the pumping lemma for context-free languages.")],
    [_user("Give a short proof that there are infinitely many primes.")],
    [_user("Write a simple compiler for arithmetic expressions in Rust.")],
    # an easy word beside a reasoning or code keyword, or a word of CHAT_HARD
    [_user("Explain why the sky is blue, briefly.")],
    [_user("Write a haiku-generating function in Python")],
    [_user("Summarize the proof of Fermat's last theorem.")],
    [_user("Translate this SQL query to MongoDB.")],
    # an easy request earlier in the conversation does not make the last one easy
    [
        _user("translate 'hi' to French"),
        {"role": "assistant", "content": "salut"},
        _user("Show that every planar graph is 5-colorable."),
    ],
]


@pytest.mark.parametrize("messages", NOT_CHAT, ids=lambda m: m[-1]["content"][:30])
@pytest.mark.parametrize("classifier", ["rules", pytest.param("learned", marks=needs_learned)])
def test_other_requests_get_no_chat_prior(monkeypatch, classifier, messages):
    body = {"messages": messages}
    assert smart.chat_prior(body, smart.features(body)) == 0.0
    plain = _without_the_chat_prior(monkeypatch, body, classifier)
    assert smart.score(POLICY, body, classifier) == plain


def test_the_chat_prior_never_raises_a_score():
    """However many cue words a short request holds, the prior is CHAT_LOGIT or nothing:
    "hello why why why ..." is not sent up by it."""
    for text in ["hello " + "why " * 30, "translate " + "algorithm prove " * 20, "haiku " * 9]:
        body = {"messages": [_user(text)]}
        assert smart.chat_prior(body, smart.features(body)) in (0.0, smart.CHAT_LOGIT)


def _own(**keywords):
    return SmartPolicy(tiers=("lite", "pro"), thresholds=(0.5,), keywords=keywords)


@pytest.mark.parametrize("classifier", ["rules", pytest.param("learned", marks=needs_learned)])
def test_the_chat_prior_reads_the_policys_own_keyword_lists(monkeypatch, classifier):
    """The policy's own simple words mark a request easy (the built-in simple list, with
    "what is" and "list", does not: "What is the Galois group of ..."), and its own
    reasoning or code words withhold the prior, under both classifiers (the learned head
    reads the built-in lists it was trained on; the prior reads the policy's)."""
    text = "Tell me about the fjords of Norway, their glaciers and the best month to visit."
    body = {"messages": [_user(text)]}
    assert smart.chat_prior(body, smart.features(body)) == 0.0  # nothing easy recognised
    simple = _own(simple=("fjords",))
    assert smart.chat_prior(body, smart.features(body, simple.keywords), simple.keywords) == (
        smart.CHAT_LOGIT
    )
    plain = _without_the_chat_prior(monkeypatch, body, classifier, simple)
    lowered = smart.score(simple, body, classifier)
    assert _logit(lowered) - _logit(plain) == pytest.approx(smart.CHAT_LOGIT, abs=1e-9)

    body = {"messages": [_user("Translate " + text)]}
    assert smart.chat_prior(body, smart.features(body)) == smart.CHAT_LOGIT
    mine = _own(reasoning=("fjords",))
    assert smart.chat_prior(body, smart.features(body, mine.keywords), mine.keywords) == 0.0
    if classifier == "learned":  # the head's own score is the same: only the prior differs
        assert _logit(smart.score(mine, body, classifier)) - _logit(
            smart.score(POLICY, body, classifier)
        ) == pytest.approx(-smart.CHAT_LOGIT, abs=1e-9)


def test_through_v1_tool_definitions_move_a_request_up_a_tier(acme, gw):
    _tiers(acme)
    plain = smart.score(POLICY, {"messages": [_user(QUESTION)]}, "rules")
    tooled = smart.score(POLICY, {"messages": [_user(QUESTION)], "tools": [TOOL] * 5}, "rules")
    client = _smart_key(acme, {"thresholds": [round((plain + tooled) / 2, 6)]})
    asked = client.chat.completions.with_raw_response.create(
        model="auto", messages=[_user(QUESTION)]
    )
    assert asked.headers["x-bonito-route-tier"] == "smart-lite"
    tooled_response = client.chat.completions.with_raw_response.create(
        model="auto", messages=[_user(QUESTION)], tools=[TOOL] * 5
    )
    assert tooled_response.headers["x-bonito-route-tier"] == "smart-pro"
    assert float(tooled_response.headers["x-bonito-route-score"]) == pytest.approx(tooled, abs=1e-4)


# The learned head's chat raise (smart_learned.json's chat_raise; smart.chat_shaped): an open
# request that is not a word problem (no quantity, or one in under 250 characters), long
# enough for the head (57+ characters); not a word problem nor a multiple-choice question.
RAISED = [
    "Give a short proof that there are infinitely many primes, step by step please.",
    "What are the absolute contraindications for thrombolysis in acute ischemic stroke?",
    "Suggest 3 board games for a family night with young kids who like drawing things.",
]
NOT_RAISED = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
    "clips in May. How many clips did Natalia sell altogether in April and May?",
    "Which planet is largest?\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth and the rest of them",
]


@needs_learned
@pytest.mark.parametrize(
    ("text", "raised"), [(t, True) for t in RAISED] + [(t, False) for t in NOT_RAISED]
)
def test_the_learned_chat_raise_lifts_chat_shaped_requests_only(monkeypatch, text, raised):
    from core import smart_learned

    body = {"messages": [_user(text)]}
    x = smart.features(body)
    assert smart.chat_shaped(x, smart.steps_features(body, x)) is raised
    with_raise = smart.score(POLICY, body, "learned")
    monkeypatch.setitem(smart_learned.model(), "chat_raise", 0.0)
    plain = smart.score(POLICY, body, "learned")
    added = smart_learned.model.__wrapped__()["chat_raise"] if raised else 0.0
    assert _logit(with_raise) - _logit(plain) == pytest.approx(added, abs=1e-9)


# The learned head's maths weights (smart_learned.json's "maths"; smart.maths_shaped): they
# read an open request that is not chat-shaped, carried to the main weights' scale; every
# other request is read by the main weights alone.
@needs_learned
@pytest.mark.parametrize(
    ("text", "maths"),
    [(t, False) for t in RAISED] + [(NOT_RAISED[0], True), (NOT_RAISED[1], False)],
)
def test_the_maths_weights_read_maths_shaped_requests_only(monkeypatch, text, maths):
    import numpy as np

    from core import smart_learned

    body = {"messages": [_user(text)]}
    x = smart.features(body)
    steps = smart.steps_features(body, x)
    assert smart.maths_shaped(x, steps) is maths
    got = smart.score(POLICY, body, "learned")
    head = smart_learned.model()
    monkeypatch.delitem(head, "maths")
    plain = smart.score(POLICY, body, "learned")  # the main weights alone
    monkeypatch.undo()
    if not maths:
        assert got == plain
        return
    # Independently of logit(): the two weight vectors' log-odds of the same input, the
    # maths one placed among its knots and read on the main scale
    read = smart_learned.features(
        text,
        smart.within_range(x, smart.rules_model()),
        np.clip(steps, head["steps_low_array"], head["steps_high_array"]),
    )
    xs = (read - np.asarray(head["mean"])) / np.asarray(head["scale"])
    z_main = head["bias"] + float(xs @ np.asarray(head["weights"]))
    m = head["maths"]
    z_maths = m["bias"] + float(xs @ np.asarray(m["weights"]))
    k = int(np.searchsorted(m["from"], z_maths))
    assert 0 < k < len(m["from"])  # within the knots, for this problem
    lo, hi = m["from"][k - 1], m["from"][k]
    carried = m["to"][k - 1] + (z_maths - lo) / (hi - lo) * (m["to"][k] - m["to"][k - 1])
    offset = _logit(plain) - z_main  # the priors, the same on either weights
    assert _logit(got) == pytest.approx(carried + offset, abs=1e-9)
    assert abs(_logit(got) - _logit(plain)) > 1e-3  # the maths weights did move it


# A request the maths weights read holds two quantities or more (smart_steps counts digits
# of any script), so it is no chat message of "at most one number": the chat prior, whose
# count of numbers was of ASCII digits only, gave "１２ apples and ３４ pears" its -0.4 and
# the maths weights together.
@pytest.mark.parametrize(
    "text",
    [
        "Translate to French please: I bought 12 apples and 34 pears at the market today.",
        "Translate to French please: I bought １２ apples and ３４ pears at the market today.",
        "Translate to French please: I bought ١٢ apples and ٣٤ pears at the market today.",
        "Translate to French please: I bought १२ apples and ३४ pears at the market today.",
    ],
    ids=["ascii", "fullwidth", "arabic-indic", "devanagari"],
)
def test_a_maths_shaped_request_gets_no_chat_prior_whatever_its_digits(text):
    body = {"messages": [_user(text)]}
    x = smart.features(body)
    assert smart.maths_shaped(x, smart.steps_features(body, x))
    assert smart.chat_prior(body, x) == 0.0
    # and one number of any script stays "at most one number"
    one = {"messages": [_user(text.split(" and ")[0] + ".")]}
    assert smart.chat_prior(one, smart.features(one)) == smart.CHAT_LOGIT


def _maths_flags(monkeypatch, body):
    from core import smart_learned

    seen = []
    real = smart_learned.score

    def spy(text, rules, steps, offset=0.0, maths=False):
        seen.append(maths)
        return real(text, rules, steps, offset, maths)

    monkeypatch.setattr(smart_learned, "score", spy)
    smart.score(POLICY, body, "learned")
    return seen


# Every way a request reaches the learned classifier passes the maths flag of the text it
# scores: a chat, a completions prompt (one, or a list: each prompt its own), Anthropic's
# Messages and the Responses API (both scored as their chat translation), the system
# prompt and the instructions left out as everywhere.
@needs_learned
def test_every_entry_point_passes_the_maths_flag_of_what_it_scores(monkeypatch):
    from gateway.dataplane import anthropic_api, responses_api

    problem, chat = NOT_RAISED[0], RAISED[2]
    system = "Answer in 3 bullet points of at most 12 words, in 2 languages."
    anthropic = {
        "model": "m",
        "max_tokens": 64,
        "system": system,
        "messages": [{"role": "user", "content": [{"type": "text", "text": chat}]}],
    }
    responses = {"model": "m", "instructions": system, "input": problem}
    cases = [
        ({"messages": [_user(problem)]}, [True]),
        ({"messages": [{"role": "system", "content": system}, _user(chat)]}, [False]),
        ({"prompt": problem}, [True]),
        ({"prompt": [chat, problem]}, [False, True]),
        ({"messages": [_user(NOT_RAISED[1])]}, [False]),  # multiple choice
        (anthropic_api.to_chat(anthropic)[0], [False]),
        (responses_api.routed(responses, responses_api.to_chat(responses)), [True]),
    ]
    for body, flags in cases:
        assert _maths_flags(monkeypatch, body) == flags, body
