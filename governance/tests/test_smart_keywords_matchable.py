"""Keywords the rules classifier can match, at a bounded cost (docs/smart-routing.md,
"Keywords"): punctuation is read as a space in prompts and keywords alike, so a keyword of
punctuation alone (``++``, ``...``) could never match and is refused; and a list holds at
most MAX_PHRASES phrases of several words, each a scan of the prompt (200 of them cost a
long prompt 16 ms on the event loop, every org's requests on that worker waiting). Both
rules hold on every way in (the services, so REST, apply_config and the admin, for a policy
and the org's smart routing); keywords saved before them are kept by a save that keeps
them."""

import pytest
from django.core.exceptions import ValidationError

from core.smart import MAX_PHRASES
from governance.models import RoutingPolicy

from .test_smart_keywords_visible import _saves, _stored, org  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db
JSON = "application/json"


@pytest.mark.parametrize("way", ["routing policy", "org smart routing"])
@pytest.mark.parametrize("blank", ["++", "...", "#", " -- ", "—", "…", "¿", "•", "’", "«»", "「」"])
def test_a_keyword_of_punctuation_alone_is_refused(org, way, blank):  # noqa: F811
    before = _stored()
    with pytest.raises(ValidationError) as exc:
        _saves(org)[way]({"keywords": {"code": ["kubernetes", blank]}})
    (message,) = exc.value.message_dict["smart"]
    assert message.startswith("smart.keywords.code: ") and "never match" in message, message
    assert repr(blank.strip()) in message
    assert _stored() == before


@pytest.mark.parametrize("way", ["routing policy", "org smart routing"])
def test_a_list_of_more_phrases_than_the_limit_is_refused_and_single_words_are_not(
    org,  # noqa: F811
    way,
):
    phrases = [f"step {i} of the plan" for i in range(MAX_PHRASES + 1)]
    with pytest.raises(ValidationError) as exc:
        _saves(org)[way]({"keywords": {"reasoning": phrases}})
    (message,) = exc.value.message_dict["smart"]
    assert f"holds {MAX_PHRASES + 1} phrases" in message and f"at most {MAX_PHRASES}" in message
    # The limit counts phrases as they are matched: the same phrase twice is one.
    _saves(org)[way]({"keywords": {"reasoning": [*phrases[:MAX_PHRASES], phrases[0].upper()]}})
    words = [f"word{i}" for i in range(200)]
    _saves(org)[way]({"keywords": {"reasoning": [*phrases[:MAX_PHRASES], *words[:150]]}})


def test_rest_and_apply_config_answer_400(alice_client, org):  # noqa: F811
    before = _stored()
    policy = alice_client.post(
        "/api/gateway/routing-policies",
        {
            "name": "tiers",
            "strategy": "smart",
            "models": ["small", "big"],
            "smart": {"keywords": {"code": ["c", "++"]}},
        },
        content_type=JSON,
    )
    assert policy.status_code == 400 and "never match" in policy.json()["smart"][0]
    yaml = (
        "gateway:\n  smart_tiers: [small, big]\n  smart:\n    keywords:\n      reasoning:\n"
        + "".join(f"        - two words{i}\n" for i in range(MAX_PHRASES + 1))
    )
    response = alice_client.post("/api/gateway/config/apply", {"yaml": yaml}, content_type=JSON)
    assert response.status_code == 400, response.content
    assert "phrases of several words" in response.json()["yaml"][0]
    assert _stored() == before


def test_keywords_saved_before_the_rules_are_kept_by_a_save_that_keeps_them(org):  # noqa: F811
    old = [f"an old phrase {i}" for i in range(MAX_PHRASES + 5)] + ["++"]
    rp = _saves(org)["routing policy"]({"classifier": "rules"})
    RoutingPolicy.objects.filter(pk=rp.pk).update(smart={"keywords": {"code": old}})
    _saves(org)["routing policy"]({"keywords": {"code": old}})
    assert RoutingPolicy.objects.get(pk=rp.pk).smart["keywords"]["code"] == old
    with pytest.raises(ValidationError):  # a new phrase past the limit is not
        _saves(org)["routing policy"]({"keywords": {"code": [*old, "a new phrase"]}})


@pytest.mark.parametrize("way", ["routing policy", "org smart routing"])
def test_keywords_kept_in_one_list_are_new_in_another(org, way):  # noqa: F811
    """What a save keeps unchecked is kept in its own list: copied into another category,
    the phrases past the limit, punctuation alone or a hidden character are new there."""
    old = [f"an old phrase {i}" for i in range(MAX_PHRASES + 5)]
    saved = _saves(org)[way]({"classifier": "rules"})
    if way == "routing policy":
        RoutingPolicy.objects.filter(pk=saved.pk).update(
            smart={"keywords": {"code": [*old, "++", "zero\u200bwidth"]}}
        )
    else:
        from gateway.models import GatewayConfig

        GatewayConfig.objects.filter(org=org).update(
            smart={"keywords": {"code": [*old, "++", "zero\u200bwidth"]}}
        )
    before = _stored()
    for copied, said in [
        (old, "phrases of several words"),
        (["kubernetes", "++"], "never match"),
        (["zero\u200bwidth"], "U+200B"),
    ]:
        with pytest.raises(ValidationError) as exc:
            _saves(org)[way](
                {"keywords": {"code": [*old, "++", "zero\u200bwidth"], "reasoning": copied}}
            )
        (message,) = exc.value.message_dict["smart"]
        assert message.startswith("smart.keywords.reasoning: ") or said in message, message
        assert said in message, message
    assert _stored() == before


@pytest.mark.parametrize("way", ["routing policy", "org smart routing"])
def test_symbols_and_words_with_punctuation_are_kept(org, way):  # noqa: F811
    """Only punctuation alone is refused: a symbol matches as written (``∑`` in "compute ∑
    x_i"), and so does a word with a dash or a number form in it."""
    words = ["£", "€", "∑", "√", "≤", "🔥", "½", "①", "x²", "a—b", "¿qué", "C++"]
    saved = _saves(org)[way]({"keywords": {"math": words}})
    assert saved.smart["keywords"]["math"] == words
