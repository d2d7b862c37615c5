"""The org default's smart routing is named `(org default)` by the analytics (by_policy,
the Usage page's Policy filter); re-calibrating takes that name too, as it takes no name
(the command without --policy, the Usage page's button posting policy=""). No routing
policy can be named so (a policy's name is a slug), so it never hides one."""

import io
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from billing.models import UsageRecord
from billing.smart_calibration import smart_recalibrate
from gateway import services as gateway_services
from gateway.models import GatewayConfig
from gateway.tests.conftest import ACTOR

pytestmark = pytest.mark.django_db
AN_HOUR_AGO = datetime.now(UTC) - timedelta(hours=1)


def _org_default_rated(org):
    """The org default over lite -> pro at 0.5; 40 rated requests below the top tier of
    the org default (no policy: routing_policy ""), good up to 0.30, bad above."""
    gateway_services.gateway_config_set(
        actor=ACTOR, org=org, smart_tiers=["lite", "pro"], smart={"thresholds": [0.5]}
    )
    UsageRecord.objects.bulk_create(
        UsageRecord(
            id=uuid.uuid4(),
            org=org,
            created_at=AN_HOUR_AGO,
            model_requested="auto",
            model_used="lite",
            status="success",
            input_tokens=10,
            output_tokens=5,
            cost=Decimal("0.0001"),
            cost_top_tier=Decimal("0.002"),
            route_tier="lite",
            routing_policy="",
            route_classifier="rules",
            route_score=(i + 1) / 100,
            feedback_score=1.0 if i < 30 else 0.0,
        )
        for i in range(40)
    )


def _top(org):
    return GatewayConfig.objects.get(org=org).smart["thresholds"][-1]


def test_the_command_takes_the_analytics_name_of_the_org_default(org_a):
    _org_default_rated(org_a)
    out = io.StringIO()
    call_command("smart_recalibrate", "--org", org_a.slug, "--policy", "(org default)", stdout=out)
    assert "the org default: top threshold 0.5000 -> 0.3" in out.getvalue()
    assert 0.3 <= _top(org_a) < 0.34


@pytest.mark.parametrize("name", ["", "(org default)", " (org default) "])
def test_the_function_takes_either_name(org_a, name):
    _org_default_rated(org_a)
    moved = smart_recalibrate(actor=ACTOR, org=org_a, name=name)
    assert moved["policy"] == "the org default" and moved["rated"] == 40


def test_the_usage_page_s_button_takes_it_too(org_a, alice_client):
    _org_default_rated(org_a)
    response = alice_client.post(
        f"/o/{org_a.slug}/usage/smart-recalibrate/", {"policy": "(org default)"}, follow=True
    )
    assert b"the org default: top threshold 0.5000 -&gt; 0.3" in response.content
    assert 0.3 <= _top(org_a) < 0.34


def test_without_a_default_it_says_so_whichever_name(org_a):
    with pytest.raises(ValidationError, match="no default smart routing"):
        smart_recalibrate(actor=ACTOR, org=org_a, name="(org default)")
    with pytest.raises(CommandError, match="no default smart routing"):
        call_command(
            "smart_recalibrate",
            "--org",
            org_a.slug,
            "--policy",
            "(org default)",
            stdout=io.StringIO(),
        )


def test_the_help_names_it():
    from billing.management.commands.smart_recalibrate import Command

    parser = Command().create_parser("manage.py", "smart_recalibrate")
    assert "(org default)" in parser.format_help()
