"""A prompt's shape in the request is not its difficulty: the turns of a conversation, an
app's trailing newline or a message sent in two text parts are not "lines" of a long
prompt. The rules feature counted every newline of the joined text, so every turn after
the first, or a question followed by newlines, went up a tier (docs/smart-routing.md,
*The score*). Line breaks inside a message still count."""

import math

import pytest

from gateway.dataplane import smart
from gateway.tests.test_smart_routing import _smart_key, _tiers

LINES = smart.FEATURE_NAMES.index("lines")
QUESTIONS = [
    "What is the capital of France?",
    "Who wrote Hamlet?",
    "How many legs does a spider have?",
    "Translate 'good morning' into Spanish.",
]


def _user(text):
    return {"role": "user", "content": text}


def _shapes(question):
    """The same question sent the ways apps send it."""
    return {
        "trailing newline": [_user(question + "\n")],
        "newlines around it": [_user("\n\n" + question + "\n\n\n\n\n\n")],
        "third turn": [
            _user("Hi!"),
            {"role": "assistant", "content": "Hello! How can I help?\n"},
            _user(question),
        ],
        "two text parts": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": question.split(" ", 1)[0] + "\n"},
                    {"type": "text", "text": question.split(" ", 1)[1]},
                ],
            }
        ],
    }


@pytest.mark.parametrize("question", QUESTIONS)
def test_turns_parts_and_newlines_around_a_text_are_not_lines(question):
    for shape, messages in _shapes(question).items():
        assert smart.features({"messages": messages})[LINES] == 0.0, shape


def test_line_breaks_inside_a_message_still_count():
    one = smart.features({"messages": [_user("Solve:\nx + 1 = 2\ny = 2x")]})[LINES]
    assert one == smart.features({"prompt": "Solve:\nx + 1 = 2\ny = 2x\n"})[LINES] > 0
    # in any turn, counted once each whatever joins the turns
    turns = [_user("Solve:\nx + 1 = 2"), {"role": "assistant", "content": "x = 1"}, _user("y?")]
    assert smart.line_breaks(smart.prompt_parts({"messages": turns})[0]) == 1


def test_the_development_set_s_prompts_read_as_they_were_trained():
    """The committed models were fitted on single-message prompts with no newline around
    them: for such a prompt the feature is the newline count it always was."""
    text = "A question?\nA. one\nB. two\n\nC. three\nAnswer:"
    assert smart.line_breaks([text]) == text.count("\n") == 5


def test_a_long_text_is_read_from_its_ends():
    text = "\n" * 10 + ("word " * 5_000 + "\n") * 20 + "\n" * 10
    n = smart.line_breaks([text])
    assert 0 < n < text.count("\n") - 19  # the newlines around it and the middle unread


def test_a_conversation_of_easy_turns_stays_on_the_cheap_tier_over_v1(acme, gw):
    """Through /v1 with an rt- key cutting at 0.2: each easy question, alone or as the third
    turn of a chat or with newlines around it, goes to the cheap tier (they scored 0.13 to
    0.40 so sent, 0.08 to 0.13 alone)."""
    _tiers(acme)
    client = _smart_key(acme, {"thresholds": [0.2]})
    for question in QUESTIONS:
        alone = client.chat.completions.with_raw_response.create(
            model="auto", messages=[_user(question)]
        )
        assert alone.headers["x-bonito-route-tier"] == "smart-lite", question
        for shape, messages in _shapes(question).items():
            response = client.chat.completions.with_raw_response.create(
                model="auto", messages=messages
            )
            assert response.headers["x-bonito-route-tier"] == "smart-lite", (question, shape)
            # close to the question alone: the greeting turn's words and the conversation's
            # depth (gateway.dataplane.smart.PRIORS) only
            shift = float(response.headers["x-bonito-route-score"]) - float(
                alone.headers["x-bonito-route-score"]
            )
            assert abs(shift) < 0.05, (question, shape, shift)


@pytest.mark.parametrize("after", [" ", "  ", " \n", "\t", "\n" * 6, " \r\n "])
def test_spaces_after_a_text_change_no_feature(after):
    """ "France? " read as one sentence more (". " and "? " count them) and a longer prompt:
    0.129 against 0.103, past the default slider's cut with two spaces."""
    question = "What is the capital of France?"
    plain = smart.features({"messages": [_user(question)]})
    assert smart.features({"messages": [_user(question + after)]}) == plain
    parts = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": question + after}]}]
    }
    assert smart.features(parts) == plain


ANSWER = "Photosynthesis turns light into chemical energy in the chloroplasts. " * 12


@pytest.mark.parametrize("classifier", ["rules", "learned"])
def test_the_assistant_s_replies_and_tool_results_are_not_scored(classifier):
    """The models' own output is not the difficulty of the ask: read, a long answer made
    the "thanks!" after it score 0.40, a long prompt's score. Only the depth counts."""
    from gateway.tests.test_smart_routing import _learned_installed

    if classifier == "learned" and not _learned_installed():
        pytest.skip("the smart extra is not installed")
    policy = smart.SmartPolicy(tiers=("lite", "pro"), thresholds=(0.5,))
    asked = [_user("Explain photosynthesis."), _user("thanks!")]
    replied = [
        _user("Explain photosynthesis."),
        {"role": "assistant", "content": ANSWER},
        {"role": "tool", "tool_call_id": "t1", "content": ANSWER},
        _user("thanks!"),
    ]
    x_asked, x_replied = smart.features({"messages": asked}), smart.features({"messages": replied})
    depth = smart.FEATURE_NAMES.index("turns")
    assert x_replied[:depth] + x_replied[depth + 1 :] == x_asked[:depth] + x_asked[depth + 1 :]
    assert x_replied[depth] == math.log1p(4) and x_asked[depth] == math.log1p(2)
    assert smart.score(policy, {"messages": replied}, classifier) < 0.2


def test_a_conversation_of_the_assistant_alone_is_still_scored():
    """No user message (an app continuing the assistant's text): its messages are read."""
    body = {"messages": [{"role": "assistant", "content": "Solve 2x + 3 = 7 step by step."}]}
    assert smart.prompt_text(body)[0] == "Solve 2x + 3 = 7 step by step."
