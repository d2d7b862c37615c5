"""What the smart settings' messages say, and where: prices in the tier-price warning are
exact short decimals (no binary float noise), a fault of the tiers is reported at the
setting that holds them (not at `smart`), an alias that meets a name says whose name it
is, and a dashboard form's refusal reads as sentences (no ".;")."""

import re
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from gateway import services
from gateway.tests.conftest import ACTOR

pytestmark = pytest.mark.django_db
ACME = "orgs:\n  - slug: acme\n    name: Acme\n"
NOISE = re.compile(r"\$\d+\.\d{9,}")  # more decimals than a price per million can hold


def _deploy(org, model, inp, out, provider=None):
    provider = provider or services.provider_create(actor=ACTOR, org=org, name="p", kind="mock")
    services.deployment_create(
        actor=ACTOR,
        org=org,
        model_name=model,
        provider=provider,
        upstream_model=f"{model}-up",
        input_price_per_mtok=inp,
        output_price_per_mtok=out,
    )
    return provider


def _apply(tmp_path, text):
    path = tmp_path / "bonito.yaml"
    path.write_text(text)
    err = StringIO()
    call_command("apply_config", str(path), stdout=StringIO(), stderr=err)
    return err.getvalue()


# ------------------------------------------------------------------------------ price noise
def test_prices_set_by_apply_config_are_warned_of_as_written(tmp_path, alice_client, org_a):
    err = _apply(
        tmp_path,
        f"orgs:\n  - slug: {org_a.slug}\n"
        "    providers:\n      - {name: mock, kind: mock}\n"
        "    deployments:\n"
        "      - {model: lite, provider: mock, upstream_model: a,"
        " input_price_per_mtok: 0.3, output_price_per_mtok: 0.7}\n"
        "      - {model: pro, provider: mock, upstream_model: b,"
        " input_price_per_mtok: 0.1, output_price_per_mtok: 0.4}\n"
        "    gateway:\n      smart_tiers: [lite, pro]\n",
    )
    said = "($0.3 in, $0.7 out per million tokens at its cheapest, against $0.1 and $0.4)"
    assert said in err and not NOISE.search(err), err
    page = alice_client.get(f"/o/{org_a.slug}/routing/").content.decode()
    assert said in page and not NOISE.search(page)


@pytest.mark.parametrize(
    "price",
    ["0.1", "0.3", "0.7", "1.1", "2.675", "0.000001", "0.000003", "0.123456", "1234.56", "15"],
)
def test_every_price_per_million_is_printed_exactly(org_a, price):
    """Prices that are not binary fractions (most decimals) and the smallest a deployment
    holds (6 decimals per million tokens) read back as they were set."""
    provider = _deploy(org_a, "lite", price, price)
    _deploy(org_a, "pro", "0", "0", provider)
    [warning] = services.smart_tier_price_warnings(org_a, ["lite", "pro"])
    assert f"(${price} in, ${price} out per million tokens" in warning, warning
    assert "against $0 and $0)" in warning
    assert not NOISE.search(warning) and "e-" not in warning


def test_catalog_per_token_prices_print_as_short_decimals(org_a):
    """Per-token floats (LiteLLM's map keeps prices that way) print per million tokens
    in as many digits as they were written with."""
    for per_token in (1e-07, 3e-07, 1.5e-07, 2.5e-06, 7e-12, 0.000015):
        text = services._per_mtok(per_token)
        assert Decimal(text[1:]) == Decimal(repr(per_token)) * 1_000_000, text


# ------------------------------------------------------------------------------ where a fault is
@pytest.mark.parametrize("tiers", ["[lite]", "[lite, lite]"])
def test_apply_config_reports_a_fault_of_the_tiers_at_the_tiers(tmp_path, db, tiers):
    with pytest.raises(CommandError) as info:
        _apply(tmp_path, f"{ACME}    gateway:\n      smart_tiers: {tiers}\n")
    assert ": orgs[0].gateway.smart_tiers: " in str(info.value), str(info.value)
    with pytest.raises(CommandError) as info:
        _apply(
            tmp_path,
            f"{ACME}    routing_policies:\n"
            f"      - {{name: saver, strategy: smart, models: {tiers}}}\n",
        )
    assert ": orgs[0].routing_policies[0].models: " in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "policy, path",
    [
        ("{name: s, strategy: smart, models: [a, b], smart: {ab: {share: 0.2}}}", "smart.ab"),
        ("{name: s, strategy: smart, models: [a, b], smart: {thresholds: [2]}}", "smart."),
        ("{name: s, strategy: smart, models: [a, b], smart: {classifier: x}}", "smart."),
        ("{name: s, strategy: smart, models: [a, A]}", "models"),
        ("{name: s, strategy: nope, models: [a]}", "strategy"),
    ],
)
def test_apply_config_names_the_path_once(tmp_path, db, policy, path):
    """A service message that starts with its field's path continues the file's path: it
    read `…routing_policies[0].smart: smart.ab needs…` and `…models: models: 'A'…`."""
    with pytest.raises(CommandError) as info:
        _apply(tmp_path, f"{ACME}    routing_policies:\n      - {policy}\n")
    text = str(info.value)
    assert f": orgs[0].routing_policies[0].{path}" in text, text
    for field in ("smart", "models", "strategy"):
        assert f"{field}: {field}" not in text and f"{field}: smart." not in text, text


def test_rest_reports_a_fault_of_the_tiers_at_the_tiers(alice_client, org_a):
    config = alice_client.put(
        "/api/gateway/config", {"smart_tiers": ["lite"]}, content_type="application/json"
    )
    assert config.status_code == 400
    assert list(config.json()) == ["smart_tiers"], config.json()
    policy = alice_client.post(
        "/api/gateway/routing-policies",
        {"name": "s", "strategy": "smart", "models": ["lite", "lite"]},
        content_type="application/json",
    )
    assert policy.status_code == 400
    assert list(policy.json()) == ["models"], policy.json()
    # a setting's own fault stays at smart
    wrong = alice_client.post(
        "/api/gateway/routing-policies",
        {"name": "s", "strategy": "smart", "models": ["a", "b"], "smart": {"within": "smart"}},
        content_type="application/json",
    )
    assert list(wrong.json()) == ["smart"], wrong.json()


# ------------------------------------------------------------------------------ whose name
@pytest.mark.parametrize(
    ("alias", "said"),
    [
        ("cheap", "'cheap' is already one of the organization's smart tiers;"),
        ("served", "'served' is already a deployment's public name;"),
        ("Cheap", "'Cheap' looks like 'cheap', one of the organization's smart tiers;"),
        ("SERVED", "'SERVED' looks like 'served', a deployment's public name;"),
    ],
)
def test_an_alias_that_meets_a_name_says_whose_name_it_is(alice_client, org_a, alias, said):
    _deploy(org_a, "served", "1", "1")
    response = alice_client.put(
        "/api/gateway/config",
        {"smart_tiers": ["cheap", "pro"], "auto_model_alias": alias},
        content_type="application/json",
    )
    assert response.status_code == 400
    [message] = response.json()["auto_model_alias"]
    assert message.startswith(said), message
    assert "a model's name" not in message


# ------------------------------------------------------------------------------ form sentences
REFUSED_FORMS = [
    {"thresholds": "<b>", "ab_share": "x"},
    {"thresholds": "2", "ab_share": "101"},
    {"aggressiveness": "abc", "ab_share": "-1"},
    {"models": "lite", "ab_share": "10", "ab_classifier": "rules"},
]


@pytest.mark.parametrize("sent", REFUSED_FORMS)
def test_a_refused_form_with_several_errors_reads_as_sentences(alice_client, org_a, sent):
    body = {"name": "saver", "strategy": "smart", "models": "lite, pro", **sent}
    response = alice_client.post(f"/o/{org_a.slug}/routing/", body)
    assert response.status_code == 400
    [shown] = [str(m) for m in response.context["messages"]]
    assert ".;" not in shown and ".." not in shown and ";;" not in shown, shown


def test_messages_of_two_fields_are_joined_after_a_full_stop_by_a_space():
    from django.core.exceptions import ValidationError

    from core.form_input import form_error

    exc = ValidationError({"thresholds": ["must be strictly ascending."], "ab_share": ["no"]})
    labels = {"thresholds": "Thresholds", "ab_share": "A/B share (%)"}
    assert form_error(exc, labels) == ("Thresholds: must be strictly ascending. A/B share (%): no")
    exc = ValidationError({"ab_share": ["no"], "thresholds": ["must be ascending"]})
    assert form_error(exc, labels) == "A/B share (%): no; Thresholds: must be ascending"


def test_smart_as_the_default_strategy_names_the_org_s_own_alias(alice_client, org_a):
    on = alice_client.put(
        "/api/gateway/config",
        {"smart_tiers": ["lite", "pro"], "auto_model_alias": "cheapest"},
        content_type="application/json",
    )
    assert on.status_code == 200, on.content
    for sent, alias in (({}, "'cheapest'"), ({"auto_model_alias": "thrifty"}, "'thrifty'")):
        refused = alice_client.put(
            "/api/gateway/config",
            {"default_strategy": "smart", **sent},
            content_type="application/json",
        )
        assert refused.status_code == 400
        [said] = refused.json()["default_strategy"]
        assert said.endswith(f"(bn- keys then ask for the model {alias})."), said
