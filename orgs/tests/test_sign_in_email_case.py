"""Sign-in matches the email whatever its case and surrounding spaces; only the password is
case-sensitive. The limits, the SSO rules and the hasher's timing are unchanged."""

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.test import Client

from conftest import PASSWORD
from orgs import sso
from orgs.audit import Actor
from orgs.models import User

from .saml_idp import TestIdP
from .test_sso import verify_domains

pytestmark = pytest.mark.django_db

SPELLINGS = [
    "Alice@acme.test",
    "ALICE@ACME.TEST",
    "alice@Acme.Test",
    " alice@acme.test ",
    "\talice@ACME.test\n",
]


def signed_in_as(client):
    return client.session.get("_auth_user_id")


@pytest.mark.parametrize("typed", SPELLINGS)
def test_it_signs_in_whatever_the_case_of_the_email(alice, typed):
    client = Client()
    response = client.post("/login/", {"username": typed, "password": PASSWORD})
    assert response.status_code == 302
    assert signed_in_as(client) == str(alice.pk)


@pytest.mark.parametrize("typed", SPELLINGS[:2])
def test_the_admin_sign_in_matches_the_email_whatever_its_case(typed):
    root = User.objects.create_superuser(email="alice@acme.test", password=PASSWORD)
    client = Client()
    response = client.post("/admin/login/", {"username": typed, "password": PASSWORD})
    assert response.status_code == 302
    assert signed_in_as(client) == str(root.pk)


def test_the_password_stays_case_sensitive(alice):
    client = Client()
    response = client.post("/login/", {"username": "Alice@acme.test", "password": PASSWORD.upper()})
    assert response.status_code == 200 and not signed_in_as(client)
    text = response.content.decode()
    assert "correct email and password" in text
    assert "both fields may be case-sensitive" not in text
    response = Client().post("/admin/login/", {"username": "Alice@acme.test", "password": "x"})
    assert "correct email and password" in response.content.decode()
    assert "both fields may be case-sensitive" not in response.content.decode()


def test_case_variants_count_as_one_account_for_the_lockout(settings, alice):
    settings.LOGIN_FAILURES_PER_ACCOUNT = settings.AXES_FAILURE_LIMIT = 5
    for n, typed in enumerate(SPELLINGS):
        Client().post(
            "/login/",
            {"username": typed, "password": f"guess-{n}"},
            REMOTE_ADDR=f"203.0.113.{n + 1}",
        )
    response = Client().post("/login/", {"username": "alice@acme.test", "password": PASSWORD})
    assert response.status_code == 429


def test_an_email_that_differs_by_more_than_case_does_not_sign_in(alice):
    for typed in ("alice@acme.test.", "al ice@acme.test", "alice@acme"):
        client = Client()
        client.post("/login/", {"username": typed, "password": PASSWORD})
        assert not signed_in_as(client), typed


def test_sso_required_still_refuses_a_member_in_any_case(org_a, alice, bob):
    idp = TestIdP()
    sso.sso_config_save(
        actor=Actor(via="test"),
        org=org_a,
        preset="okta",
        idp_entity_id=idp.entity_id,
        idp_sso_url=idp.sso_url,
        idp_x509_cert=idp.cert,
        email_domains=["acme.test"],
        sso_required=True,
        break_glass_email="alice@acme.test",
    )
    verify_domains(org_a, "acme.test")  # SSO is required only for the org's verified domains
    client = Client()
    response = client.post("/login/", {"username": "BOB@acme.test", "password": PASSWORD})
    assert "Acme Corp signs in through single sign-on" in response.content.decode()
    assert not signed_in_as(client)
    # The break-glass owner keeps password sign-in, in any case too.
    client = Client()
    client.post("/login/", {"username": "Alice@Acme.test", "password": PASSWORD})
    assert signed_in_as(client) == str(alice.pk)


def test_known_and_unknown_emails_in_any_case_run_the_hasher_once(monkeypatch, alice):
    calls = []
    real = PBKDF2PasswordHasher.encode

    def counting(self, password, salt, iterations=None):
        calls.append(password)
        return real(self, password, salt, iterations)

    monkeypatch.setattr(PBKDF2PasswordHasher, "encode", counting)
    for typed in ("ALICE@acme.test", "Nobody@acme.test", " nobody@ACME.test "):
        calls.clear()
        Client().post("/login/", {"username": typed, "password": "wrong-guess"})
        assert calls == ["wrong-guess"], typed


def test_an_account_whose_email_was_stored_in_mixed_case_signs_in(alice):
    # Older rows or other paths may have kept an upper-case email: it still matches.
    User.objects.filter(pk=alice.pk).update(email="Alice@Acme.test")
    client = Client()
    client.post("/login/", {"username": "alice@acme.test", "password": PASSWORD})
    assert signed_in_as(client) == str(alice.pk)
