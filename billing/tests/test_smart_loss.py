"""Smart routing that saved nothing, or lost: the Usage page and the weekly digest say what
happened ("cost $0.0019 more than the top tier would have"), never "You saved $-0.0019
(-1900.0%)"; and the Routing page warns of the usual cause, a lower tier dearer than the
top one, however the tiers were saved (a warning: they are saved all the same)."""

import html
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core import mail

from billing.digest import weekly_digest_send
from billing.models import UsageRecord
from gateway import services
from gateway.tests.conftest import ACTOR

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # a Monday
AT = NOW - timedelta(days=2)
PARAMS = {"since": (NOW - timedelta(days=7)).isoformat(), "until": NOW.isoformat()}


def _row(org, *, cost, top, tier="lite", policy="saver"):
    UsageRecord.objects.create(
        id=uuid.uuid4(),
        org=org,
        created_at=AT,
        model_requested="auto",
        model_used=tier,
        status="success",
        input_tokens=100,
        output_tokens=50,
        cost=Decimal(cost),
        cost_top_tier=Decimal(top),
        route_tier=tier,
        routing_policy=policy,
        route_classifier="rules",
        route_score=0.1,
    )


def _no_signed_amount(text: str) -> None:
    """No amount or share written with a minus sign ("$-0.0019", "(-1900.0%)")."""
    assert not re.search(r"\$-|-\d[\d.]*%", text), re.findall(r".{40}(?:\$-|-\d[\d.]*%).{10}", text)


def _digest(org, alice) -> tuple[str, str]:
    weekly_digest_send(org=org, now=NOW, base_url="https://bonito.example")
    [message] = [m for m in mail.outbox if alice.email in m.to]
    return message.body, re.sub(r"<[^>]+>", "", message.alternatives[0][0])  # the HTML's text


def test_a_loss_is_said_as_a_loss_with_a_positive_amount(org_a, alice, alice_client):
    _row(org_a, cost="0.00200000", top="0.00010000")  # the "cheap" tier cost 20x the top
    page = alice_client.get(f"/o/{org_a.slug}/usage/", PARAMS).content.decode()
    said = "Smart routing cost $0.0019 more (1900% more) than the top tier would have"
    assert said in page and "You saved" not in page
    assert "on 1 smart-routed request: it cost $0.002;" in page  # core.money: $0.0020 trimmed
    assert "nothing: cost $0.0019 (1900%) more than the top tier would have" in page
    _no_signed_amount(page)
    for text in _digest(org_a, alice):
        assert "Smart routing cost $0.0019 more (1900% more) than the top tiers" in text
        assert "saved $" not in text.split("Smart routing")[1]
        _no_signed_amount(text)


def test_nothing_saved_is_not_called_a_saving(org_a, alice, alice_client):
    _row(org_a, cost="0.00200000", top="0.00200000", tier="pro")
    page = alice_client.get(f"/o/{org_a.slug}/usage/", PARAMS).content.decode()
    assert "Nothing saved</span> on 1 smart-routed request" in page
    assert "You saved" not in page and "more than the top tier" not in page
    for text in _digest(org_a, alice):
        assert "Smart routing saved nothing this week" in text
        assert "Smart routing saved $" not in text


def test_a_saving_still_reads_as_one(org_a, alice, alice_client):
    _row(org_a, cost="0.00010000", top="0.00200000")
    page = alice_client.get(f"/o/{org_a.slug}/usage/", PARAMS).content.decode()
    assert "You saved $0.0019 (95%)</span> on 1 smart-routed request" in page
    for text in _digest(org_a, alice):
        assert "Smart routing saved $0.0019 (95%) this week" in text


# ------------------------------------------------------------------------------ the warning
@pytest.fixture
def priced(org_a):
    """lite at $3/$15 per million tokens, pro at $1/$5 (and a second, dearer pro)."""
    provider = services.provider_create(actor=ACTOR, org=org_a, name="p", kind="mock")
    for model, upstream, inp, out in (
        ("lite", "lite-up", "3", "15"),
        ("pro", "pro-up", "1", "5"),
        ("pro", "pro-up-2", "9", "9"),
        ("mid", "mid-up", "0.5", "2"),
    ):
        services.deployment_create(
            actor=ACTOR,
            org=org_a,
            model_name=model,
            provider=provider,
            upstream_model=upstream,
            input_price_per_mtok=inp,
            output_price_per_mtok=out,
        )
    return provider


WARNING = "The tier 'lite' costs more than the top tier 'pro' ($3 in, $15 out per million"


def test_a_dashboard_save_with_a_dearer_lower_tier_is_saved_with_a_warning(
    org_a, alice_client, priced
):
    from governance.models import RoutingPolicy

    response = alice_client.post(
        f"/o/{org_a.slug}/routing/",
        {"name": "saver", "strategy": "smart", "models": "lite, pro", "aggressiveness": "50"},
        follow=True,
    )
    shown = [(m.level_tag, str(m)) for m in response.context["messages"]]
    assert shown[0][0] == "success" and RoutingPolicy.objects.filter(name="saver").exists()
    assert [level for level, text in shown if text.startswith(WARNING)] == ["warning"]
    policy = RoutingPolicy.objects.get(name="saver")
    edited = alice_client.post(
        f"/o/{org_a.slug}/routing/{policy.id}/",
        {"strategy": "smart", "models": "lite, pro", "aggressiveness": "60", "is_active": "on"},
        follow=True,
    )
    assert any(str(m).startswith(WARNING) for m in edited.context["messages"])
    org_default = alice_client.post(
        f"/o/{org_a.slug}/routing/",
        {"form": "org_smart", "smart_tiers": "lite, pro", "auto_model_alias": "auto"},
        follow=True,
    )
    assert any(str(m).startswith(WARNING) for m in org_default.context["messages"])
    ordered = alice_client.post(
        f"/o/{org_a.slug}/routing/",
        {"name": "fine", "strategy": "smart", "models": "mid, lite, pro"},
        follow=True,
    )
    # mid ($0.5/$2) is cheaper than pro: only lite is said
    warnings = [str(m) for m in ordered.context["messages"] if m.level_tag == "warning"]
    assert len(warnings) == 1 and warnings[0].startswith(WARNING), warnings


def test_tiers_saved_over_rest_or_the_config_file_are_warned_of_on_the_routing_page(
    org_a, alice_client, priced
):
    created = alice_client.post(
        "/api/gateway/routing-policies",
        {"name": "saver", "strategy": "smart", "models": ["lite", "pro"]},
        content_type="application/json",
    )
    assert created.status_code == 201  # a warning, not a refusal
    alice_client.post(
        "/api/gateway/routing-policies",
        {"name": "fine", "strategy": "smart", "models": ["mid", "pro"]},
        content_type="application/json",
    )
    page = html.unescape(alice_client.get(f"/o/{org_a.slug}/routing/").content.decode())
    assert page.count(WARNING) == 1
    services.gateway_config_set(actor=ACTOR, org=org_a, smart_tiers=["lite", "pro"])
    page = html.unescape(alice_client.get(f"/o/{org_a.slug}/routing/").content.decode())
    assert page.count(WARNING) == 2  # the policy's and the org default's


def test_tiers_priced_alike_or_without_a_price_are_not_warned_of(org_a, priced):
    assert services.smart_tier_price_warnings(org_a, ["mid", "pro"]) == []
    assert services.smart_tier_price_warnings(org_a, ["pro", "lite"]) == []
    assert services.smart_tier_price_warnings(org_a, ["unserved", "pro"]) == []
    assert services.smart_tier_price_warnings(org_a, ["lite", "unserved"]) == []
    [warning] = services.smart_tier_price_warnings(org_a, ["lite", "mid", "pro"])
    assert warning.startswith(WARNING)
