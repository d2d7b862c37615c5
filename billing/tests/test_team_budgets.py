"""Deleting a team never takes its budgets with it silently: a team with budgets is refused
(dashboard, REST, admin, service) until its budgets are deleted or moved."""

import pytest
from django.core.exceptions import ValidationError

from billing.budgets import budget_delete, budget_save
from billing.models import Budget
from orgs import services
from orgs.audit import Actor
from orgs.models import AuditLog, Team

pytestmark = pytest.mark.django_db

SETUP = Actor(via="test-setup")
REFUSAL = "Team Platform still has budgets; delete or move its budgets first."


@pytest.fixture
def team(org_a):
    return services.team_create(actor=SETUP, org=org_a, name="Platform")


@pytest.fixture
def team_budget(org_a, team):
    return budget_save(actor=SETUP, org=org_a, scope="team", team=team, amount_usd=100)


def _kept(team, budget):
    assert Team.objects.filter(pk=team.pk).exists()
    assert Budget.objects.filter(pk=budget.pk, team=team).exists()
    assert not AuditLog.objects.filter(action="team.delete").exists()


def test_the_service_refuses(team, team_budget):
    with pytest.raises(ValidationError) as exc:
        services.team_delete(actor=SETUP, team=team)
    assert exc.value.messages == [REFUSAL]
    _kept(team, team_budget)


def test_an_inactive_budget_counts_too(org_a, team, team_budget):
    budget_save(
        actor=SETUP,
        org=org_a,
        scope="team",
        team=team,
        amount_usd=100,
        is_active=False,
        budget=team_budget,
    )
    with pytest.raises(ValidationError):
        services.team_delete(actor=SETUP, team=team)


def test_the_dashboard_shows_the_refusal(alice_client, org_a, team, team_budget):
    response = alice_client.post(f"/o/{org_a.slug}/team/teams/{team.pk}/delete/", follow=True)
    assert response.status_code == 200
    assert REFUSAL in [str(m) for m in response.context["messages"]]
    _kept(team, team_budget)


def test_the_rest_api_answers_400(alice_client, team, team_budget):
    response = alice_client.delete(f"/api/gateway/teams/{team.pk}")
    assert response.status_code == 400, response.content
    assert REFUSAL in response.content.decode()
    _kept(team, team_budget)


def test_the_admin_refuses(admin_client, team, team_budget):
    response = admin_client.post(f"/admin/orgs/team/{team.pk}/delete/", {"post": "yes"})
    # Django's own answer for a restricted delete: the page names the budgets in the way.
    assert response.status_code == 200
    assert "would require deleting the following protected related objects" in (
        response.content.decode()
    )
    assert "budget $100.00 for Platform" in response.content.decode()
    _kept(team, team_budget)
    bulk = admin_client.post(
        "/admin/orgs/team/",
        {"action": "delete_selected", "_selected_action": [team.pk], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    _kept(team, team_budget)


def test_a_queryset_delete_cannot_drop_them_either(team, team_budget):
    from django.db.models import RestrictedError

    with pytest.raises(RestrictedError):
        Team.objects.filter(pk=team.pk).delete()
    _kept(team, team_budget)


def test_once_its_budgets_are_gone_the_team_is_deleted(alice_client, org_a, team, team_budget):
    budget_delete(actor=SETUP, budget=team_budget)
    response = alice_client.post(f"/o/{org_a.slug}/team/teams/{team.pk}/delete/", follow=True)
    assert "Team Platform deleted." in [str(m) for m in response.context["messages"]]
    assert not Team.objects.filter(pk=team.pk).exists()
    assert AuditLog.objects.filter(action="team.delete").exists()


def test_deleting_the_org_still_takes_teams_and_budgets(org_a, team, team_budget):
    services.org_delete(actor=SETUP, org=org_a)
    assert not Team.objects.filter(pk=team.pk).exists()
    assert not Budget.objects.filter(pk=team_budget.pk).exists()
