"""Resending an invitation emails its address each time, so it is rate-limited per
invitation (INVITATION_RESEND_PER_HOUR, counted in the audit log's last hour): from the
dashboard and the REST API alike, the resend past the limit sends nothing and changes
nothing, and says so (a message; a 429 with Retry-After); another invitation, or another
org's, has its own count (adversarial review: 25 resends in a row were 25 emails)."""

import pytest
from django.core import mail
from django.urls import reverse

from orgs import services
from orgs.audit import Actor
from orgs.models import AuditLog, Invitation

pytestmark = pytest.mark.django_db

ACTOR = Actor(via="test")
LIMIT = 3


@pytest.fixture(autouse=True)
def _limit(settings):
    settings.INVITATION_RESEND_PER_HOUR = LIMIT


def _invite(org, email):
    invitation, _raw = services.invitation_create(actor=ACTOR, org=org, email=email)
    return invitation


def _dashboard(client, invitation):
    url = reverse("invitation_resend", args=[invitation.org.slug, invitation.pk])
    return client.post(url, follow=True)


def _rest(client, invitation):
    return client.post(f"/api/gateway/invitations/{invitation.pk}/resend")


def _sent_to(address):
    return sum(address in m.to for m in mail.outbox)


@pytest.mark.parametrize("resend", [_dashboard, _rest])
def test_resends_past_the_limit_send_nothing_and_say_why(
    alice_client, org_a, resend, django_capture_on_commit_callbacks
):
    invitation = _invite(org_a, "n@acme.test")
    other = _invite(org_a, "o@acme.test")
    mail.outbox.clear()
    for _ in range(LIMIT):
        with django_capture_on_commit_callbacks(execute=True):
            response = resend(alice_client, invitation)
        assert response.status_code == 200
    assert _sent_to("n@acme.test") == LIMIT
    token = Invitation.objects.get(pk=invitation.pk).token_hash
    resends = AuditLog.objects.filter(action="invitation.resend").count()
    for _ in range(5):
        with django_capture_on_commit_callbacks(execute=True):
            response = resend(alice_client, invitation)
        if resend is _rest:
            assert response.status_code == 429
            assert int(response["Retry-After"]) > 0
            assert "was sent again 3 times in the last hour" in response.json()["detail"]
        else:
            [(level, text)] = [(m.level_tag, str(m)) for m in response.context["messages"]]
            assert level == "error" and text.startswith(
                "The invitation for n@acme.test was sent again 3 times in the last hour; "
                "try again in "
            )
    assert _sent_to("n@acme.test") == LIMIT  # nothing more sent...
    assert Invitation.objects.get(pk=invitation.pk).token_hash == token  # ...the link kept
    assert AuditLog.objects.filter(action="invitation.resend").count() == resends
    # Another invitation counts on its own.
    with django_capture_on_commit_callbacks(execute=True):
        assert resend(alice_client, other).status_code == 200
    assert _sent_to("o@acme.test") == 1


def test_the_dashboard_and_rest_share_one_count_and_zero_turns_it_off(
    alice_client, org_a, settings, django_capture_on_commit_callbacks
):
    invitation = _invite(org_a, "n@acme.test")
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        for resend in (_dashboard, _rest, _dashboard):
            assert resend(alice_client, invitation).status_code == 200
        assert _rest(alice_client, invitation).status_code == 429
    assert _sent_to("n@acme.test") == LIMIT
    settings.INVITATION_RESEND_PER_HOUR = 0
    with django_capture_on_commit_callbacks(execute=True):
        assert _rest(alice_client, invitation).status_code == 200
    assert _sent_to("n@acme.test") == LIMIT + 1


def test_another_org_s_invitation_is_still_404_not_counted(
    alice_client, charlie_client, org_a, org_b
):
    invitation = _invite(org_a, "n@acme.test")
    for _ in range(LIMIT + 2):
        assert _rest(charlie_client, invitation).status_code == 404
    assert _rest(alice_client, invitation).status_code == 200
