"""Smart routing of a /v1/responses request only a Responses API can serve (a file part,
an image by file_id, a conversation, a prompt template, a tool or tool choice chat cannot
carry, an input item of another type): it scores what the same request without that
feature scores (its text, end user, output cap and tools), not an empty prompt's score
(the cheapest tier), keeps its end user's A/B arm, and still reaches the provider as sent."""

import random

import httpx
import pytest

from gateway import services
from gateway.dataplane import responses_api, routing, smart
from gateway.dataplane.errors import GatewayError
from gateway.tests.conftest import ACTOR, openai_provider, refresh_snapshot
from gateway.tests.test_smart_routing import _smart_key

ASK = (
    "Prove step by step why the integral of x^2 from 0 to 3 equals 9, then derive the "
    "general formula for the integral of x^n and explain each step."
)
FUNCTION = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}


def _base(**extra):
    """A request chat can carry: the question, an end user, a large output cap."""
    return {
        "model": "x",
        "user": "u1",
        "max_output_tokens": 8000,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": ASK}]}],
        **extra,
    }


def _with_part(part):
    body = _base()
    body["input"][0]["content"].append(part)
    return body


# Each: (a request only a Responses API serves, the one chat carries that asks the same).
TRIGGERS = {
    "input_file": (
        _with_part({"type": "input_file", "file_id": "file-abc"}),
        _base(),
    ),
    "image_by_file_id": (
        _with_part({"type": "input_image", "file_id": "file-img"}),
        _base(),
    ),
    "conversation": (
        _base(conversation="conv_1"),
        _base(),
    ),
    "prompt_template": (
        _base(prompt={"id": "pmpt_1", "variables": {"topic": "calculus"}}),
        _base(),
    ),
    "custom_tool": (
        _base(tools=[{"type": "custom", "name": "run_sql"}]),
        _base(tools=[FUNCTION]),
    ),
    "tool_choice": (
        _base(
            tools=[FUNCTION],
            tool_choice={"type": "allowed_tools", "mode": "auto", "tools": [FUNCTION]},
        ),
        _base(tools=[FUNCTION], tool_choice="auto"),
    ),
    "item_reference": (
        _base(input=[*_base()["input"], {"type": "item_reference", "id": "msg_1"}]),
        _base(),
    ),
}


def _native_tiers(acme):
    """smart-lite and smart-pro on an ``openai`` connection: passed through as sent."""
    provider = openai_provider(acme)
    for name in ("smart-lite", "smart-pro"):
        services.deployment_save(
            actor=ACTOR,
            org=acme.org,
            model_name=name,
            provider=provider,
            upstream_model=f"{name}-upstream",
            input_price_per_mtok=1,
            output_price_per_mtok=2,
        )
    refresh_snapshot()


def _post(acme, key, body, stream=False):
    return httpx.post(
        acme.base_url + "/responses",
        headers={"Authorization": f"Bearer {key}"},
        json={**body, "stream": True} if stream else body,
        timeout=20,
    )


def _hard_cut() -> float:
    """A threshold between an empty prompt's score and ASK's with its output cap."""
    empty = smart.rules_score({"model": "x", "messages": []})
    asked = smart.rules_score(responses_api.to_chat(_base()))
    assert empty < asked
    return round((empty + asked) / 2, 6)


@pytest.mark.parametrize("trigger", sorted(TRIGGERS))
def test_it_scores_what_chat_cannot_carry_as_the_same_request_without_it(acme, gw, trigger):
    _native_tiers(acme)
    key = _smart_key(acme, {"thresholds": [_hard_cut()]}).api_key
    native, translatable = TRIGGERS[trigger]
    with pytest.raises(GatewayError):  # only a Responses API serves it
        responses_api.to_chat(native)
    for stream in (False, True):
        expected = _post(acme, key, translatable, stream)
        answer = _post(acme, key, native, stream)
        assert answer.status_code == 200, answer.text
        assert expected.headers["x-bonito-route-tier"] == "smart-pro"
        for header in ("x-bonito-route-score", "x-bonito-route-tier", "x-bonito-model-used"):
            assert answer.headers[header] == expected.headers[header], (header, stream)
        sent = acme.fake.requests[-1]
        assert sent["endpoint"] == "responses"
        asked = {**native, "model": "smart-pro-upstream", **({"stream": True} if stream else {})}
        assert sent["body"] == asked  # as it came, but for the deployment's model


def test_its_output_cap_and_tools_count_in_the_score(acme, gw):
    _native_tiers(acme)
    key = _smart_key(acme, {"thresholds": [_hard_cut()]}).api_key

    def score(**extra):
        body = _base(conversation="conv_1", **extra)
        return float(_post(acme, key, body).headers["x-bonito-route-score"])

    capped = score()
    assert score(max_output_tokens=16) < capped
    assert score(tools=[{"type": "custom", "name": f"t{i}"} for i in range(5)]) > capped


def test_its_end_user_keeps_one_a_b_arm(acme, gw):
    """user, safety_identifier or metadata.user_id draw the arm from the user: a request
    only a Responses API serves goes through the arm of the same user's other requests."""
    _native_tiers(acme)
    key = _smart_key(
        acme, {"thresholds": [0.999999], "ab": {"share": 0.5, "classifier": "strong"}}
    ).api_key
    gw.health = routing.DeploymentHealth(rng=random.Random(7))

    def arm(body):
        answer = _post(acme, key, body)
        assert answer.status_code == 200, answer.text
        return answer.headers["x-bonito-route-classifier"]

    arms = {}
    for i in range(16):
        user = f"user-{i}"
        plain = {k: v for k, v in _base().items() if k != "user"}
        seen = {
            arm({**plain, "user": user}),
            arm({**plain, "user": user, "conversation": "conv_1"}),
            arm({**_with_part({"type": "input_file", "file_id": "f"}), "user": user}),
            arm({**plain, "safety_identifier": user, "conversation": "conv_1"}),
            arm({**plain, "metadata": {"user_id": user}, "conversation": "conv_1"}),
        }
        assert len(seen) == 1, (user, seen)
        arms[user] = seen.pop()
    assert set(arms.values()) == {"rules", "strong"}, arms  # fixed names: no chance
