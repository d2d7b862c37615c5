"""Names saved before the names rule may still hold a bidi override (until `manage.py
check_names --fix`): the dashboard's lists show every user-given name inside <bdi>, so such
a name cannot reorder the text around it (the next column, "→ model", "team X") in the
list pages (docs/security.md, "Names")."""

import uuid
from html.parser import HTMLParser

import pytest
from django.urls import reverse
from django.utils import timezone

from agents.models import Agent
from billing.budgets import budget_save
from billing.models import UsageRecord
from gateway import services
from gateway.models import ApiKey, Deployment, ProviderConnection
from gateway.tests.conftest import ACTOR
from governance import services as governance_services
from governance.models import RoutingPolicy
from orgs import services as org_services
from orgs.audit import audit_record
from orgs.models import Organization, Team, User

pytestmark = pytest.mark.django_db
RLO = "\u202e"
# Elements whose text is never drawn (or cannot hold a <bdi>): a name there is no list.
NOT_SHOWN = {"option", "textarea", "title", "script", "style", "pre", "summary"}


class _Unisolated(HTMLParser):
    """Text nodes holding an RLO whose nearest element is not a <bdi>."""

    def __init__(self):
        super().__init__()
        self.stack, self.found = [], []

    def handle_starttag(self, tag, attrs):
        if tag not in ("br", "input", "img", "meta", "link", "hr"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop() != tag:
            pass

    def handle_data(self, data):
        if RLO in data and not (set(self.stack) & NOT_SHOWN) and self.stack[-1:] != ["bdi"]:
            self.found.append((self.stack[-3:], data.strip()[:60]))


@pytest.fixture
def old_names(org_a, alice):
    """Names of every kind the lists show, saved before the rule (past the services)."""
    provider = services.provider_create(actor=ACTOR, org=org_a, name="p", kind="mock")
    deployment = services.deployment_create(
        actor=ACTOR, org=org_a, model_name="chat", provider=provider, upstream_model="m"
    )
    team = org_services.team_create(actor=ACTOR, org=org_a, name="Platform", description="d")
    key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="backend", team=team)
    policy = governance_services.routing_policy_create(
        actor=ACTOR, org=org_a, name="tiers", strategy="failover", models=["chat"]
    )
    services.api_key_create(actor=ACTOR, org=org_a, name="router", routing_policy=policy)
    budget_save(actor=ACTOR, org=org_a, amount_usd="10", scope="team", team=team)
    budget_save(actor=ACTOR, org=org_a, amount_usd="10", scope="key", key=key)
    spoof = f"ab{RLO}cd"
    ApiKey.objects.filter(org=org_a).update(name=spoof, allowed_models=[spoof])
    ApiKey.objects.filter(pk=key.pk).update(allowed_providers=[spoof])
    Team.objects.filter(pk=team.pk).update(name=spoof, description=spoof)
    User.objects.filter(pk=alice.pk).update(name=spoof)
    ProviderConnection.objects.filter(pk=provider.pk).update(name=spoof)
    Deployment.objects.filter(pk=deployment.pk).update(
        model_name=spoof, upstream_model=spoof, region=spoof
    )
    RoutingPolicy.objects.filter(pk=policy.pk).update(name=spoof, model_names=[spoof, spoof])
    Agent.objects.create(org=org_a, agent_id=uuid.uuid4(), hostname=spoof)
    audit_record(
        actor=ACTOR, org=org_a, action="api_key.update", target=ApiKey.objects.get(pk=key.pk)
    )
    record = UsageRecord.objects.create(
        id=uuid.uuid4(),
        org=org_a,
        key=key,
        team=team,
        model_requested=spoof,
        model_used=f"x{spoof}",
        provider=spoof,
        deployment=spoof,
        status="success",
        created_at=timezone.now(),
    )
    return record


@pytest.mark.parametrize(
    "page",
    ["keys", "team", "providers", "routing", "logs", "budgets", "agents", "usage", "audit_log"],
)
def test_every_listed_name_is_isolated(alice_client, org_a, old_names, page):
    if page == "agents":  # the Agents page lists agents of an org in VPC mode
        Organization.objects.filter(pk=org_a.pk).update(deployment_mode="vpc")
    response = alice_client.get(reverse(page, args=[org_a.slug]) + "?range=24h")
    assert response.status_code == 200
    parser = _Unisolated()
    parser.feed(response.content.decode())
    assert RLO in response.content.decode()  # the page does list the names
    assert parser.found == [], parser.found


def test_a_log_s_page_isolates_its_names(alice_client, org_a, old_names):
    response = alice_client.get(reverse("log_detail", args=[org_a.slug, old_names.id]))
    parser = _Unisolated()
    parser.feed(response.content.decode())
    assert parser.found == [], parser.found
