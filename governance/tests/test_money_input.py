"""Money typed into the dashboard forms and sent to the REST API: read exactly from its
text, never negative, never from non-ASCII digits, and an error that names the field."""

from decimal import Decimal

import pytest
from django.urls import reverse

from billing.models import Budget
from gateway import services
from gateway.models import Deployment
from gateway.tests.conftest import ACTOR
from governance.models import Policy

pytestmark = pytest.mark.django_db

BAD_AMOUNTS = {
    "-5": "must not be negative",
    "٣": "must be a number like 10.50",  # Decimal() reads it as 3
    "NaN": "must be a number like 10.50",
    "Infinity": "must be a number like 10.50",
    "abc": "must be a number like 10.50",
    "10.123": "no more than 2 decimal places",
    "1e20": "no more than 12 digits",
}


def _flash(response) -> str:
    return " | ".join(str(m) for m in response.context["messages"])


# ------------------------------------------------------------------------------ dashboard forms
def test_the_policy_form_reads_the_cap_exactly(alice_client, org_a):
    alice_client.post(reverse("policies", args=[org_a.slug]), {"monthly_spend_cap_usd": "10.1"})
    assert Policy.objects.get(org=org_a).monthly_spend_cap_usd == Decimal("10.10")


@pytest.mark.parametrize("value,message", list(BAD_AMOUNTS.items()))
def test_the_policy_form_refuses_bad_caps_naming_the_field(alice_client, org_a, value, message):
    response = alice_client.post(
        reverse("policies", args=[org_a.slug]), {"monthly_spend_cap_usd": value}, follow=True
    )
    flash = _flash(response)
    assert flash.startswith("Monthly spend cap: ") and message in flash, flash
    assert not Policy.objects.filter(org=org_a).exists()


@pytest.mark.parametrize("value", ["abc", "٣", "1.5", "-1", "99999999999"])
def test_the_policy_form_refuses_bad_token_estimates_naming_the_field(alice_client, org_a, value):
    response = alice_client.post(
        reverse("policies", args=[org_a.slug]),
        {"default_max_tokens_estimate": value},
        follow=True,
    )
    assert _flash(response).startswith("Default max tokens estimate: "), _flash(response)
    assert not Policy.objects.filter(org=org_a).exists()


def test_the_budget_form_reads_the_amount_exactly(alice_client, org_a):
    alice_client.post(reverse("budget_create", args=[org_a.slug]), {"amount_usd": "10.1"})
    assert Budget.objects.get(org=org_a).amount_usd == Decimal("10.10")


@pytest.mark.parametrize("value,message", [*BAD_AMOUNTS.items(), ("", "is required")])
def test_the_budget_form_refuses_bad_amounts_naming_the_field(alice_client, org_a, value, message):
    response = alice_client.post(
        reverse("budget_create", args=[org_a.slug]), {"amount_usd": value}, follow=True
    )
    flash = _flash(response)
    assert flash.startswith("Amount: ") and message in flash, flash
    assert not Budget.objects.exists()


@pytest.mark.parametrize(
    "fields",
    [
        {"thresholds": "50, ٣"},
        {"thresholds": "50, abc"},
        {"thresholds": "0"},
        {"scope": "team", "team": "²"},
        {"scope": "key", "key": "99999999999999999999999"},
    ],
)
def test_the_budget_form_refuses_bad_numbers_without_a_500(alice_client, org_a, fields):
    response = alice_client.post(
        reverse("budget_create", args=[org_a.slug]), {"amount_usd": "5", **fields}, follow=True
    )
    assert response.status_code == 400 and _flash(response), fields
    assert not Budget.objects.exists()


# ------------------------------------------------------------------------------ REST
def test_the_policy_api_reads_json_numbers_exactly(alice_client, org_a):
    for sent, stored in ((10.1, "10.10"), ("10.1", "10.10"), (0.29, "0.29"), (None, None)):
        response = alice_client.put(
            "/api/gateway/policy", {"monthly_spend_cap_usd": sent}, content_type="application/json"
        )
        assert response.status_code == 200 and response.json()["monthly_spend_cap_usd"] == stored
        cap = Policy.objects.get(org=org_a).monthly_spend_cap_usd
        assert cap == (Decimal(stored) if stored else None)


@pytest.mark.parametrize("value", [-5, "-5", "٣", "NaN", "abc", True, [1], 10.123, 1e20])
def test_the_policy_api_refuses_bad_caps_naming_the_field(alice_client, org_a, value):
    response = alice_client.put(
        "/api/gateway/policy", {"monthly_spend_cap_usd": value}, content_type="application/json"
    )
    assert response.status_code == 400 and list(response.json()) == ["monthly_spend_cap_usd"]
    assert not Policy.objects.filter(org=org_a).exists()


@pytest.mark.parametrize("field", ["input_price_per_mtok", "output_price_per_mtok"])
def test_the_deployment_api_reads_prices_exactly_and_refuses_bad_ones(alice_client, org_a, field):
    services.provider_save(actor=ACTOR, org=org_a, name="oai", kind="openai")
    base = {"model_name": "chat", "provider": "oai", "upstream_model": "gpt-4o-mini"}
    for bad in (-1, "٣", "NaN", 0.0000001):
        response = alice_client.post(
            "/api/gateway/deployments", {**base, field: bad}, content_type="application/json"
        )
        assert response.status_code == 400 and list(response.json()) == [field], bad
    assert not Deployment.objects.exists()
    created = alice_client.post(
        "/api/gateway/deployments", {**base, field: 0.15}, content_type="application/json"
    )
    assert created.status_code == 201 and created.json()[field] == "0.150000"
    assert getattr(Deployment.objects.get(), field) == Decimal("0.15")


def test_services_refuse_negative_money_whoever_calls_them(org_a):
    from django.core.exceptions import ValidationError

    from billing.budgets import budget_save
    from governance.services import policy_set

    provider = services.provider_save(actor=ACTOR, org=org_a, name="oai", kind="openai")
    with pytest.raises(ValidationError) as info:
        policy_set(actor=ACTOR, org=org_a, monthly_spend_cap_usd=-1)
    assert info.value.message_dict == {"monthly_spend_cap_usd": ["must not be negative."]}
    with pytest.raises(ValidationError) as info:
        budget_save(actor=ACTOR, org=org_a, amount_usd=Decimal("-0.01"))
    assert list(info.value.message_dict) == ["amount_usd"]
    with pytest.raises(ValidationError) as info:
        services.deployment_save(
            actor=ACTOR,
            org=org_a,
            model_name="chat",
            provider=provider,
            upstream_model="m",
            input_price_per_mtok=-0.5,
        )
    assert list(info.value.message_dict) == ["input_price_per_mtok"]
    policy = policy_set(actor=ACTOR, org=org_a, monthly_spend_cap_usd=10.1)
    assert policy.monthly_spend_cap_usd == Decimal("10.10")
