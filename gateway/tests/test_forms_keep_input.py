"""A create form that is refused comes back with what was typed in it (Keys, a new routing
policy): before, the page showed the error above empty fields and everything was typed again."""

from decimal import Decimal

import pytest
from django.urls import reverse

from billing.budgets import budget_save
from gateway.tests.conftest import ACTOR
from governance import services

pytestmark = pytest.mark.django_db


def test_a_refused_key_keeps_what_was_typed(alice_client, org_a):
    policy = services.routing_policy_save(
        actor=ACTOR, org=org_a, name="fallback", strategy="failover", models=["a", "b"]
    )
    response = alice_client.post(
        reverse("keys", args=[org_a.slug]),
        {
            "name": "backend <prod>",
            "allowed_models": "demo-chat, demo-mini",
            "allowed_providers": "mock",
            "routing_policy": str(policy.id),
            "rpm_limit": "10",
            "tpm_limit": "2000",
            "expires_at": "2020-01-01",  # in the past: refused
        },
    )
    html = response.content.decode()
    assert "The expiry must be in the future." in html
    assert 'value="backend &lt;prod&gt;"' in html
    assert 'value="demo-chat, demo-mini"' in html and 'value="mock"' in html
    assert 'value="10"' in html and 'value="2000"' in html and 'value="2020-01-01"' in html
    assert f'<option value="{policy.id}" selected>' in html


def test_a_refused_routing_policy_keeps_what_was_typed(alice_client, org_a):
    response = alice_client.post(
        reverse("routing", args=[org_a.slug]),
        {
            "name": "ab-test",
            "strategy": "weighted",
            "models": "demo-chat, demo-mini",
            "weights": "demo-chat=abc",  # refused
            "aggressiveness": "70",
            "thresholds": "",
        },
    )
    html = response.content.decode()
    assert "must be a whole number" in html
    assert 'value="ab-test"' in html and 'value="demo-chat, demo-mini"' in html
    assert 'value="demo-chat=abc"' in html
    assert '<option value="weighted" selected>' in html


def test_a_refused_budget_keeps_what_was_typed(alice_client, org_a):
    response = alice_client.post(
        reverse("budget_create", args=[org_a.slug]),
        {
            "scope": "team",  # and no team: refused
            "period": "daily",
            "amount_usd": "7.5",
            "thresholds": "10, 20",
            "hard": "on",
        },
        follow=True,
    )
    html = response.content.decode()
    assert "Choose the team this budget is for." in html
    assert '<option value="team" selected>' in html and '<option value="daily" selected>' in html
    assert 'value="7.5"' in html and 'value="10, 20"' in html
    assert '<input type="checkbox" name="hard" checked>' in html
    assert "Add budget" in html  # still the form that creates one
    # The page is now at budgets/new/ (POST only): its Edit links still lead to the Budgets page.
    budget = budget_save(actor=ACTOR, org=org_a, scope="org", amount_usd=Decimal("10"))
    response = alice_client.post(
        reverse("budget_create", args=[org_a.slug]), {"scope": "team", "amount_usd": "1"}
    )
    assert f'href="/o/acme/budgets/?edit={budget.id}#budget-form"' in response.content.decode()


def test_each_dashboard_page_has_its_own_title(alice_client, org_a):
    # Tabs, history and screen readers tell pages apart by their titles (WCAG 2.4.2).
    for path, title in (
        ("", "Overview · Acme Corp · Bonito"),
        ("keys/", "Keys · Acme Corp · Bonito"),
        ("logs/", "Logs · Acme Corp · Bonito"),
        ("team/", "Team · Acme Corp · Bonito"),
    ):
        html = alice_client.get(f"/o/acme/{path}").content.decode()
        assert f"<title>{title}</title>" in html, path
