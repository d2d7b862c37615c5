"""An org keeps an admin who can sign in: its only active admin cannot be deleted,
deactivated or left without a password, from the services or the admin's User page."""

import pytest
from django.core.exceptions import ValidationError

from bonito.tests.admin_forms import form_data
from conftest import PASSWORD
from orgs import services
from orgs.audit import Actor
from orgs.models import AuditLog, Membership, Role, User

pytestmark = pytest.mark.django_db

SETUP = Actor(via="test-setup")
ONLY_ADMIN = "alice@acme.test is the only admin of Acme Corp; make someone else an admin first."

REFUSED_CHANGES = {
    "deactivate": lambda user: services.user_update(actor=SETUP, user=user, is_active=False),
    "remove the password": lambda user: services.user_set_password(
        actor=SETUP, user=user, password=None
    ),
    "delete": lambda user: services.user_delete(actor=SETUP, user=user),
}


def _refused(change, user):
    before = AuditLog.objects.count()
    with pytest.raises(ValidationError) as exc:
        REFUSED_CHANGES[change](user)
    assert exc.value.messages == [ONLY_ADMIN]
    assert AuditLog.objects.count() == before
    user = User.objects.get(pk=user.pk)
    assert user.is_active and user.check_password(PASSWORD)


@pytest.mark.parametrize("change", REFUSED_CHANGES)
def test_the_only_admin_is_kept(change, alice, bob):
    _refused(change, alice)


@pytest.mark.parametrize("change", REFUSED_CHANGES)
def test_another_admin_who_is_deactivated_does_not_count(change, alice, bob):
    services.membership_set_role(
        actor=SETUP, membership=Membership.objects.get(user=bob), role=Role.ADMIN
    )
    services.user_update(actor=SETUP, user=bob, is_active=False)
    _refused(change, alice)


@pytest.mark.parametrize("change", REFUSED_CHANGES)
def test_the_only_admin_of_any_of_their_orgs_is_kept(change, org_b, alice, charlie):
    # Alice is a member of Globex and the only admin of Acme: that is enough to refuse.
    services.membership_add(actor=SETUP, org=org_b, user=alice, role=Role.MEMBER)
    _refused(change, alice)


@pytest.mark.parametrize("change", REFUSED_CHANGES)
def test_with_another_active_admin_it_is_allowed(change, alice, bob):
    services.membership_set_role(
        actor=SETUP, membership=Membership.objects.get(user=bob), role=Role.ADMIN
    )
    REFUSED_CHANGES[change](alice)


def test_other_changes_to_the_only_admin_are_allowed(alice):
    services.user_update(actor=SETUP, user=alice, name="Alice A.")
    services.user_set_password(actor=SETUP, user=alice, password="a-new-long-password-3")
    assert User.objects.get(pk=alice.pk).check_password("a-new-long-password-3")


def test_an_admin_already_without_a_password_can_still_be_edited(alice):
    # e.g. an SSO-only admin: setting "no password" again changes nothing and is not refused.
    User.objects.filter(pk=alice.pk).update(password="!unusable")
    alice.refresh_from_db()
    services.user_set_password(actor=SETUP, user=alice, password=None)
    services.user_update(actor=SETUP, user=alice, name="Alice")


def _shown(client, response):
    assert response.status_code == 302  # back to the page, not a 500
    return [str(m) for m in client.get(response.url).context["messages"]]


def test_the_admin_user_page_shows_the_refusal_to_deactivate(admin_client, alice):
    url = f"/admin/orgs/user/{alice.pk}/change/"
    response = admin_client.post(url, form_data(admin_client.get(url), is_active=""))
    assert ONLY_ADMIN in _shown(admin_client, response)
    assert User.objects.get(pk=alice.pk).is_active


def test_the_admin_password_page_shows_the_refusal_to_remove_the_password(admin_client, alice):
    url = f"/admin/orgs/user/{alice.pk}/password/"
    response = admin_client.post(url, {"usable_password": "false", "unset-password": "1"})
    assert ONLY_ADMIN in _shown(admin_client, response)
    assert User.objects.get(pk=alice.pk).check_password(PASSWORD)
    assert not AuditLog.objects.filter(action="user.password_set").exists()


def test_the_admin_password_page_still_removes_a_members_password(admin_client, alice, bob):
    response = admin_client.post(
        f"/admin/orgs/user/{bob.pk}/password/", {"usable_password": "false", "unset-password": "1"}
    )
    assert response.status_code == 302
    assert not User.objects.get(pk=bob.pk).has_usable_password()


def _deactivated_admin(bob):
    services.membership_set_role(
        actor=SETUP, membership=Membership.objects.get(user=bob), role=Role.ADMIN
    )
    services.user_update(actor=SETUP, user=bob, is_active=False)


ONLY_ACTIVE = "An organization must keep an admin who can sign in"


def test_the_only_active_admin_is_not_demoted_or_removed_beside_a_deactivated_one(
    alice, bob, alice_client, org_a
):
    """Demoting or removing the one admin who can sign in, while the org's other admins are
    deactivated, left the org with no admin able to sign in: the same hole the rule on
    deleting and deactivating closes (docs/security.md, Admin and live data)."""
    _deactivated_admin(bob)
    membership = Membership.objects.get(user=alice)
    for change in (
        lambda: services.membership_set_role(actor=SETUP, membership=membership, role="member"),
        lambda: services.membership_remove(actor=SETUP, membership=membership),
    ):
        with pytest.raises(ValidationError) as exc:
            change()
        assert ONLY_ACTIVE in exc.value.messages[0]
    # Every way in: the dashboard's Team page and REST say so, and change nothing.
    response = alice_client.post(
        f"/o/{org_a.slug}/team/members/{membership.pk}/role/", {"role": "viewer"}
    )
    assert response.status_code == 302
    assert any(ONLY_ACTIVE in str(m) for m in alice_client.get(response.url).context["messages"])
    response = alice_client.patch(
        f"/api/gateway/members/{membership.pk}", {"role": "viewer"}, content_type="application/json"
    )
    assert response.status_code == 400 and ONLY_ACTIVE in str(response.json())
    assert alice_client.delete(f"/api/gateway/members/{membership.pk}").status_code == 400
    assert Membership.objects.get(pk=membership.pk).role == Role.ADMIN


def test_a_deactivated_admin_is_still_demoted_or_removed_beside_an_active_one(alice, bob):
    _deactivated_admin(bob)
    deactivated = Membership.objects.get(user=bob)
    services.membership_set_role(actor=SETUP, membership=deactivated, role=Role.VIEWER)
    services.membership_remove(actor=SETUP, membership=deactivated)
    assert list(Membership.objects.filter(role=Role.ADMIN).values_list("user", flat=True)) == [
        alice.pk
    ]
