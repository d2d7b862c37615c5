"""The weekly digest says money and shares by the dashboard's rule (core.money): a week of
a few cheap smart-routed requests reads $0.000016, never "$0.0000"; shares with at most 2
decimals (95%, 25.33%), never "95.0%"; the week-over-week change too (+5.26%)."""

import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html import unescape

import pytest
from django.core import mail

from billing.digest import _change, weekly_digest_send
from billing.models import UsageRecord

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # a Monday
ZERO_WITH_DECIMALS = re.compile(r"\$0\.0+(?![0-9])")
TRAILING_ZERO_SHARE = re.compile(r"[0-9]\.[0-9]*0%")


def _row(org, *, cost, top=None, tier="lite", days_ago=2):
    UsageRecord.objects.create(
        id=uuid.uuid4(),
        org=org,
        created_at=NOW - timedelta(days=days_ago),
        model_requested="auto",
        model_used=tier,
        provider="p",
        status="success",
        input_tokens=100,
        output_tokens=50,
        cost=Decimal(cost),
        cost_top_tier=Decimal(top) if top else None,
        route_tier=tier if top else "",
        routing_policy="saver" if top else "",
        route_classifier="rules" if top else "",
        route_score=0.1 if top else None,
    )


def _texts(org, alice) -> tuple[str, str, str]:
    assert weekly_digest_send(org=org, now=NOW, base_url="https://bonito.example") >= 1
    [message] = [m for m in mail.outbox if alice.email in m.to]
    html = re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", message.alternatives[0][0])))
    return message.subject, message.body, html


def test_a_cheap_week_is_not_said_as_zero(org_a, alice):
    _row(org_a, cost="0.00001636", top="0.00032720", tier="lite")
    _row(org_a, cost="0.00000400", tier="lite", days_ago=9)  # the week before
    subject, body, html = _texts(org_a, alice)
    assert "Requests: 1 (no change)" in body  # was "+0% week over week"
    # 0.00001636 against 0.000004 the week before: +309%
    assert subject.endswith(": $0.000016, +309% week over week"), subject
    for text in (body, html):
        assert not ZERO_WITH_DECIMALS.search(text), ZERO_WITH_DECIMALS.findall(text)
        assert not TRAILING_ZERO_SHARE.search(text), TRAILING_ZERO_SHARE.findall(text)
        assert re.search(r"Spend:? +\$0\.000016 \(?\+309% week over week", text), text
        assert "lite: $0.000016, 1 request" in text
        assert "Smart routing saved $0.0003 (95%) this week" in text, text
        assert (
            "1 request cost $0.000016; on its policy's top tier it would have cost $0.0003" in text
        )


def test_a_loss_reads_with_the_same_rule(org_a, alice):
    _row(org_a, cost="0.00200000", top="0.00010000")
    _subject, body, html = _texts(org_a, alice)
    for text in (body, html):
        assert "Smart routing cost $0.0019 more (1900% more) than the top tiers" in text


def test_the_change_week_over_week():
    assert _change(Decimal("1.0526"), Decimal("1")) == "+5.26% week over week"
    assert _change(Decimal("0.8"), Decimal("1")) == "-20% week over week"
    assert _change(Decimal("1.00001"), Decimal("1")) == "+under 0.01% week over week"
    assert _change(Decimal("1"), Decimal("1")) == "no change"
    assert _change(Decimal("1"), Decimal("0")) == "new this week"
