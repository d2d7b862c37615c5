from datetime import timedelta

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from orgs import services
from orgs.audit import Actor
from orgs.models import AuditLog, Invitation, Membership, User

pytestmark = pytest.mark.django_db


def _invite(org, alice, email="newbie@acme.test", role="member"):
    return services.invitation_create(actor=Actor(user=alice), org=org, email=email, role=role)


def _token_from_mail():
    body = mail.outbox[-1].body
    return body.split("/invite/")[1].split("/")[0]


def test_it_emails_a_single_use_link(alice_client, org_a, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post(
            reverse("team", args=[org_a.slug]), {"email": "newbie@acme.test", "role": "viewer"}
        )
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["newbie@acme.test"]
    token = _token_from_mail()
    invitation = Invitation.objects.get(email="newbie@acme.test")
    assert token not in invitation.token_hash  # only the hash is stored


def test_a_new_user_accepts_and_lands_in_the_org(client, alice, org_a):
    _inv, token = _invite(org_a, alice, role="viewer")
    response = client.post(
        reverse("invitation_accept", args=[token]),
        {"name": "New Bie", "password": "a-long-new-password-1"},
    )
    assert response.status_code == 302
    user = User.objects.get(email="newbie@acme.test")
    assert Membership.objects.get(org=org_a, user=user).role == "viewer"
    assert client.get(reverse("overview", args=[org_a.slug])).status_code == 200


def test_a_reused_link_is_refused_clearly(client, alice, org_a):
    _inv, token = _invite(org_a, alice)
    client.post(reverse("invitation_accept", args=[token]), {"password": "a-long-new-password-1"})
    other = client.__class__()
    response = other.post(
        reverse("invitation_accept", args=[token]), {"password": "another-password-22"}
    )
    assert response.status_code == 410
    assert b"already been used" in response.content
    assert Membership.objects.filter(org=org_a, user__email="newbie@acme.test").count() == 1


def test_an_expired_link_is_refused_clearly(client, alice, org_a):
    invitation, token = _invite(org_a, alice)
    Invitation.objects.filter(pk=invitation.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    response = client.get(reverse("invitation_accept", args=[token]))
    assert response.status_code == 410
    assert b"expired" in response.content
    response = client.post(
        reverse("invitation_accept", args=[token]), {"password": "a-long-new-password-1"}
    )
    assert response.status_code == 410
    assert not User.objects.filter(email="newbie@acme.test").exists()


def test_a_made_up_token_is_refused(client, db):
    response = client.get(reverse("invitation_accept", args=["inv-not-a-real-token"]))
    assert response.status_code == 410
    assert b"not valid" in response.content


def test_a_revoked_link_is_refused(client, alice, org_a):
    invitation, token = _invite(org_a, alice)
    services.invitation_revoke(actor=Actor(user=alice), invitation=invitation)
    assert b"revoked" in client.get(reverse("invitation_accept", args=[token])).content


def test_a_signed_in_user_with_another_email_cannot_take_it(charlie_client, alice, org_a):
    _inv, token = _invite(org_a, alice)
    response = charlie_client.post(reverse("invitation_accept", args=[token]))
    assert response.status_code == 410
    assert b"signed in as charlie@globex.test" in response.content
    assert not Membership.objects.filter(org=org_a, user__email="charlie@globex.test").exists()


def test_accepting_is_audited(client, alice, org_a):
    _inv, token = _invite(org_a, alice)
    client.post(reverse("invitation_accept", args=[token]), {"password": "a-long-new-password-1"})
    actions = list(AuditLog.objects.for_org(org_a).values_list("action", flat=True))
    assert "invitation.create" in actions and "invitation.accept" in actions
    row = AuditLog.objects.get(action="invitation.create")
    assert token not in str(row.changes) and token not in row.target_repr


def test_charlie_cannot_revoke_alices_invitation(charlie_client, alice, org_a, org_b):
    invitation, _token = _invite(org_a, alice)
    url = reverse("invitation_revoke", args=[org_b.slug, invitation.id])
    assert charlie_client.post(url).status_code == 404
    invitation.refresh_from_db()
    assert invitation.revoked_at is None


@pytest.fixture
def dead_broker(monkeypatch):
    """Point the project's Celery app at a port where no broker listens."""
    import socket

    from bonito.celery import app
    from core import tasks

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    keys = (
        "broker_url",
        "broker_transport_options",
        "broker_connection_timeout",
        "task_always_eager",
    )
    saved = {k: app.conf[k] for k in keys}

    def reset_pools():
        from kombu import pools

        pools.reset()  # kombu caches producer pools per connection, process-wide
        app._pool = None
        app.amqp._producer_pool = None

    app.conf.update(
        broker_url=dead,
        broker_transport_options={},
        broker_connection_timeout=0.2,
        task_always_eager=False,
    )
    reset_pools()
    monkeypatch.setattr(tasks, "RETRY_DELAYS_S", (0.05,))
    yield
    app.conf.update(saved)
    reset_pools()


@pytest.mark.django_db(transaction=True)  # the fallback runs the task in another thread
def test_a_dead_broker_never_fails_the_invite_and_the_email_still_goes(
    alice_client, org_a, dead_broker, django_capture_on_commit_callbacks
):
    import time

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(
            reverse("team", args=[org_a.slug]), {"email": "late@acme.test", "role": "member"}
        )
    assert response.status_code == 302
    deadline = time.time() + 15
    while not mail.outbox and time.time() < deadline:
        time.sleep(0.05)
    assert mail.outbox and mail.outbox[0].to == ["late@acme.test"]


@pytest.mark.parametrize("name", ["Acme\nBcc: x@evil.test", "Acme\r\nCorp", "Acme\u2028Corp"])
def test_an_org_name_with_a_line_break_still_gets_the_invitation_out(
    alice, org_a, name, django_capture_on_commit_callbacks
):
    # Names are checked when set, but a row written before that may hold a break.
    from orgs.models import Organization

    Organization.objects.filter(pk=org_a.pk).update(name=name)
    org_a.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        _invite(org_a, alice)
    (email,) = mail.outbox
    assert email.subject.startswith("You are invited to Acme") and "\n" not in email.subject
    assert "\r" not in email.subject and "\u2028" not in email.subject


def test_a_name_too_long_is_said_so_not_blamed_on_the_password(client, alice, org_a):
    """A name over 150 characters made the form invalid, and the page said "Choose a
    password of at least 8 characters." about a good password: the newcomer could not
    tell what to change. The page names the field at fault and keeps what was typed."""
    _inv, token = _invite(org_a, alice)
    url = reverse("invitation_accept", args=[token])
    response = client.post(url, {"name": "N" * 151, "password": "a-long-new-password-1"})
    assert response.status_code == 200
    page = response.content.decode()
    assert "at most 150 characters" in page
    assert "Choose a password" not in page.split('role="alert"')[1].split("</div>")[0]
    assert 'maxlength="150"' in page
    assert not User.objects.filter(email="newbie@acme.test").exists()
    # Short password: that is what it says.
    response = client.post(url, {"name": "New Bie", "password": "short"})
    assert "at least 8 characters" in response.content.decode()
    assert 'value="New Bie"' in response.content.decode()


def test_a_second_pending_invitation_cannot_undo_a_demotion(client, alice, org_a):
    """Two invitations to one email were both pending (an admin re-sent one as a new
    invitation); the person joined with the first, was demoted by an admin, then opened the
    second link, which set the role it carried: the demotion undone by the demoted member.
    An invitation is for joining: a member opening one is told so and nothing changes."""
    _first, first = _invite(org_a, alice, role="admin")
    _second, second = _invite(org_a, alice, role="admin")
    client.post(reverse("invitation_accept", args=[first]), {"password": "a-long-new-password-1"})
    membership = Membership.objects.get(org=org_a, user__email="newbie@acme.test")
    services.membership_set_role(actor=Actor(user=alice), membership=membership, role="viewer")
    response = client.post(reverse("invitation_accept", args=[second]))
    assert response.status_code == 410
    assert b"already a member" in response.content
    membership.refresh_from_db()
    assert membership.role == "viewer"
