"""The group mapping at SSO sign-in never demotes or removes the break-glass owner, nor
the org's last admin; everyone else mapped to no role loses their membership."""

# ruff: noqa: F811  (the fixtures imported from test_sso are parameters here)
import pytest
from django.test import Client

from orgs import services, sso
from orgs.audit import Actor
from orgs.models import AuditLog, Membership

from .test_sso import _no_acs_limit, _valid, acme_sso, idp, post, signed_in_as, start  # noqa: F401

pytestmark = pytest.mark.django_db
ADMIN = Actor(via="test")


def login_with(idp, email, groups):
    client = Client()
    xml = idp.signed_response(
        **_valid(idp, start(client), name_id=email, attributes={"groups": groups})
    )
    return client, post(client, xml)


def last_login() -> dict:
    return AuditLog.objects.filter(action="sso.login").latest("id").changes["after"]


@pytest.fixture
def break_glass(acme_sso, alice, bob):
    # Another admin exists, so alice is not the last one: only break-glass protects her.
    services.membership_set_role(
        actor=ADMIN, membership=Membership.objects.get(user=bob), role="admin", team=None
    )
    return sso.sso_config_save(actor=ADMIN, org=acme_sso.org, break_glass_email="alice@acme.test")


@pytest.mark.parametrize("groups", [["Finance"], ["Interns"], []])
def test_the_break_glass_owner_keeps_admin_whatever_the_idp_sends(break_glass, idp, alice, groups):
    client, response = login_with(idp, "alice@acme.test", groups)
    assert response.status_code == 302 and signed_in_as(client) == "alice@acme.test"
    assert Membership.objects.get(user=alice).role == "admin"
    after = last_login()
    assert after["role"] == "admin" and after["kept_because"] == "break-glass owner"
    assert after["mapped_role"] == ("viewer" if groups == ["Finance"] else None)


def test_the_last_admin_mapped_to_no_role_keeps_the_membership_and_is_told_why(
    acme_sso, idp, alice
):
    client, response = login_with(idp, "alice@acme.test", ["Interns"])
    assert response.status_code == 302 and signed_in_as(client) == "alice@acme.test"
    assert Membership.objects.get(user=alice).role == "admin"
    after = last_login()
    assert after["kept_because"] == "last admin" and after["mapped_role"] is None
    _c, response = login_with(idp, "alice@acme.test", ["Finance"])  # no demotion either
    assert Membership.objects.get(user=alice).role == "admin"
    assert last_login()["kept_because"] == "last admin"


def test_anyone_else_mapped_to_no_role_loses_their_membership(break_glass, idp, bob):
    client, response = login_with(idp, "bob@acme.test", ["Interns"])
    assert response.status_code == 403 and b"is in no group that has a role" in response.content
    assert not Membership.objects.filter(user=bob).exists()
    assert signed_in_as(client) is None


def test_the_settings_page_states_the_rule(alice_client, acme_sso):
    page = alice_client.get("/o/acme/settings/sso/").content.decode()
    assert 'id="sso-role-rule"' in page
    assert "except the break-glass owner and the organization's last admin" in page


@pytest.mark.parametrize("required", [True, False])
def test_the_break_glass_owner_is_not_demoted_or_removed_by_another_admin(
    break_glass, alice, bob, required
):
    """The break-glass owner is "an org admin named in the settings" (docs/sso.md): the
    settings refuse to name anyone else. Another admin could still demote or remove them on
    the Team page or over REST, leaving an org that requires SSO with no admin who may sign
    in with a password when the IdP breaks. Name another break-glass owner first."""
    sso.sso_config_save(actor=ADMIN, org=break_glass.org, sso_required=required)
    client = Client()
    client.force_login(bob)
    membership = Membership.objects.get(user=alice)
    response = client.patch(
        f"/api/gateway/members/{membership.pk}", {"role": "viewer"}, content_type="application/json"
    )
    assert response.status_code == 400 and "break-glass owner" in str(response.json())
    assert client.delete(f"/api/gateway/members/{membership.pk}").status_code == 400
    response = client.post(
        f"/o/{break_glass.org.slug}/team/members/{membership.pk}/remove/", follow=True
    )
    assert any("break-glass owner" in str(m) for m in response.context["messages"])
    assert Membership.objects.get(pk=membership.pk).role == "admin"
    # Once bob is the break-glass owner, alice is an admin like any other.
    sso.sso_config_save(actor=ADMIN, org=break_glass.org, break_glass_email="bob@acme.test")
    services.membership_set_role(actor=ADMIN, membership=membership, role="viewer")
    services.membership_remove(actor=ADMIN, membership=membership)


@pytest.mark.parametrize(
    "change",
    [
        lambda user: services.user_delete(actor=ADMIN, user=user),
        lambda user: services.user_update(actor=ADMIN, user=user, is_active=False),
        lambda user: services.user_set_password(actor=ADMIN, user=user, password=None),
    ],
    ids=["delete", "deactivate", "no password"],
)
def test_the_break_glass_owner_of_an_org_requiring_sso_keeps_password_sign_in(
    break_glass, alice, change
):
    """Deleting the break-glass owner emptied the setting (SET_NULL) of an org that
    requires SSO, and deactivating them or taking their password left it naming someone
    who cannot sign in: either way the org had no way in when its IdP failed."""
    from django.core.exceptions import ValidationError

    from orgs.models import User

    sso.sso_config_save(actor=ADMIN, org=break_glass.org, sso_required=True)
    with pytest.raises(ValidationError) as exc:
        change(alice)
    assert "break-glass owner" in exc.value.messages[0]
    user = User.objects.get(pk=alice.pk)
    assert user.is_active and user.has_usable_password()
