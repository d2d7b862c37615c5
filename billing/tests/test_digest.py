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
    assert "$3.50" in message.subject and "+100% week over week" in message.subject
    text = message.body
    assert "Requests: 2" in text and "big: $3.00" in text and "backend: $3.50" in text
    # 1000 in + 500 out on "small" costs 1000*0.15e-6 + 500*0.6e-6 = $0.00045.
    assert "on small, which your org can already use, would have cost $0.00" in text
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
