import pytest

from gateway import services as gateway_services
from orgs import services
from orgs.audit import Actor, scrub
from orgs.models import AuditLog, Membership

pytestmark = pytest.mark.django_db


def _rows(org, action):
    return AuditLog.objects.for_org(org).filter(action=action)


def test_org_create_and_update_are_audited(alice, org_a):
    actor = Actor(user=alice, ip="10.0.0.7")
    services.org_update(actor=actor, org=org_a, name="Acme Inc", tier="enterprise")
    row = _rows(org_a, "org.update").get()
    assert row.actor == alice and row.actor_label == "alice@acme.test" and row.ip == "10.0.0.7"
    assert row.changes["before"]["name"] == "Acme Corp"
    assert row.changes["after"] == {
        "slug": "acme",
        "name": "Acme Inc",
        "tier": "enterprise",
        "deployment_mode": "shared",
    }
    assert _rows(org_a, "org.create").count() == 1


def test_membership_changes_are_audited(alice, bob, org_a):
    actor = Actor(user=alice)
    membership = Membership.objects.get(org=org_a, user=bob)
    services.membership_set_role(actor=actor, membership=membership, role="viewer")
    services.membership_remove(actor=actor, membership=membership)
    assert _rows(org_a, "membership.add").count() == 2  # alice and bob
    assert _rows(org_a, "membership.update").get().changes == {
        "before": {"role": "member", "team": None},
        "after": {"role": "viewer", "team": None},
    }
    assert _rows(org_a, "membership.remove").get().changes["before"]["user"] == "bob@acme.test"


def test_team_changes_are_audited(alice, org_a):
    team = services.team_create(actor=Actor(user=alice), org=org_a, name="Research")
    services.team_delete(actor=Actor(user=alice), team=team)
    assert _rows(org_a, "team.create").count() == 1
    assert _rows(org_a, "team.delete").count() == 1


def test_a_failed_change_leaves_no_audit_row(alice, org_a):
    membership = Membership.objects.get(org=org_a, user=alice)
    with pytest.raises(Exception, match="at least one admin"):
        services.membership_remove(actor=Actor(user=alice), membership=membership)
    assert not _rows(org_a, "membership.remove").exists()


def test_key_creation_audit_holds_no_secret(alice, org_a):
    key, raw = gateway_services.api_key_create(actor=Actor(user=alice), org=org_a, name="ci")
    row = _rows(org_a, "api_key.create").get()
    text = str(row.changes) + row.target_repr
    assert raw not in text and key.key_hash not in text
    assert key.masked in text


def test_audit_rows_are_immutable(alice, org_a):
    row = AuditLog.objects.for_org(org_a).first()
    row.action = "tampered"
    with pytest.raises(TypeError):
        row.save()
    with pytest.raises(TypeError):
        row.delete()
    with pytest.raises(TypeError):
        AuditLog.objects.filter(pk=row.pk).update(action="tampered")
    with pytest.raises(TypeError):
        AuditLog.objects.filter(pk=row.pk).delete()


def test_scrub_removes_secrets_by_name_and_by_shape():
    summary = {
        "api_key": "sk-live-xyz",
        "nested": {"password": "hunter2", "note": "uses bn-" + "A" * 38},
        "name": "prod",
    }
    cleaned = scrub(summary)
    assert cleaned["api_key"] == "[redacted]"
    assert cleaned["nested"]["password"] == "[redacted]"
    assert "AAAA" not in cleaned["nested"]["note"]
    assert cleaned["name"] == "prod"


def test_charlie_sees_none_of_acmes_audit_rows(alice, charlie, org_a, org_b):
    assert AuditLog.objects.for_org(org_b).exists()
    assert not AuditLog.objects.for_org(org_b).filter(actor=alice).exists()


def test_renaming_the_org_on_the_settings_page_is_audited(alice_client, org_a):
    """The Settings page's form (a ModelForm on the org) set the new name on the org before
    org_update read the "before" state, so the service saw no change: the rename was saved
    with no audit row (and no config version move)."""
    from core.config_version import current_version

    version = current_version()
    response = alice_client.post(f"/o/{org_a.slug}/settings/", {"name": "Acme Renamed"})
    assert response.status_code == 302
    row = _rows(org_a, "org.update").get()
    assert row.changes["before"]["name"] == "Acme Corp"
    assert row.changes["after"]["name"] == "Acme Renamed"
    assert row.via == "web"
    assert current_version() > version
