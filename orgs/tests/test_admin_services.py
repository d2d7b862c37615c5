"""Every write in the orgs admin goes through orgs.services: same checks, same audit row."""

import pytest

from bonito.tests.admin_forms import form_data
from core.config_version import current_version
from orgs.audit import Actor
from orgs.models import AuditLog, Invitation, Membership, Organization, Role, Team, User

pytestmark = pytest.mark.django_db

SETUP = Actor(via="test-setup")
LAST_ADMIN = "An organization must keep at least one admin."


def _membership(user):
    return Membership.objects.get(user=user)


def _post_change(client, url, **changes):
    page = client.get(url)
    assert page.status_code == 200
    return client.post(url, form_data(page, **changes))


def _refused(response, client, message):
    assert response.status_code == 302  # back to the page, not a 500
    shown = [str(m) for m in client.get(response.url).context["messages"]]
    assert any(message in m for m in shown), shown


def _inline_prefix(page, user):
    formset = page.context["inline_admin_formsets"][0].formset
    index = next(i for i, f in enumerate(formset.forms) if f.instance.user_id == user.pk)
    return f"{formset.prefix}-{index}"


def test_demoting_the_last_admin_in_the_membership_admin_is_refused(admin_client, alice, bob):
    url = f"/admin/orgs/membership/{_membership(alice).pk}/change/"
    audit_rows = AuditLog.objects.count()
    response = _post_change(admin_client, url, role=Role.VIEWER)
    _refused(response, admin_client, LAST_ADMIN)
    assert _membership(alice).role == Role.ADMIN
    assert AuditLog.objects.count() == audit_rows


def test_demoting_the_last_admin_in_the_organization_inline_is_refused(
    admin_client, org_a, alice, bob
):
    url = f"/admin/orgs/organization/{org_a.pk}/change/"
    page = admin_client.get(url)
    prefix = _inline_prefix(page, alice)
    audit_rows = AuditLog.objects.count()
    response = admin_client.post(
        url, form_data(page, name="Acme Renamed", **{f"{prefix}-role": Role.VIEWER})
    )
    _refused(response, admin_client, LAST_ADMIN)
    assert _membership(alice).role == Role.ADMIN
    assert Organization.objects.get(pk=org_a.pk).name == "Acme Corp"  # nothing saved
    assert AuditLog.objects.count() == audit_rows


def test_a_role_change_in_the_membership_admin_is_audited_once_as_the_platform_admin(
    admin_client, alice, bob
):
    url = f"/admin/orgs/membership/{_membership(bob).pk}/change/"
    response = _post_change(admin_client, url, role=Role.VIEWER)
    assert response.status_code == 302
    assert _membership(bob).role == Role.VIEWER
    row = AuditLog.objects.get(action="membership.update")
    assert (row.actor_label, row.via) == ("root@bonito.test", "admin")
    assert row.changes["before"]["role"] == Role.MEMBER
    assert row.changes["after"]["role"] == Role.VIEWER


def test_a_role_change_in_the_organization_inline_is_audited(admin_client, org_a, alice, bob):
    url = f"/admin/orgs/organization/{org_a.pk}/change/"
    page = admin_client.get(url)
    response = admin_client.post(
        url, form_data(page, **{f"{_inline_prefix(page, bob)}-role": Role.VIEWER})
    )
    assert response.status_code == 302
    assert _membership(bob).role == Role.VIEWER
    row = AuditLog.objects.get(action="membership.update")
    assert (row.actor_label, row.via) == ("root@bonito.test", "admin")


def test_handing_over_the_admin_role_in_one_inline_save_works(admin_client, org_a, alice, bob):
    url = f"/admin/orgs/organization/{org_a.pk}/change/"
    page = admin_client.get(url)
    changes = {
        f"{_inline_prefix(page, alice)}-role": Role.VIEWER,
        f"{_inline_prefix(page, bob)}-role": Role.ADMIN,
    }
    assert admin_client.post(url, form_data(page, **changes)).status_code == 302
    assert (_membership(alice).role, _membership(bob).role) == (Role.VIEWER, Role.ADMIN)
    assert AuditLog.objects.filter(action="membership.update", via="admin").count() == 2


def test_removing_a_member_in_the_organization_inline_is_audited(admin_client, org_a, alice, bob):
    url = f"/admin/orgs/organization/{org_a.pk}/change/"
    page = admin_client.get(url)
    response = admin_client.post(
        url, form_data(page, **{f"{_inline_prefix(page, bob)}-DELETE": "on"})
    )
    assert response.status_code == 302
    assert not Membership.objects.filter(user=bob).exists()
    assert AuditLog.objects.get(action="membership.remove").via == "admin"


def test_deleting_the_last_admin_membership_is_refused(admin_client, alice):
    membership = _membership(alice)
    response = admin_client.post(f"/admin/orgs/membership/{membership.pk}/delete/", {"post": "yes"})
    _refused(response, admin_client, LAST_ADMIN)
    assert Membership.objects.filter(pk=membership.pk).exists()


def test_bulk_deleting_memberships_goes_through_the_service(admin_client, alice, bob, vera):
    ids = [_membership(bob).pk, _membership(vera).pk]
    response = admin_client.post(
        "/admin/orgs/membership/",
        {"action": "delete_selected", "_selected_action": ids, "post": "yes"},
    )
    assert response.status_code == 302
    assert not Membership.objects.filter(pk__in=ids).exists()
    rows = AuditLog.objects.filter(action="membership.remove", via="admin")
    assert sorted(r.changes["before"]["user"] for r in rows) == ["bob@acme.test", "vera@acme.test"]


def test_a_bulk_delete_that_includes_the_last_admin_deletes_nothing(admin_client, alice, bob):
    ids = [_membership(bob).pk, _membership(alice).pk]
    response = admin_client.post(
        "/admin/orgs/membership/",
        {"action": "delete_selected", "_selected_action": ids, "post": "yes"},
    )
    _refused(response, admin_client, LAST_ADMIN)
    assert Membership.objects.filter(pk__in=ids).count() == 2
    assert not AuditLog.objects.filter(action="membership.remove").exists()


def test_adding_a_membership_in_the_admin_is_audited(admin_client, org_a, alice, charlie):
    page = admin_client.get("/admin/orgs/membership/add/")
    data = form_data(page, org=str(org_a.pk), user=str(charlie.pk), role=Role.MEMBER)
    assert admin_client.post("/admin/orgs/membership/add/", data).status_code == 302
    assert Membership.objects.get(org=org_a, user=charlie).role == Role.MEMBER
    row = AuditLog.objects.filter(action="membership.add", via="admin").get()
    assert row.actor_label == "root@bonito.test"


def test_renaming_a_team_in_the_admin_is_audited(admin_client, org_a):
    from orgs import services

    team = services.team_create(actor=SETUP, org=org_a, name="Research")
    response = _post_change(admin_client, f"/admin/orgs/team/{team.pk}/change/", name="R&D")
    assert response.status_code == 302
    assert Team.objects.get(pk=team.pk).name == "R&D"
    row = AuditLog.objects.get(action="team.update")
    assert row.via == "admin" and row.changes["after"]["name"] == "R&D"


def test_deactivating_a_user_in_the_admin_is_audited(admin_client, bob):
    response = _post_change(admin_client, f"/admin/orgs/user/{bob.pk}/change/", is_active="")
    assert response.status_code == 302
    assert User.objects.get(pk=bob.pk).is_active is False
    row = AuditLog.objects.get(action="user.update")
    assert row.via == "admin" and row.changes == {
        "before": {"is_active": True},
        "after": {"is_active": False},
    }


def test_granting_platform_admin_in_the_admin_is_audited(admin_client, bob):
    data = {"is_staff": "on", "is_superuser": "on"}
    assert _post_change(admin_client, f"/admin/orgs/user/{bob.pk}/change/", **data).status_code
    row = AuditLog.objects.get(action="user.update")
    assert row.changes["after"] == {"is_staff": True, "is_superuser": True}


def test_deleting_an_org_s_only_admin_user_is_refused(admin_client, alice):
    response = admin_client.post(f"/admin/orgs/user/{alice.pk}/delete/", {"post": "yes"})
    _refused(response, admin_client, "only admin of Acme Corp")
    assert User.objects.filter(pk=alice.pk).exists()


def test_creating_a_user_in_the_admin_is_audited(admin_client):
    response = admin_client.post(
        "/admin/orgs/user/add/",
        {
            "email": "new@acme.test",
            "password1": "a-long-enough-password-1",
            "password2": "a-long-enough-password-1",
        },
    )
    assert response.status_code == 302, response.context and response.context.get("errors")
    assert User.objects.get(email="new@acme.test").check_password("a-long-enough-password-1")
    assert AuditLog.objects.get(action="user.create").via == "admin"


def test_deleting_an_org_in_the_admin_is_audited_and_bumps_the_config(admin_client, org_b):
    version = current_version()
    response = admin_client.post(f"/admin/orgs/organization/{org_b.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Organization.objects.filter(pk=org_b.pk).exists()
    row = AuditLog.objects.get(action="org.delete")
    assert (row.via, row.target_repr) == ("admin", "Globex")
    assert current_version() > version


def test_invitations_are_revoked_not_deleted_in_the_admin(admin_client, org_a, alice):
    from orgs import services

    invitation, _raw = services.invitation_create(actor=SETUP, org=org_a, email="new@acme.test")
    delete = admin_client.post(f"/admin/orgs/invitation/{invitation.pk}/delete/", {"post": "yes"})
    assert delete.status_code == 403
    admin_client.post(
        "/admin/orgs/invitation/", {"action": "revoke", "_selected_action": [invitation.pk]}
    )
    assert Invitation.objects.get(pk=invitation.pk).revoked_at is not None
    assert AuditLog.objects.get(action="invitation.revoke").via == "admin"


def test_django_groups_are_not_offered(admin_client):
    assert admin_client.get("/admin/auth/group/").status_code == 404


def test_setting_a_password_in_the_admin_is_audited_without_the_password(admin_client, bob):
    response = admin_client.post(
        f"/admin/orgs/user/{bob.pk}/password/",
        {"password1": "another-long-password-2", "password2": "another-long-password-2"},
    )
    assert response.status_code == 302
    assert User.objects.get(pk=bob.pk).check_password("another-long-password-2")
    row = AuditLog.objects.get(action="user.password_set")
    assert row.via == "admin" and "another-long" not in str(row.changes)


def _okta_sso(org):
    from orgs.sso import sso_config_save

    from .saml_idp import TestIdP

    idp = TestIdP()
    return sso_config_save(
        actor=SETUP,
        org=org,
        preset="okta",
        idp_entity_id=idp.entity_id,
        idp_sso_url=idp.sso_url,
        idp_x509_cert=idp.cert,
        email_domains=["acme.test"],
    )


def test_an_sso_configuration_is_changed_not_moved_or_deleted_in_the_admin(
    admin_client, org_a, alice
):
    from orgs.models import SSOConfig

    config = _okta_sso(org_a)
    url = f"/admin/orgs/ssoconfig/{config.pk}/change/"
    assert "org" not in admin_client.get(url).context["adminform"].form.fields
    assert _post_change(admin_client, url, session_hours="4").status_code == 302
    assert SSOConfig.objects.get(pk=config.pk).session_hours == 4
    assert AuditLog.objects.get(action="sso.config_update").via == "admin"
    delete = admin_client.post(url.replace("change/", "delete/"), {"post": "yes"})
    assert delete.status_code == 403


def test_a_platform_admin_rotates_an_orgs_sp_key_pair(admin_client, org_a, alice):
    from orgs.models import SSOConfig
    from orgs.sso import sp_keys

    config = _okta_sso(org_a)
    old = sp_keys(config)[1]
    response = admin_client.post(
        "/admin/orgs/ssoconfig/",
        {"action": "rotate_sp_key", "_selected_action": [config.pk]},
    )
    assert response.status_code == 302
    assert SSOConfig.objects.get(pk=config.pk).sp_certificate not in ("", old)
    assert AuditLog.objects.get(action="sso.sp_key_rotate").via == "admin"
