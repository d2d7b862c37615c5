"""The weekly digest says the week it counts (its last day, not the day after), counts in
the singular where there is one, and never suggests replacing a tier of smart routing with
another model; its suggestion says that a cheaper model may be a weaker one."""

import html as html_lib
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core import mail

from billing.digest import digest_context, weekly_digest_send
from billing.models import UsageRecord
from gateway import services
from gateway.tests.conftest import ACTOR
from governance import services as governance_services

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # a Monday


def _request(org, model, at, cost="1.00", tier=""):
    UsageRecord.objects.create(
        id=uuid.uuid4(),
        org=org,
        created_at=at,
        model_requested="auto" if tier else model,
        model_used=model,
        provider="p",
        status="success",
        input_tokens=1000,
        output_tokens=500,
        cost=Decimal(cost),
        **(
            {
                "route_tier": tier,
                "routing_policy": "saver",
                "route_classifier": "rules",
                "route_score": 0.5,
                "cost_top_tier": Decimal(cost),
            }
            if tier
            else {}
        ),
    )


def _sent(org, alice, now=NOW) -> tuple[str, str]:
    from billing.models import DigestSent

    mail.outbox.clear()
    # These tests read one week's digest again after adding requests: the week's "sent"
    # mark (a digest goes once a week, test_digest.py) is cleared for each reading.
    DigestSent.objects.filter(org=org).delete()
    weekly_digest_send(org=org, now=now, base_url="https://bonito.example")
    [message] = [m for m in mail.outbox if alice.email in m.to]
    page = html_lib.unescape(re.sub(r"<[^>]+>", " ", message.alternatives[0][0]))
    return message.body, re.sub(r"\s+", " ", page)


# ------------------------------------------------------------------------------ the period
@pytest.mark.parametrize(
    "now",
    [
        NOW,
        datetime(2026, 12, 4, 0, 0, tzinfo=UTC),  # at midnight itself
        datetime(2026, 12, 4, 23, 59, 59, tzinfo=UTC),
        datetime(2027, 1, 1, 6, 0, tzinfo=UTC),  # across a year's end
    ],
)
def test_the_period_said_is_the_seven_days_counted(org_a, alice, now):
    """A request at noon of every day around the week: the digest counts those of the days
    its period names, first and last included, and no other."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    for days in range(-1, 10):
        _request(org_a, "m", today - timedelta(days=days) + timedelta(hours=12))
    text, page = _sent(org_a, alice, now)
    first, last = re.search(r"\((\d{4}-\d\d-\d\d) to (\d{4}-\d\d-\d\d)\)", text).groups()
    assert f"{first} to {last}" in page
    first, last = datetime.fromisoformat(first), datetime.fromisoformat(last)
    assert (last - first).days == 6  # seven days, both ends included
    counted = UsageRecord.objects.filter(
        org=org_a,
        created_at__date__gte=first.date(),
        created_at__date__lte=last.date(),
    ).count()
    assert counted == 7 == digest_context(org_a, now)["week"]["requests"]
    assert "Requests: 7" in text
    assert last.date() == (today - timedelta(days=1)).date()  # yesterday, the last whole day


# ------------------------------------------------------------------------------ plurals
def test_one_request_is_said_in_the_singular_everywhere(org_a, alice):
    _request(org_a, "pro", NOW - timedelta(days=2), tier="pro")
    for body in _sent(org_a, alice):
        assert not re.search(r"\b1 (requests|have|are|they)\b", body), body
        assert "pro: $1.00, 1 request" in body
        assert "1 request cost $1.00; on its policy's top tier it would have cost" in body
    _request(org_a, "pro", NOW - timedelta(days=3), tier="pro")
    for body in _sent(org_a, alice):
        assert "pro: $2.00, 2 requests" in body
        assert "2 requests cost $2.00; on their policies' top tiers they would have" in body


# ------------------------------------------------------------------------------ the suggestion
@pytest.fixture
def smart_org(org_a):
    """pro is the top tier of a smart policy (lite below it); big is called by name; flaky
    and tiny are cheap models the org may use."""
    provider = services.provider_save(actor=ACTOR, org=org_a, name="p", kind="openai")
    for model, inp, out in (
        ("lite", "0.5", "1"),
        ("pro", "10", "30"),
        ("big", "5", "15"),
        ("flaky", "0.1", "0.2"),
    ):
        services.deployment_save(
            actor=ACTOR,
            org=org_a,
            model_name=model,
            provider=provider,
            upstream_model=f"u-{model}",
            input_price_per_mtok=Decimal(inp),
            output_price_per_mtok=Decimal(out),
        )
    governance_services.routing_policy_save(
        actor=ACTOR, org=org_a, name="saver", strategy="smart", models=["lite", "pro"]
    )
    return org_a


def test_a_smart_tier_is_never_suggested_away(smart_org, alice):
    _request(smart_org, "pro", NOW - timedelta(days=2), cost="9.00", tier="pro")
    _request(smart_org, "lite", NOW - timedelta(days=2), cost="0.10", tier="lite")
    for body in _sent(smart_org, alice):
        assert "Savings:" not in body and "flaky" not in body  # only tiers spent: nothing
    _request(smart_org, "big", NOW - timedelta(days=3), cost="2.00")
    for body in _sent(smart_org, alice):
        said = body.split("Savings:", 1)[1]
        assert said.startswith(" big cost $2.00 this week. The same tokens on flaky")
        assert "a cheaper model is often a weaker one" in said
        assert "Not suggested for pro, costlier this week: it is a tier of smart routing" in said
        assert "pro cost" not in said


def test_the_org_default_s_tiers_are_left_out_too(smart_org, alice):
    services.gateway_config_set(actor=ACTOR, org=smart_org, smart_tiers=["flaky", "big"])
    _request(smart_org, "big", NOW - timedelta(days=3), cost="2.00")
    for body in _sent(smart_org, alice):
        assert "Savings:" not in body  # big is a tier of the org default now


# ------------------------------------------------------------------------------ by policy
def test_the_savings_of_each_policy_are_listed_when_there_are_several(org_a, alice):
    """One line for the week in total, and, when more than one policy (the org default
    counts as one) routed requests, each policy's saving in the Usage page's words."""
    _request(org_a, "lite", NOW - timedelta(days=2), cost="0.25", tier="lite")
    UsageRecord.objects.filter(org=org_a).update(cost_top_tier=Decimal("1.00"))
    text, page = _sent(org_a, alice)
    assert "By policy" not in text and "By policy" not in page  # one policy: the total says it
    row = UsageRecord.objects.get(org=org_a)
    row.pk, row.request_id, row.routing_policy = uuid.uuid4(), "r2", ""  # the org default's
    row.cost, row.cost_top_tier = Decimal("2.00"), Decimal("1.00")  # it cost more
    row.save(force_insert=True)
    text, page = _sent(org_a, alice)
    line = (
        "By policy: (org default) saved nothing: cost $1.00 (100%) more than the top tier "
        "would have on 1 request; saver saved $0.75 (75%) on 1 request."
    )
    assert line in text and line in page, (text, page)
