"""The sign-in and reset pages do not tell who has an account or who belongs to an org that
requires SSO: only the account's own password unlocks that answer."""

import re

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.core import mail
from django.test import Client

from conftest import PASSWORD
from orgs import sso
from orgs.audit import Actor

from .saml_idp import TestIdP
from .test_sso import verify_domains

pytestmark = pytest.mark.django_db


@pytest.fixture
def sso_required(org_a, alice, bob):
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
    verify_domains(org_a, "acme.test")


def page(response, email: str) -> str:
    """The page with what differs by design taken out: the CSRF token, the email typed."""
    text = response.content.decode()
    text = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", text)
    return text.replace(email, "EMAIL")


def test_a_wrong_password_for_an_sso_member_reads_like_an_unknown_email(sso_required):
    member = Client().post("/login/", {"username": "bob@acme.test", "password": "wrong-guess"})
    stranger = Client().post("/login/", {"username": "nobody@acme.test", "password": "wrong-guess"})
    assert member.status_code == stranger.status_code == 200
    assert page(member, "bob@acme.test") == page(stranger, "nobody@acme.test")
    assert "single sign-on:" not in member.content.decode()


def test_the_right_password_of_an_sso_member_points_to_sso_and_still_refuses(sso_required):
    client = Client()
    response = client.post("/login/", {"username": "bob@acme.test", "password": PASSWORD})
    assert response.status_code == 200
    assert "Acme Corp signs in through single sign-on" in response.content.decode()
    assert b'href="/sso/acme/login/' in response.content
    assert "_auth_user_id" not in client.session
    # The break-glass owner signs in with her password as before.
    client = Client()
    response = client.post("/login/", {"username": "alice@acme.test", "password": PASSWORD})
    assert response.status_code == 302 and "_auth_user_id" in client.session


def test_known_and_unknown_emails_both_run_the_password_hasher(monkeypatch, sso_required):
    # Same work on both paths: no timing tells whether an email has an account.
    calls = []
    real = PBKDF2PasswordHasher.encode

    def counting(self, password, salt, iterations=None):
        calls.append(password)
        return real(self, password, salt, iterations)

    monkeypatch.setattr(PBKDF2PasswordHasher, "encode", counting)
    for email in ("bob@acme.test", "nobody@acme.test", "charlie@globex.test"):
        calls.clear()
        Client().post("/login/", {"username": email, "password": "wrong-guess"})
        assert calls == ["wrong-guess"], email


def test_password_reset_answers_alike_for_members_sso_members_and_strangers(sso_required):
    answers = {
        email: Client().post("/password-reset/", {"email": email})
        for email in ("alice@acme.test", "bob@acme.test", "nobody@acme.test")
    }
    assert {r.status_code for r in answers.values()} == {302}
    assert {r["Location"] for r in answers.values()} == {"/password-reset/sent/"}
    assert len(mail.outbox) == 2  # alice's and bob's, in their own inboxes only


def test_password_reset_looks_the_email_up_in_the_worker_not_the_request(
    monkeypatch, django_assert_num_queries, alice
):
    # Sending mail takes a while and only known emails get one: the request must not wait.
    from orgs.tasks import password_reset_send

    sent = []
    monkeypatch.setattr(password_reset_send, "apply_async", lambda **kw: sent.append(kw["args"]))
    for email in ("alice@acme.test", "nobody@acme.test"):
        with django_assert_num_queries(0):
            response = Client().post("/password-reset/", {"email": email})
        assert response.status_code == 302
    assert sent == [
        ("alice@acme.test", "testserver", False),
        ("nobody@acme.test", "testserver", False),
    ]
    assert mail.outbox == []
