"""An edit form that is refused comes back with what was typed in it, not the stored values
(a key's Edit page, a budget's, the org's Policies and Browser access): before, the error
showed above the stored values and every change was typed again. The create forms keep their
input since test_forms_keep_input.py; this is the same for the edit forms."""

import pytest
from django.urls import reverse

from billing.budgets import budget_save
from billing.models import Budget
from gateway import services
from gateway.models import ApiKey, GatewayConfig
from gateway.tests.conftest import ACTOR, org_models
from governance import services as governance_services
from governance.models import Policy
from orgs import services as org_services

pytestmark = pytest.mark.django_db


@pytest.fixture
def teams(org_a):
    return [
        org_services.team_create(actor=ACTOR, org=org_a, name=name)
        for name in ("research", "support")
    ]


@pytest.fixture
def key(org_a, teams):
    org_models(org_a, "stored-model", "typed-a", "typed-b")
    key, _raw = services.api_key_create(
        actor=ACTOR,
        org=org_a,
        name="stored-name",
        allowed_models=["stored-model"],
        team=teams[0],
        rpm_limit=5,
        expires_at="2098-01-01",
    )
    return key


def _key_edit(client, org, key, **fields):
    typed = {
        "name": "typed <name>",
        "allowed_models": "typed-a, typed-b",
        "allowed_providers": "typed-provider",
        "team": "",
        "rpm_limit": "7",
        "tpm_limit": "900",
        "expires_at": "2099-03-04",
    }
    return client.post(reverse("key_edit", args=[org.slug, key.id]), {**typed, **fields})


@pytest.mark.parametrize(
    "refused, error",
    [
        ({"rpm_limit": "seven"}, "Requests per minute"),  # refused by the form
        ({"expires_at": "2020-01-01"}, "The expiry must be in the future."),  # by the service
    ],
)
def test_a_refused_key_edit_keeps_what_was_typed(alice_client, org_a, key, teams, refused, error):
    response = _key_edit(alice_client, org_a, key, team=str(teams[1].id), **refused)
    assert response.status_code == 400
    html = response.content.decode()
    assert error in html
    assert 'name="name" required value="typed &lt;name&gt;"' in html
    assert 'value="typed-a, typed-b"' in html and 'value="typed-provider"' in html
    assert f'<option value="{teams[1].id}" selected>' in html
    assert f'<option value="{teams[0].id}">' in html  # the stored team is no longer chosen
    assert f'value="{refused.get("rpm_limit", "7")}"' in html and 'value="900"' in html
    assert f'value="{refused.get("expires_at", "2099-03-04")}"' in html
    form = html.split('id="edit-key"')[1].split("</form>")[0]
    form = form.split("<datalist")[0] + form.split("</datalist>")[-1]  # the org's model names
    assert "stored-model" not in form
    # Nothing was saved: the page's title is still the stored key.
    assert "<h1>Key <bdi>stored-name</bdi>" in html
    stored = ApiKey.objects.get(pk=key.pk)
    assert (stored.name, stored.rpm_limit, stored.team_id) == ("stored-name", 5, teams[0].id)


def test_a_key_edit_page_still_shows_the_stored_values(alice_client, org_a, key, teams):
    html = alice_client.get(reverse("key_edit", args=[org_a.slug, key.id])).content.decode()
    assert 'value="stored-name"' in html and 'value="stored-model"' in html
    assert f'<option value="{teams[0].id}" selected>' in html
    assert 'value="5"' in html and 'value="2098-01-01"' in html


def test_a_refused_key_edit_of_another_org_s_key_is_404(charlie_client, org_a, key):
    assert _key_edit(charlie_client, org_a, key).status_code == 404


@pytest.fixture
def budget(org_a):
    return budget_save(
        actor=ACTOR,
        org=org_a,
        scope=Budget.Scope.ORG,
        period=Budget.Period.MONTHLY,
        amount_usd="100",
        thresholds=[50, 80],
        hard=True,
    )


def test_a_refused_budget_edit_keeps_what_was_typed(alice_client, org_a, budget):
    response = alice_client.post(
        reverse("budget_edit", args=[org_a.slug, budget.id]),
        {
            "scope": "org",
            "period": "daily",
            "amount_usd": "12.5",
            "thresholds": "10, abc",  # refused
            "is_active": ["off"],  # unticked
        },
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "Alert thresholds" in html
    form = html.split('id="budget-form"')[1]
    assert f'action="{reverse("budget_edit", args=[org_a.slug, budget.id])}"' in form
    assert "Save budget" in form  # still the form that edits this budget
    assert '<option value="daily" selected>' in form
    assert 'value="12.5"' in form and 'value="10, abc"' in form
    assert '<input type="checkbox" name="hard">' in form  # unticked, as sent
    assert 'name="is_active" value="on">' in form  # unticked, as sent
    assert 'value="100' not in form and 'value="50, 80"' not in form
    stored = Budget.objects.get(pk=budget.pk)
    assert (stored.amount_usd, stored.period, stored.hard) == (100, "monthly", True)


def test_a_budget_refused_by_the_service_keeps_what_was_typed(alice_client, org_a, budget, teams):
    response = alice_client.post(
        reverse("budget_edit", args=[org_a.slug, budget.id]),
        {"scope": "team", "team": "", "amount_usd": "33", "thresholds": "25", "hard": "on"},
    )
    assert response.status_code == 400
    form = response.content.decode().split('id="budget-form"')[1]
    assert "Choose the team this budget is for." in response.content.decode()
    assert '<option value="team" selected>' in form and 'value="33"' in form
    assert 'value="25"' in form


def test_a_budget_s_edit_page_still_shows_the_stored_values(alice_client, org_a, budget):
    html = alice_client.get(
        reverse("budgets", args=[org_a.slug]) + f"?edit={budget.id}"
    ).content.decode()
    form = html.split('id="budget-form"')[1]
    assert 'value="100' in form and 'value="50, 80"' in form
    assert '<input type="checkbox" name="hard" checked>' in form
    assert 'name="is_active" value="on" checked>' in form


def test_another_org_s_budget_edit_is_404(charlie_client, org_a, budget):
    response = charlie_client.post(
        reverse("budget_edit", args=[org_a.slug, budget.id]), {"amount_usd": "1"}
    )
    assert response.status_code == 404


def test_refused_policies_keep_what_was_typed(alice_client, org_a):
    governance_services.policy_set(
        actor=ACTOR, org=org_a, allowed_models=["stored-model"], monthly_spend_cap_usd="50"
    )
    response = alice_client.post(
        reverse("policies", args=[org_a.slug]),
        {
            "allowed_models": "typed-a, typed-b",
            "denied_models": "typed-denied",
            "allowed_providers": "",
            "denied_providers": "typed-provider",
            "allowed_regions": "eu-west-1",
            "monthly_spend_cap_usd": "lots",  # refused
            "default_max_tokens_estimate": "2048",
        },
    )
    assert response.status_code == 400  # as every refused dashboard form (the message says it)
    html = response.content.decode()
    assert "Monthly spend cap" in html
    assert 'value="typed-a, typed-b"' in html and 'value="typed-denied"' in html
    assert 'value="typed-provider"' in html and 'value="eu-west-1"' in html
    assert 'value="lots"' in html and 'value="2048"' in html
    assert "stored-model" not in html.split("<form")[1]
    assert Policy.objects.get(org=org_a).allowed_models == ["stored-model"]


def test_refused_browser_access_keeps_what_was_typed(alice_client, org_a):
    services.gateway_config_set(actor=ACTOR, org=org_a, cors_origins=["https://stored.test"])
    typed = "https://app.example.com, ftp://nope.example.com/path"
    response = alice_client.post(
        reverse("cors_settings", args=[org_a.slug]), {"cors_origins": typed}
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert '<div class="flash error" role="status">' in html  # refused, and says why
    assert f'value="{typed}"' in html
    # What is allowed now is still listed as stored.
    assert "<li><code>https://stored.test</code></li>" in html
    assert GatewayConfig.objects.get(org=org_a).cors_origins == ["https://stored.test"]
