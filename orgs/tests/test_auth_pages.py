import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from conftest import PASSWORD

pytestmark = pytest.mark.django_db


def test_login_with_email_and_password(alice, org_a):
    client = Client()
    response = client.post(reverse("login"), {"username": "alice@acme.test", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get("/", follow=True).request["PATH_INFO"] == reverse(
        "overview", args=[org_a.slug]
    )


def test_a_wrong_password_is_refused(alice):
    response = Client().post(reverse("login"), {"username": "alice@acme.test", "password": "nope"})
    assert response.status_code == 200
    assert b"correct email and password" in response.content


def test_logout_ends_the_session(alice_client, org_a):
    assert alice_client.post(reverse("logout")).status_code == 302
    assert alice_client.get(reverse("overview", args=[org_a.slug])).status_code == 302


def test_login_form_enforces_csrf(alice):
    client = Client(enforce_csrf_checks=True)
    response = client.post(reverse("login"), {"username": "alice@acme.test", "password": PASSWORD})
    assert response.status_code == 403


def test_dashboard_forms_enforce_csrf(alice, org_a):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(reverse("settings", args=[org_a.slug]), {"name": "Pwned"})
    assert response.status_code == 403
    org_a.refresh_from_db()
    assert org_a.name == "Acme Corp"
    # With the token from the page, the same form works.
    page = client.get(reverse("settings", args=[org_a.slug]))
    token = page.cookies["csrftoken"].value
    response = client.post(
        reverse("settings", args=[org_a.slug]), {"name": "Acme Two", "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302


def test_password_reset_by_email(alice):
    client = Client()
    client.post(reverse("password_reset"), {"email": "alice@acme.test"})
    assert len(mail.outbox) == 1
    link = next(line for line in mail.outbox[0].body.splitlines() if "/password-reset/" in line)
    path = link.split("://", 1)[1].split("/", 1)[1]
    form_page = client.get("/" + path, follow=True)
    assert form_page.status_code == 200
    response = client.post(
        form_page.request["PATH_INFO"],
        {"new_password1": "brand-new-secret-77", "new_password2": "brand-new-secret-77"},
    )
    assert response.status_code == 302
    assert Client().login(username="alice@acme.test", password="brand-new-secret-77")


def test_password_reset_does_not_reveal_unknown_emails(db):
    response = Client().post(reverse("password_reset"), {"email": "nobody@nowhere.test"})
    assert response.status_code == 302
    assert len(mail.outbox) == 0


def test_a_user_made_without_a_password_signs_in_after_a_password_reset(org_a, capsys):
    """`create_user` without BONITO_USER_PASSWORD says the user "signs in after a password
    reset" (README): the reset form sent such a user nothing (Django's form skips accounts
    without a usable password), so they could never sign in with a password."""
    from django.core.management import call_command

    call_command("create_user", "--email", "newbie@acme.test", "--org", org_a.slug)
    assert "after a password reset" in capsys.readouterr().out
    client = Client()
    client.post(reverse("password_reset"), {"email": "Newbie@acme.test"})
    assert [m.to for m in mail.outbox] == [["newbie@acme.test"]]
    link = next(line for line in mail.outbox[0].body.splitlines() if "/password-reset/" in line)
    form_page = client.get("/" + link.split("://", 1)[1].split("/", 1)[1], follow=True)
    response = client.post(
        form_page.request["PATH_INFO"],
        {"new_password1": "first-own-secret-42", "new_password2": "first-own-secret-42"},
    )
    assert response.status_code == 302
    assert Client().login(username="newbie@acme.test", password="first-own-secret-42")


def test_a_deactivated_user_gets_no_reset_link(org_a, alice, bob):
    from orgs import services
    from orgs.audit import Actor

    services.user_update(actor=Actor(via="test"), user=bob, is_active=False)
    Client().post(reverse("password_reset"), {"email": bob.email})
    assert mail.outbox == []
