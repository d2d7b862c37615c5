"""Every invitation sent (a new one or a resend) is an email, so they are rate-limited per
hour per org (INVITATION_SENDS_PER_ORG_PER_HOUR) and per user who sends them
(INVITATION_SENDS_PER_USER_PER_HOUR, across orgs; a personal access token counts as its
user), counted in the audit log (test_invitation_limit_restart.py: it holds across restarts
and processes): a compromised admin session or token sent unlimited invitations before. Past a limit nothing is created or sent: the dashboard's form
says when to try again and keeps what was typed (429), REST answers 429 with Retry-After."""

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from orgs import services
from orgs.audit import Actor
from orgs.models import AuditLog, Invitation, Role
from orgs.tests.invitations import rest_invite

pytestmark = pytest.mark.django_db

ACTOR = Actor(via="test")


@pytest.fixture(autouse=True)
def _limits(settings):
    settings.INVITATION_SENDS_PER_USER_PER_HOUR = 3
    settings.INVITATION_SENDS_PER_ORG_PER_HOUR = 5
    settings.INVITATION_RESEND_PER_HOUR = 10


def _dashboard(client, org, email):
    return client.post(
        reverse("team", args=[org.slug]), {"email": email, "role": "viewer", "team": ""}
    )


def _admin_client(org, email):
    user = services.user_create(actor=ACTOR, email=email, password="x-Pass-word-1234")
    services.membership_add(actor=ACTOR, org=org, user=user, role=Role.ADMIN)
    client = Client()
    client.force_login(user)
    return client


def _invited(org):
    return set(Invitation.objects.filter(org=org).values_list("email", flat=True))


def test_the_dashboard_refuses_past_the_user_limit_and_keeps_the_form(
    alice_client, org_a, django_capture_on_commit_callbacks
):
    for n in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            assert _dashboard(alice_client, org_a, f"p{n}@acme.test").status_code == 302
    assert len(mail.outbox) == 3
    with django_capture_on_commit_callbacks(execute=True):
        response = _dashboard(alice_client, org_a, "flood@acme.test")
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    html = response.content.decode()
    assert "You sent 3 invitations in the last hour; try again in " in html
    assert 'value="flood@acme.test"' in html  # what was typed is kept
    assert '<option value="viewer" selected>' in html
    assert "flood@acme.test" not in _invited(org_a)
    assert len(mail.outbox) == 3
    assert AuditLog.objects.filter(action="invitation.create").count() == 3


def test_rest_refuses_past_the_user_limit_with_429(alice_client, org_a):
    for n in range(3):
        assert rest_invite(alice_client, org_a, f"p{n}@acme.test").status_code == 201
    response = rest_invite(alice_client, org_a, "flood@acme.test")
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert response.json()["detail"].startswith(
        "You sent 3 invitations in the last hour; try again in "
    )
    assert "flood@acme.test" not in _invited(org_a)


def test_the_org_limit_is_shared_by_its_admins_and_not_by_other_orgs(
    alice_client, charlie_client, org_a, org_b
):
    dana = _admin_client(org_a, "dana@acme.test")
    for n in range(3):
        assert rest_invite(alice_client, org_a, f"a{n}@acme.test").status_code == 201
    for n in range(2):
        assert rest_invite(dana, org_a, f"d{n}@acme.test").status_code == 201
    response = rest_invite(dana, org_a, "d2@acme.test")  # dana's 3rd, the org's 6th
    assert response.status_code == 429
    assert response.json()["detail"].startswith(
        "Acme Corp sent 5 invitations in the last hour; try again in "
    )
    assert len(_invited(org_a)) == 5
    # Another org counts on its own.
    assert rest_invite(charlie_client, org_b, "x@globex.test").status_code == 201


def test_a_user_s_limit_holds_across_the_orgs_they_administer(alice, alice_client, org_a, org_b):
    services.membership_add(actor=ACTOR, org=org_b, user=alice, role=Role.ADMIN)
    for n in range(3):
        assert rest_invite(alice_client, org_a, f"a{n}@acme.test").status_code == 201
    assert rest_invite(alice_client, org_b, "a3@globex.test").status_code == 429
    assert not _invited(org_b)


def test_resends_count_as_sends(alice_client, org_a, settings, django_capture_on_commit_callbacks):
    settings.INVITATION_SENDS_PER_ORG_PER_HOUR = 10  # the 3 invitations below are the org's
    invitations = [
        services.invitation_create(actor=ACTOR, org=org_a, email=f"r{n}@acme.test")[0]
        for n in range(3)
    ]
    mail.outbox.clear()
    # Each resend is one of alice's sends: 3 allowed, whichever invitation it is.
    for invitation in invitations:
        response = alice_client.post(f"/api/gateway/invitations/{invitation.pk}/resend")
        assert response.status_code == 200
    response = alice_client.post(f"/api/gateway/invitations/{invitations[0].pk}/resend")
    assert response.status_code == 429
    assert response.json()["detail"].startswith("You sent 3 invitations in the last hour")
    url = reverse("invitation_resend", args=[org_a.slug, invitations[1].pk])
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(url, follow=True)
    [(level, text)] = [(m.level_tag, str(m)) for m in response.context["messages"]]
    assert level == "error" and text.startswith("You sent 3 invitations in the last hour")
    assert len(mail.outbox) == 0  # the REST resends ran outside the capture: none sent here
    assert AuditLog.objects.filter(action="invitation.resend").count() == 3


def test_a_limit_of_one_reads_in_the_singular(alice_client, org_a, settings):
    settings.INVITATION_SENDS_PER_USER_PER_HOUR = 1
    assert rest_invite(alice_client, org_a, "p@acme.test").status_code == 201
    detail = rest_invite(alice_client, org_a, "q@acme.test").json()["detail"]
    assert detail.startswith("You sent 1 invitation in the last hour; try again in ")


def test_zero_turns_the_limits_off(alice_client, org_a, settings):
    settings.INVITATION_SENDS_PER_USER_PER_HOUR = 0
    settings.INVITATION_SENDS_PER_ORG_PER_HOUR = 0
    for n in range(8):
        assert rest_invite(alice_client, org_a, f"p{n}@acme.test").status_code == 201


def test_an_outsider_is_refused_before_anything_is_counted(
    alice_client, charlie_client, org_a, org_b
):
    for n in range(5):
        assert rest_invite(charlie_client, org_a, f"c{n}@acme.test").status_code in (403, 404)
    assert rest_invite(alice_client, org_a, "p@acme.test").status_code == 201


def test_the_org_counts_the_sends_of_every_way_in(alice_client, org_a, settings):
    """Invitations sent by the admin site, the CLI or apply_config are emails from the org
    too: they count toward its limit (not toward alice's)."""
    for n in range(4):
        services.invitation_create(actor=ACTOR, org=org_a, email=f"cli{n}@acme.test")
    assert rest_invite(alice_client, org_a, "p0@acme.test").status_code == 201  # the org's 5th
    response = rest_invite(alice_client, org_a, "p1@acme.test")
    assert response.status_code == 429
    assert response.json()["detail"].startswith("Acme Corp sent 5 invitations in the last hour")
