"""Policies and routing policies edited in the admin go through governance.services."""

import pytest

from bonito.tests.admin_forms import form_data
from core.config_version import current_version
from gateway import services as gateway_services
from gateway.snapshot_builder import build_snapshot
from governance import services
from governance.models import Policy, RoutingPolicy
from orgs.audit import Actor
from orgs.models import AuditLog

pytestmark = pytest.mark.django_db
SETUP = Actor(via="test-setup")


def _change(client, url, **changes):
    return client.post(url, form_data(client.get(url), **changes))


def _audited(action):
    row = AuditLog.objects.filter(via="admin").get(action=action)
    assert (row.actor_label, row.via) == ("root@bonito.test", "admin")
    return row


@pytest.fixture
def routing_policy(org_a):
    return services.routing_policy_save(actor=SETUP, org=org_a, name="fast", models=["a", "b"])


def test_a_policy_change_in_the_admin_is_audited_and_enforced(admin_client, org_a):
    policy = services.policy_set(actor=SETUP, org=org_a, denied_models=["old"])
    version = current_version()
    response = _change(
        admin_client,
        f"/admin/governance/policy/{policy.pk}/change/",
        denied_models='["old", "risky"]',
    )
    assert response.status_code == 302
    assert Policy.objects.get(pk=policy.pk).denied_models == ["old", "risky"]
    row = _audited("policy.update")
    assert row.changes["after"]["denied_models"] == ["old", "risky"]
    assert current_version() > version
    assert build_snapshot().orgs[org_a.id].denied_models == {"old", "risky"}
    delete = admin_client.post(f"/admin/governance/policy/{policy.pk}/delete/", {"post": "yes"})
    assert delete.status_code == 403


def test_an_invalid_policy_value_is_refused_with_a_message(admin_client, org_a):
    policy = services.policy_set(actor=SETUP, org=org_a)
    response = _change(
        admin_client,
        f"/admin/governance/policy/{policy.pk}/change/",
        denied_models='{"not": "a list"}',
    )
    assert response.status_code == 302
    messages = [str(m) for m in admin_client.get(response.url).context["messages"]]
    assert any("must be a list of names" in m for m in messages)
    assert Policy.objects.get(pk=policy.pk).denied_models == []


def test_a_routing_policy_change_in_the_admin_is_audited(admin_client, routing_policy):
    version = current_version()
    response = _change(
        admin_client,
        f"/admin/governance/routingpolicy/{routing_policy.pk}/change/",
        strategy="round_robin",
    )
    assert response.status_code == 302
    assert RoutingPolicy.objects.get(pk=routing_policy.pk).strategy == "round_robin"
    _audited("routing_policy.update")
    assert current_version() > version


def test_deleting_a_routing_policy_in_the_admin_is_audited(admin_client, routing_policy):
    response = admin_client.post(
        f"/admin/governance/routingpolicy/{routing_policy.pk}/delete/", {"post": "yes"}
    )
    assert response.status_code == 302
    assert not RoutingPolicy.objects.exists()
    _audited("routing_policy.delete")


def test_a_routing_policy_with_live_rt_keys_is_not_deleted_in_bulk(
    admin_client, org_a, routing_policy
):
    gateway_services.api_key_create(
        actor=SETUP, org=org_a, name="rt", routing_policy=routing_policy
    )
    response = admin_client.post(
        "/admin/governance/routingpolicy/",
        {"action": "delete_selected", "_selected_action": [routing_policy.pk], "post": "yes"},
    )
    assert response.status_code in (200, 302)  # refused, never a 500
    assert RoutingPolicy.objects.filter(pk=routing_policy.pk).exists()
    assert not AuditLog.objects.filter(action="routing_policy.delete").exists()
