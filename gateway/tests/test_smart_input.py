"""Smart routing settings and feedback bodies an attacker (or a typo) sends: refused with
a clear message where they cannot work, read as the user meant where they can."""

import pytest
from django.core.exceptions import ValidationError

from core import smart as smart_settings
from gateway.dataplane import smart
from gateway.dataplane.errors import GatewayError
from gateway.dataplane.proxy import parse_feedback
from gateway.tests.conftest import ACTOR


@pytest.mark.parametrize(
    ("tiers", "says"),
    [
        (["x" * 201, "pro"], "200 characters"),
        ([f"m{i}" for i in range(smart_settings.MAX_TIERS + 1)], "at most"),
        ([5, "pro"], "model name"),
    ],
)
def test_tiers_no_model_could_have_are_refused(tiers, says):
    """A tier named longer than any model name (200 characters, as a deployment's) can never
    serve, and its name is what the usage row's route_tier holds (200 characters):
    PostgreSQL refused the row of every request it routed, which was set aside, not
    counted. A thousand tiers is no routing anyone meant either."""
    with pytest.raises(ValueError, match=says):
        smart_settings.resolve({}, tiers)


@pytest.mark.django_db
def test_rest_refuses_a_policy_with_such_a_tier(alice_client, org_a):
    from governance import services as gov

    response = alice_client.post(
        "/api/gateway/routing-policies",
        {"name": "long", "strategy": "smart", "models": ["x" * 5000, "pro"], "smart": {}},
        content_type="application/json",
    )
    assert response.status_code == 400 and "200 characters" in str(response.json())
    with pytest.raises(ValidationError):
        gov.routing_policy_save(
            actor=ACTOR, org=org_a, name="long", strategy="smart", models=["y" * 300, "pro"]
        )


@pytest.mark.parametrize("name", ["ab", "keywords"])
@pytest.mark.parametrize("value", [0, "", False, [], "x", 3])
def test_ab_and_keywords_that_are_not_mappings_are_refused_empty_or_not(name, value):
    """0, "", false and [] were read as "none" (`or {}`) and stored as sent, then exported
    in the config file as such; only a mapping or null is either setting."""
    with pytest.raises(ValueError, match=f"smart.{name} must"):
        smart_settings.resolve({name: value}, ["a", "b"])
    assert smart_settings.resolve({name: None}, ["a", "b"])  # null: none
    assert smart_settings.resolve({name: {}}, ["a", "b"])
    if not value:  # a policy saved so before is served as having none, not refused
        served = smart_settings.resolve({name: value}, ["a", "b"], serving=True)
        assert served == smart_settings.resolve({}, ["a", "b"], serving=True)


@pytest.mark.django_db
@pytest.mark.parametrize("smart_spec", [{"ab": False}, {"keywords": 0}, {"keywords": []}])
def test_rest_refuses_empty_non_mappings_on_create_patch_and_the_org_default(
    alice_client, org_a, smart_spec
):
    models = ["chat", "chat-big"]
    for url, method, body in (
        (
            "/api/gateway/routing-policies",
            "post",
            {"name": "s", "strategy": "smart", "models": models, "smart": smart_spec},
        ),
        ("/api/gateway/config", "put", {"smart_tiers": models, "smart": smart_spec}),
    ):
        response = getattr(alice_client, method)(url, body, content_type="application/json")
        assert response.status_code == 400, (url, response.content)
        assert f"smart.{next(iter(smart_spec))} must" in str(response.json()), response.content


def test_a_keyword_with_a_capital_letter_of_another_script_matches_as_typed():
    """Keywords are matched case-insensitively in ASCII letters only (the prompt is not
    lower-cased in other scripts): the keyword was lower-cased in every script on save, so
    "Équation" could never match a prompt that wrote it so."""
    spec = smart_settings.resolve({"keywords": {"math": ["Équation", "ÉTAPE par"]}}, ["a", "b"])
    body = {"messages": [{"role": "user", "content": "Résous cette Équation, ÉTAPE PAR étape"}]}
    found = smart.features(body, spec.keywords)[smart.FEATURE_NAMES.index("kw_math")]
    assert found == pytest.approx(smart.math.log1p(2))


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"request_id": 5, "score": 0.1}', "a string"),
        (b'{"request_id": "", "score": 0.1}', "must not be empty"),
        (('{"request_id": "' + "e" * 129 + '", "score": 0.1}').encode(), "128"),
    ],
)
def test_a_request_id_of_the_wrong_shape_is_told_what_is_wrong(body, says):
    """Present but wrong, it was told "request_id is required"."""
    with pytest.raises(GatewayError) as info:
        parse_feedback(body)
    error = info.value.body()["error"]
    assert error["param"] == "request_id" and says in error["message"]
    assert "required" not in error["message"]


@pytest.mark.django_db
def test_a_spec_with_both_the_slider_and_thresholds_is_refused_not_half_ignored(
    alice_client, org_a
):
    """Thresholds by hand replace the slider: a spec with both was saved as sent (even an
    aggressiveness of "x"), and the aggressiveness silently did nothing."""
    for aggressiveness in (0.9, "x"):
        response = alice_client.post(
            "/api/gateway/routing-policies",
            {
                "name": "both",
                "strategy": "smart",
                "models": ["lite", "pro"],
                "smart": {"aggressiveness": aggressiveness, "thresholds": [0.2]},
            },
            content_type="application/json",
        )
        assert response.status_code == 400
        assert "not both" in str(response.json()["smart"])
    # A policy saved so before is still served, by its thresholds.
    served = smart_settings.resolve(
        {"aggressiveness": 0.9, "thresholds": [0.2]}, ["lite", "pro"], serving=True
    )
    assert served.thresholds == (0.2,)


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ({"thresholds": [1.0000001]}, "smart.thresholds must be from 0 to 1, not 1.0000001."),
        ({"aggressiveness": 1.00000000001}, "must be from 0 to 1, not 1.00000000001."),
        ({"aggressiveness": -1e-9}, "must be from 0 to 1, not -1e-09."),
        ({"aggressiveness": 10**50}, f"not {'1' + '0' * 19}… (51 digits)."),
        (
            {"ab": {"share": 2, "classifier": "strong"}},
            "smart.ab.share must be from 0 to 1, not 2 (0.02 for 2 %).",
        ),
    ],
)
def test_a_number_out_of_range_is_quoted_as_sent_not_rounded(spec, said):
    """It said `not 1.` of 1.0000001 (a {:g} format), as /v1/feedback did until it quoted
    the value as sent."""
    with pytest.raises(ValueError) as refused:
        smart_settings.resolve(spec, ["lite", "pro"])
    assert str(refused.value).endswith(said), str(refused.value)


@pytest.mark.parametrize(
    ("smart", "said"),
    [
        (
            "x",
            "smart must be a mapping of settings (classifier, aggressiveness, thresholds, ab, keywords, within), not 'x'.",
        ),
        ([1], "smart must be a mapping of settings"),
        (
            {"classifier": ["rules"]},
            "smart.classifier must be the name of a classifier (rules, learned), not a list.",
        ),
        ({"thresholds": [0.2, 0.3]}, "ascending, each between 0 and 1; it has 2."),
        ({"thresholds": ["0.2"]}, "must be a number from 0 to 1 (a number, unquoted), not '0.2'."),
        (
            {"aggressiveness": 50},
            "smart.aggressiveness must be from 0 to 1, not 50 (0.5 for 50 %).",
        ),
    ],
)
def test_rest_says_what_was_sent_in_words(alice_client, org_a, smart, said):
    """An outside check: DRF's 'Expected a dictionary of items but got type "str"', the
    Python repr "['rules']", a count of thresholds without the count sent, 50 for 0.5."""
    response = alice_client.post(
        "/api/gateway/routing-policies",
        {"name": "s", "strategy": "smart", "models": ["lite", "pro"], "smart": smart},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert said in response.json()["smart"][0], response.json()
    put = alice_client.put(
        "/api/gateway/config",
        {"smart_tiers": ["lite", "pro"], "smart": smart},
        content_type="application/json",
    )
    assert put.status_code == 400 and said in put.json()["smart"][0], put.json()
