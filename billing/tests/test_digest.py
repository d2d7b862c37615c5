"""The weekly digest: numbers, week-over-week change, top lists, a savings suggestion, opt-out."""

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.urls import reverse

from billing.digest import weekly_digest_send
from billing.models import UsageRecord
from gateway import services
from gateway.tests.conftest import ACTOR

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # a Monday


def _spend(org, model, cost, days_ago, key=None, tokens=(1000, 500)):
    UsageRecord.objects.create(
        id=uuid.uuid4(),
        org=org,
        key=key,
        created_at=NOW - timedelta(days=days_ago),
        model_requested=model,
        model_used=model,
        provider="p",
        status="success",
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cost=Decimal(cost),
    )


@pytest.fixture
def week(org_a, alice, bob):
    provider = services.provider_save(actor=ACTOR, org=org_a, name="p", kind="openai")
    services.deployment_save(
        actor=ACTOR,
        org=org_a,
        model_name="big",
        provider=provider,
        upstream_model="u-big",
        input_price_per_mtok=Decimal(10),
        output_price_per_mtok=Decimal(30),
    )
    services.deployment_save(
        actor=ACTOR,
        org=org_a,
        model_name="small",
        provider=provider,
        upstream_model="u-small",
        input_price_per_mtok=Decimal("0.15"),
        output_price_per_mtok=Decimal("0.6"),
    )
    key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="backend")
    _spend(org_a, "big", "3.00", 2, key=key)
    _spend(org_a, "small", "0.50", 3, key=key)
    _spend(org_a, "big", "1.75", 9)  # the week before
    return key


@pytest.mark.parametrize("rolled_up", [False, True], ids=["raw-rows", "rollups"])
def test_the_digest_has_the_numbers_and_a_savings_suggestion(week, org_a, rolled_up):
    if rolled_up:  # the same digest from the hourly and daily rollups
        from billing.services import rollup_recent

        rollup_recent(now=NOW)
        UsageRecord.objects.all().delete()
    assert weekly_digest_send(org=org_a, now=NOW, base_url="https://bonito.example") == 2
    message = mail.outbox[0]
    assert sorted(message.to) == ["alice@acme.test", "bob@acme.test"]
    # Money as the Usage page shows it (core.money: cents, at most 4 decimals; 2 places
    # showed small amounts as $0.00).
    assert "$3.50," in message.subject and "+100% week over week" in message.subject
    text = message.body
    assert "Requests: 2" in text and "big: $3.00" in text and "backend: $3.50" in text
    # 1000 in + 500 out on "small" costs 1000*0.15e-6 + 500*0.6e-6 = $0.00045.
    assert "on small, which your org can already use, would have cost $0.0005" in text
    html, mime = message.alternatives[0]
    assert mime == "text/html" and "<strong>small</strong>" in html
    assert "https://bonito.example/o/acme/usage/" in text


def test_users_can_opt_out(week, org_a, bob_client):
    bob_client.post(reverse("digest_toggle", args=[org_a.slug]), {})
    weekly_digest_send(org=org_a, now=NOW, base_url="https://bonito.example")
    assert mail.outbox[0].to == ["alice@acme.test"]


def test_a_quiet_org_gets_no_digest(org_b, charlie):
    assert weekly_digest_send(org=org_b, now=NOW, base_url="https://bonito.example") == 0
    assert mail.outbox == []


def test_an_org_name_with_a_line_break_still_gets_its_digest(week, org_a):
    # Names are checked when set, but a row written before that may hold a break.
    org_a.name = "Acme\r\nBcc: x@evil.test"
    org_a.save(update_fields=["name"])
    assert weekly_digest_send(org=org_a, now=NOW, base_url="https://bonito.example") == 2
    subject = mail.outbox[0].subject
    assert subject.startswith("Bonito weekly digest for Acme Bcc") and "\n" not in subject


class _SMTPServer:
    """A mail server at the wire (plain SMTP on a local port) that takes every message but
    refuses mail to bounce@ addresses (550): one org's digest fails, the others go."""

    def __init__(self):
        import socketserver
        import threading

        self.messages: list[list[str]] = []  # the recipients of each message taken
        server = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                to: list[str] = []
                self.wfile.write(b"220 fake ESMTP\r\n")
                while line := self.rfile.readline():
                    command = line.decode().strip()
                    upper = command.upper()
                    if upper.startswith(("EHLO", "HELO")):
                        self.wfile.write(b"250 fake\r\n")
                    elif upper.startswith("MAIL FROM"):
                        to = []
                        self.wfile.write(b"250 ok\r\n")
                    elif upper.startswith("RCPT TO"):
                        address = command.split(":", 1)[1].strip(" <>")
                        if address.startswith("bounce@"):
                            self.wfile.write(b"550 no such user\r\n")
                        else:
                            to.append(address)
                            self.wfile.write(b"250 ok\r\n")
                    elif upper == "DATA":
                        self.wfile.write(b"354 go on\r\n")
                        while self.rfile.readline() not in (b".\r\n", b""):
                            pass
                        server.messages.append(to)
                        self.wfile.write(b"250 queued\r\n")
                    elif upper == "QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:
                        self.wfile.write(b"250 ok\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _spent_this_week(org):
    """A request three days before now: what makes the org's digest go out."""
    from django.utils import timezone

    UsageRecord.objects.create(
        id=uuid.uuid4(),
        org=org,
        created_at=timezone.now() - timedelta(days=3),
        model_requested="m",
        model_used="m",
        provider="p",
        status="success",
        cost=Decimal("1.25"),
    )


@pytest.fixture
def smtp(settings):
    server = _SMTPServer()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", server.port, 5
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    yield server
    server.close()


def test_one_org_whose_digest_fails_costs_no_other_org_its_digest_or_a_second_one(
    org_a, alice, org_b, smtp
):
    """The Monday task sends every org its digest: an org whose mail is refused (its only
    member's address bounces) is retried alone; the orgs before it are not sent theirs
    again with each retry, the ones after it still get theirs."""

    from billing.tasks import weekly_digests
    from orgs import services as org_services
    from orgs.models import Role

    bounce = org_services.user_create(actor=ACTOR, email="bounce@globex.test", password="x" * 20)
    org_services.membership_add(actor=ACTOR, org=org_b, user=bounce, role=Role.ADMIN)
    zeta = org_services.org_create(actor=ACTOR, name="Zeta", slug="zeta", tier="pro")
    zed = org_services.user_create(actor=ACTOR, email="zed@zeta.test", password="x" * 20)
    org_services.membership_add(actor=ACTOR, org=zeta, user=zed, role=Role.ADMIN)
    for org in (org_a, org_b, zeta):  # Acme, Globex, Zeta: the task's order (by name)
        _spent_this_week(org)
    weekly_digests.apply()
    assert sorted(to for message in smtp.messages for to in message) == [
        "alice@acme.test",
        "zed@zeta.test",
    ]


# ------------------------------------------------------------------ once a week per org
def test_the_digest_of_a_week_is_sent_once_whatever_runs_again(week, org_a):
    """The Monday task run twice, a retried fan-out or a redelivered task: an org gets one
    digest a week; the next week's is sent."""
    from billing.models import DigestSent

    assert weekly_digest_send(org=org_a, now=NOW, base_url="https://b.example") == 2
    assert weekly_digest_send(org=org_a, now=NOW, base_url="https://b.example") == 0
    # a retry's own "now", a retry across midnight, a run by hand later in the week
    for later in (timedelta(hours=3), timedelta(hours=17), timedelta(days=6, hours=15)):
        assert weekly_digest_send(org=org_a, now=NOW + later, base_url="https://b.x") == 0
    assert len(mail.outbox) == 1
    (row,) = DigestSent.objects.filter(org=org_a)
    assert row.sent_at is not None and row.week == NOW.date()  # NOW is a Monday
    _spend(org_a, "big", "1.00", -3)  # spent in the next week
    assert weekly_digest_send(org=org_a, now=NOW + timedelta(days=7), base_url="x") == 2
    assert len(mail.outbox) == 2


def test_a_digest_being_sent_is_not_sent_again_and_an_abandoned_one_is(week, org_a):
    """Another worker's claim (it is sending) holds; a claim older than CLAIM_TTL with no
    mail sent is a worker's that died while sending, and is taken over."""
    from django.utils import timezone

    from billing.digest import CLAIM_TTL
    from billing.models import DigestSent

    claim = DigestSent.objects.create(
        org=org_a, week=NOW.date(), claimed_at=timezone.now() - timedelta(minutes=1)
    )
    assert weekly_digest_send(org=org_a, now=NOW, base_url="https://b.example") == 0
    assert mail.outbox == []
    DigestSent.objects.filter(pk=claim.pk).update(
        claimed_at=timezone.now() - CLAIM_TTL - timedelta(seconds=1)
    )
    assert weekly_digest_send(org=org_a, now=NOW, base_url="https://b.example") == 2
    assert len(mail.outbox) == 1 and DigestSent.objects.get(pk=claim.pk).sent_at is not None


def test_the_monday_task_run_twice_sends_each_org_one_digest_and_a_failed_one_later(
    org_a, alice, org_b, smtp
):
    """Against a mail server at the wire: the fan-out run twice sends nobody a second
    digest; the org whose mail was refused has no claim left, so its digest goes once its
    address is fixed."""

    from billing.models import DigestSent
    from billing.tasks import weekly_digests
    from orgs import services as org_services
    from orgs.models import Role

    bounce = org_services.user_create(actor=ACTOR, email="bounce@globex.test", password="x" * 20)
    org_services.membership_add(actor=ACTOR, org=org_b, user=bounce, role=Role.ADMIN)
    for org in (org_a, org_b):
        _spent_this_week(org)
    weekly_digests.apply()
    weekly_digests.apply()
    assert [to for message in smtp.messages for to in message] == ["alice@acme.test"]
    assert not DigestSent.objects.filter(org=org_b).exists()
    bounce.email = "ok@globex.test"
    bounce.save(update_fields=["email"])
    weekly_digests.apply()
    assert sorted(to for message in smtp.messages for to in message) == [
        "alice@acme.test",
        "ok@globex.test",
    ]
