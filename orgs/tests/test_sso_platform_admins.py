"""An org's IdP never signs in a platform admin. The IdP is the org admin's choice (its URL
and certificate are on their settings page), so an org admin who points it at an IdP they
run can assert any email of the org's verified domain. A platform admin with such an email
(one company running Bonito for itself: alice@acme.test runs the platform, Acme's domain is
acme.test) was signed in with staff and superuser rights: every org's data and the Django
admin. ADMIN_EMAILS grants those rights at sign-in, so an email listed there is refused
too, even before it has an account. Platform admins sign in with their password."""

# ruff: noqa: F811  (the fixtures imported from test_sso are parameters here)
import pytest
from django.test import Client

from orgs.models import Membership, User

from .test_sso import _no_acs_limit, _valid, acme_sso, idp, post, signed_in_as, start  # noqa: F401

pytestmark = pytest.mark.django_db


def _sign_in(idp, email):
    client = Client()
    response = post(client, idp.signed_response(**_valid(idp, start(client), name_id=email)))
    return client, response


@pytest.mark.parametrize("member", [True, False])
def test_a_platform_admin_is_not_signed_in_by_an_org_idp(acme_sso, idp, org_a, member):
    root = User.objects.create_superuser(email="root@acme.test", password="x-long-password-1")
    if member:
        Membership.objects.create(org=org_a, user=root, role="viewer")
    client, response = _sign_in(idp, "root@acme.test")
    assert response.status_code == 403
    assert "platform admin" in response.content.decode()
    assert signed_in_as(client) is None
    assert Membership.objects.filter(user=root).count() == (1 if member else 0)


def test_an_email_of_admin_emails_is_not_signed_in_nor_created(acme_sso, idp, settings):
    settings.ADMIN_EMAILS = ["boss@acme.test"]
    client, response = _sign_in(idp, "boss@acme.test")
    assert response.status_code == 403 and signed_in_as(client) is None
    assert not User.objects.filter(email="boss@acme.test").exists()


def test_other_users_of_the_domain_still_sign_in(acme_sso, idp):
    client, response = _sign_in(idp, "dana@acme.test")
    assert response.status_code == 302 and signed_in_as(client) == "dana@acme.test"


def test_a_platform_admin_in_an_org_requiring_sso_keeps_password_sign_in(acme_sso, org_a):
    """Refused by the IdP, a platform admin must keep their password, even as a member of
    an org whose SSO is required for its domain (or they could not sign in at all)."""
    from orgs import sso
    from orgs.audit import Actor

    sso.sso_config_save(
        actor=Actor(via="test"), org=org_a, sso_required=True, break_glass_email="alice@acme.test"
    )
    root = User.objects.create_superuser(email="root@acme.test", password="x-long-password-1")
    Membership.objects.create(org=org_a, user=root, role="viewer")
    client = Client()
    response = client.post(
        "/login/", {"username": "root@acme.test", "password": "x-long-password-1"}
    )
    assert response.status_code == 302 and signed_in_as(client) == "root@acme.test"
