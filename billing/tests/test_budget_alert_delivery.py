"""Budget alerts reach both channels whatever the names hold, one channel failing never holds
back the other, and retries never send a channel the same alert twice."""

import socket
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core import mail

from billing.budgets import budget_save, budgets_check_all
from billing.models import BudgetAlert, UsageRecord
from gateway import services as gateway_services
from gateway.models import ApiKey
from gateway.tests.conftest import ACTOR
from orgs import services as org_services
from orgs.models import Organization, Team
from orgs.tests.test_invitations import dead_broker  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
# Stored before names were checked (or written around the services): every kind of break.
BROKEN_NAMES = [
    "ops\nBcc: victim@evil.test",
    "ops\r\nX-Injected: 1",
    "ops\rcr",
    "ops\u2028sep",
    "ops\x0bvt\x0cff\x1b[31m\x85nel",
]


def _spend(org, amount, key=None, team=None):
    UsageRecord.objects.create(
        id=uuid.uuid4(),
        org=org,
        key=key,
        team=team,
        created_at=NOW,
        model_requested="chat",
        model_used="chat",
        provider="fake",
        status="success",
        cost=Decimal(str(amount)),
    )


@pytest.fixture
def hook(fake_upstream_server, loopback_allowed):
    fake_upstream_server.reset()
    yield fake_upstream_server.url.replace("/v1", "/hooks")
    fake_upstream_server.reset()


def _budget_for(scope, org, name, hook):
    """A budget of `scope` whose target's name is `name` (written past the services, as old
    rows may be), spent to 60%."""
    team = key = None
    if scope == "org":
        Organization.objects.filter(pk=org.pk).update(name=name)
    elif scope == "team":
        team = org_services.team_create(actor=ACTOR, org=org, name="ops")
        Team.objects.filter(pk=team.pk).update(name=name)
    else:
        key, _raw = gateway_services.api_key_create(actor=ACTOR, org=org, name="ops")
        ApiKey.objects.filter(pk=key.pk).update(name=name)
    budget_save(
        actor=ACTOR, org=org, scope=scope, team=team, key=key, amount_usd=10, webhook_url=hook
    )
    _spend(org, 6, key=key, team=team)


@pytest.mark.parametrize("scope", ["org", "team", "key"])
@pytest.mark.parametrize("name", BROKEN_NAMES)
def test_a_name_with_control_characters_still_alerts_on_both_channels(
    org_a, alice, hook, fake_upstream_server, scope, name
):
    _budget_for(scope, org_a, name, hook)
    assert budgets_check_all(now=NOW) == 1
    (email,) = mail.outbox
    assert email.to == ["alice@acme.test"]
    assert "\n" not in email.subject and "\r" not in email.subject
    assert "ops" in email.subject and "50%" in email.subject
    headers = [h.lower() for h in email.message().as_string().split("\n\n", 1)[0].splitlines()]
    assert not any(h.startswith(("bcc", "x-injected")) for h in headers)
    assert len(fake_upstream_server.hooks) == 1
    alert = BudgetAlert.objects.get()
    assert alert.email_sent_at is not None and alert.webhook_sent_at is not None


def test_a_failing_webhook_is_retried_without_resending_the_email(
    org_a, alice, hook, fake_upstream_server
):
    fake_upstream_server.hook_fail_times = 2
    _budget_for("org", org_a, "Acme Corp", hook)
    budgets_check_all(now=NOW)
    assert fake_upstream_server.hook_attempts == 3
    assert len(fake_upstream_server.hooks) == 1
    assert len(mail.outbox) == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_failing_email_does_not_hold_back_the_webhook(
    settings, org_a, alice, hook, fake_upstream_server
):
    # A real SMTP backend pointed at a port nobody listens on: every send is refused.
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", _closed_port()
    settings.EMAIL_TIMEOUT = 2
    _budget_for("org", org_a, "Acme Corp", hook)
    budgets_check_all(now=NOW)
    assert len(fake_upstream_server.hooks) == 1  # posted once, though the task kept retrying
    alert = BudgetAlert.objects.get()
    assert alert.webhook_sent_at is not None and alert.email_sent_at is None


def test_an_alert_without_admins_or_webhook_is_not_marked_sent(org_a):
    budget_save(actor=ACTOR, org=org_a, amount_usd=10)
    _spend(org_a, 6)
    assert budgets_check_all(now=NOW) == 1
    alert = BudgetAlert.objects.get()
    assert alert.email_sent_at is None and alert.webhook_sent_at is None
    assert not mail.outbox


def test_an_alert_fired_while_the_broker_is_down_still_goes_out(
    org_a,
    alice,
    hook,
    fake_upstream_server,
    dead_broker,  # noqa: F811
):
    """The check commits the alert (it never fires again), then hands its delivery to the
    broker: a broker down then (a Redis restart) must delay the email and webhook, not lose
    them, nor stop the check of the other budgets."""
    _budget_for("org", org_a, "Acme Corp", hook)
    budget_save(actor=ACTOR, org=org_a, amount_usd=12)  # a second budget, checked after
    assert budgets_check_all(now=NOW) == 2
    deadline = time.time() + 15
    # Sent, then stamped: wait for the stamps too (the mails went out before them on a
    # loaded CI machine, and the count below read 1).
    while (
        len(mail.outbox) < 2
        or len(fake_upstream_server.hooks) < 1
        or BudgetAlert.objects.filter(email_sent_at=None).exists()
    ) and time.time() < deadline:
        time.sleep(0.05)
    assert sorted(m.subject for m in mail.outbox) == [
        "Bonito budget alert: 50% for Acme Corp",
        "Bonito budget alert: 50% for Acme Corp",
    ]
    assert len(fake_upstream_server.hooks) == 1
    assert BudgetAlert.objects.filter(email_sent_at=None).count() == 0
