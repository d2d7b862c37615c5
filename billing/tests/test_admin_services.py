"""Budgets and tier limits edited in the admin: audited, and the gateways see the change."""

import uuid
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.budgets import budget_save
from billing.models import Budget, UsageRecord
from bonito.tests.admin_forms import form_data
from core.config_version import current_version
from gateway.snapshot_builder import build_snapshot
from orgs.audit import Actor
from orgs.models import AuditLog, TierLimit

pytestmark = pytest.mark.django_db
SETUP = Actor(via="test-setup")


def _spent(org, amount):
    UsageRecord.objects.create(
        id=uuid.uuid4(),
        org=org,
        created_at=timezone.now(),
        model_requested="chat",
        status="success",
        cost=Decimal(amount),
    )


@pytest.fixture
def hard_budget(org_a):
    _spent(org_a, "2")
    return budget_save(actor=SETUP, org=org_a, amount_usd=1, hard=True)


def test_raising_a_hard_budget_in_the_admin_is_audited_and_lifts_the_block(
    admin_client, org_a, hard_budget
):
    assert "org" in build_snapshot().orgs[org_a.id].blocked
    version = current_version()
    url = f"/admin/billing/budget/{hard_budget.pk}/change/"
    response = admin_client.post(url, form_data(admin_client.get(url), amount_usd="5.00"))
    assert response.status_code == 302
    assert Budget.objects.get(pk=hard_budget.pk).amount_usd == 5
    row = AuditLog.objects.get(action="budget.update")
    assert (row.actor_label, row.via) == ("root@bonito.test", "admin")
    assert (row.changes["before"]["amount_usd"], row.changes["after"]["amount_usd"]) == (
        "1.00",
        "5.00",
    )
    assert current_version() > version
    assert build_snapshot().orgs[org_a.id].blocked == {}


def test_creating_a_budget_in_the_admin_is_audited_and_blocks_at_once(admin_client, org_a):
    _spent(org_a, "2")
    version = current_version()
    page = admin_client.get("/admin/billing/budget/add/")
    data = form_data(
        page,
        org=str(org_a.pk),
        scope="org",
        period="monthly",
        amount_usd="1",
        hard="on",
        thresholds="[100]",
        is_active="on",
    )
    response = admin_client.post("/admin/billing/budget/add/", data)
    assert response.status_code == 302, response.context["errors"] if response.context else ""
    assert AuditLog.objects.get(action="budget.create").via == "admin"
    assert current_version() > version
    assert "org" in build_snapshot().orgs[org_a.id].blocked


def test_a_budget_for_another_org_s_team_is_refused(admin_client, org_a, org_b):
    from orgs import services

    team_b = services.team_create(actor=SETUP, org=org_b, name="Ops")
    page = admin_client.get("/admin/billing/budget/add/")
    data = form_data(
        page,
        org=str(org_a.pk),
        scope="team",
        team=str(team_b.pk),
        period="monthly",
        amount_usd="1",
        thresholds="[100]",
    )
    response = admin_client.post("/admin/billing/budget/add/", data)
    assert response.status_code == 302
    messages = [str(m) for m in admin_client.get(response.url).context["messages"]]
    assert any("belongs to another organization" in m for m in messages)
    assert not Budget.objects.exists()


def test_deleting_a_hard_budget_in_the_admin_is_audited_and_lifts_the_block(
    admin_client, org_a, hard_budget
):
    version = current_version()
    response = admin_client.post(f"/admin/billing/budget/{hard_budget.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Budget.objects.exists()
    assert AuditLog.objects.get(action="budget.delete").via == "admin"
    assert current_version() > version
    assert build_snapshot().orgs[org_a.id].blocked == {}


def test_bulk_deleting_budgets_goes_through_the_service(admin_client, org_a, hard_budget):
    other = budget_save(actor=SETUP, org=org_a, amount_usd=50)
    version = current_version()
    response = admin_client.post(
        "/admin/billing/budget/",
        {
            "action": "delete_selected",
            "_selected_action": [hard_budget.pk, other.pk],
            "post": "yes",
        },
    )
    assert response.status_code == 302
    assert not Budget.objects.exists()
    assert AuditLog.objects.filter(action="budget.delete", via="admin").count() == 2
    assert current_version() > version


def test_a_tier_limit_change_in_the_admin_is_audited_with_before_and_after(
    admin_client,
):
    limit = TierLimit.objects.get(tier="free")
    version = current_version()
    url = f"/admin/orgs/tierlimit/{limit.pk}/change/"
    response = admin_client.post(url, form_data(admin_client.get(url), monthly_requests="5"))
    assert response.status_code == 302
    row = AuditLog.objects.get(action="tier_limit.update")
    assert row.via == "admin"
    assert row.changes["before"]["monthly_requests"] == limit.monthly_requests
    assert row.changes["after"]["monthly_requests"] == 5
    assert current_version() > version


def test_tier_limits_and_usage_rows_cannot_be_deleted_in_the_admin(admin_client, org_a):
    limit = TierLimit.objects.get(tier="free")
    _spent(org_a, "1")
    record = UsageRecord.objects.get()
    assert (
        admin_client.post(f"/admin/orgs/tierlimit/{limit.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert (
        admin_client.post(
            f"/admin/billing/usagerecord/{record.pk}/delete/", {"post": "yes"}
        ).status_code
        == 403
    )
    assert TierLimit.objects.filter(pk=limit.pk).exists() and UsageRecord.objects.exists()


def test_notifications_are_read_only_in_the_admin(admin_client, org_a):
    from billing.models import Notification

    note = Notification.objects.create(org=org_a, message="hi")
    url = f"/admin/billing/notification/{note.pk}/"
    assert admin_client.post(url + "change/", {"message": "changed"}).status_code == 403
    assert admin_client.post(url + "delete/", {"post": "yes"}).status_code == 403


def test_a_budget_s_webhook_url_is_write_only_in_the_admin(admin_client, org_a):
    """The URL carries its secret (a Slack hook's token): the admin, like the dashboard and
    the API, never shows it; a save that leaves the field empty keeps it."""
    hook = "https://hooks.example.com/services/T000/B000/sEcReT-hook-token"
    budget = budget_save(actor=SETUP, org=org_a, amount_usd=10, webhook_url=hook)
    url = f"/admin/billing/budget/{budget.pk}/change/"
    page = admin_client.get(url)
    assert page.status_code == 200
    assert "sEcReT-hook-token" not in page.content.decode()
    assert "hooks.example.com" not in page.content.decode()

    response = admin_client.post(url, form_data(page, amount_usd="20.00"))
    assert response.status_code == 302
    assert Budget.objects.get(pk=budget.pk).webhook_url == hook  # kept

    other = "https://hooks.example.com/services/T000/B000/another"
    response = admin_client.post(url, form_data(admin_client.get(url), webhook_url=other))
    assert response.status_code == 302
    assert Budget.objects.get(pk=budget.pk).webhook_url == other

    response = admin_client.post(url, form_data(admin_client.get(url), clear_webhook="on"))
    assert response.status_code == 302
    assert Budget.objects.get(pk=budget.pk).webhook_url == ""
