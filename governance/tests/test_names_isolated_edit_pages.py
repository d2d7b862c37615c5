"""The edit and detail pages isolate names as the lists do (test_names_isolated.py): a name
saved before the names rule may still hold a bidi override, and "Key <name>", "Delete the
routing policy <name>? This cannot be undone." must not let it reorder the words after it.
Shown text puts the name in <bdi>; a confirm question (plain text handed to confirm()) puts
it between U+2068 FIRST STRONG ISOLATE and U+2069 POP DIRECTIONAL ISOLATE, the plain-text
<bdi> (docs/security.md, "Names")."""

import re

import pytest
from django.urls import reverse

from gateway import services
from gateway.models import ApiKey, Deployment, ProviderConnection
from gateway.tests.conftest import ACTOR
from governance import services as governance_services
from governance.models import RoutingPolicy
from governance.tests.test_names_isolated import RLO, _Unisolated, old_names  # noqa: F401
from orgs import services as org_services
from orgs.models import Invitation, Organization, PersonalAccessToken

pytestmark = pytest.mark.django_db
ISOLATED = re.compile("\u2068[^\u2068\u2069]*\u2069")


class _Checked(_Unisolated):
    """Also: confirm questions (data-confirm) holding an RLO outside an isolate."""

    def __init__(self):
        super().__init__()
        self.confirms = []

    def handle_starttag(self, tag, attrs):
        super().handle_starttag(tag, attrs)
        for name, value in attrs:
            if name == "data-confirm" and value and RLO in value:
                self.confirms.append(value)

    def unisolated_confirms(self):
        return [c for c in self.confirms if RLO in ISOLATED.sub("", c)]


def _check(response, confirms=0):
    assert response.status_code == 200
    html = response.content.decode()
    assert RLO in html  # the page does show the names
    parser = _Checked()
    parser.feed(html)
    assert parser.found == [], parser.found
    assert parser.unisolated_confirms() == [], parser.unisolated_confirms()
    assert len(parser.confirms) >= confirms, parser.confirms  # the questions do name them
    return parser


@pytest.fixture
def spoof_objects(org_a, alice, old_names):  # noqa: F811
    """The fixture's objects (names spoofed), plus what only the edit pages show: a routing
    policy no rt- key uses (it can be deleted), a disabled key, a personal access token."""
    spoof = f"ab{RLO}cd"
    lone = governance_services.routing_policy_create(
        actor=ACTOR, org=org_a, name="lone", strategy="failover", models=["chat"]
    )
    RoutingPolicy.objects.filter(pk=lone.pk).update(name=f"{spoof}2")
    token, _raw = org_services.pat_create(actor=ACTOR, user=alice, org=org_a, name="ci")
    PersonalAccessToken.objects.filter(pk=token.pk).update(name=spoof)
    ApiKey.objects.filter(org=org_a, kind="rt").update(is_active=False)
    return {
        "key": ApiKey.objects.get(org=org_a, kind="bn"),
        "disabled": ApiKey.objects.get(org=org_a, kind="rt"),
        "provider": ProviderConnection.objects.get(org=org_a),
        "deployment": Deployment.objects.get(org=org_a),
        "used_policy": RoutingPolicy.objects.get(org=org_a, keys__isnull=False),
        "lone_policy": lone,
    }


def test_the_edit_pages_isolate_every_name(alice_client, org_a, spoof_objects):
    o, objs = org_a.slug, spoof_objects
    pages = [
        # (url, how many confirm questions name an object at least)
        (reverse("key_edit", args=[o, objs["key"].id]), 3),  # rotate, disable, revoke
        (reverse("key_edit", args=[o, objs["disabled"].id]), 2),  # rotate, enable
        (reverse("provider_edit", args=[o, objs["provider"].id]), 1),
        (reverse("deployment_edit", args=[o, objs["deployment"].id]), 1),
        (reverse("routing_policy_edit", args=[o, objs["used_policy"].id]), 0),  # its rt- keys
        (reverse("routing_policy_edit", args=[o, objs["lone_policy"].id]), 1),
        (reverse("settings", args=[o]), 1),  # the token's revoke
    ]
    for url, confirms in pages:
        _check(alice_client.get(url), confirms)


def test_the_list_pages_confirm_questions_isolate_every_name(alice_client, org_a, spoof_objects):
    """The lists' questions (delete a provider or deployment, enable a disabled key, remove
    a member, resend or revoke an invitation, delete a team) as the edit pages' do."""
    o = org_a.slug
    invitation, _raw = org_services.invitation_create(actor=ACTOR, org=org_a, email="x@y.test")
    Invitation.objects.filter(pk=invitation.pk).update(email=f"a{RLO}b@y.test")
    for page, confirms in (("providers", 2), ("keys", 2), ("team", 2), ("routing", 1)):
        _check(alice_client.get(reverse(page, args=[o])), confirms)


def test_the_new_secret_s_heading_isolates_the_key_s_name(alice_client, org_a, spoof_objects):
    key = spoof_objects["key"]
    response = alice_client.post(
        reverse("key_rotate", args=[org_a.slug, key.id]),
        {"grace_seconds": str(services.ROTATION_GRACE_CHOICES[0][0])},
        follow=True,
    )
    assert "New secret for" in response.content.decode()
    _check(response)


def test_the_org_s_name_is_isolated_wherever_it_is_shown(alice_client, org_a, old_names):  # noqa: F811
    Organization.objects.filter(pk=org_a.pk).update(name=f"Org{RLO}A")
    for page in ("settings", "sso_settings", "policies"):  # the header's switcher: every page
        _check(alice_client.get(reverse(page, args=[org_a.slug])))


def test_the_invitation_page_isolates_the_org_and_the_email(client, org_a):
    invitation, raw = org_services.invitation_create(actor=ACTOR, org=org_a, email="x@y.test")
    Organization.objects.filter(pk=org_a.pk).update(name=f"Org{RLO}A")
    Invitation.objects.filter(pk=invitation.pk).update(email=f"a{RLO}b@y.test")
    _check(client.get(reverse("invitation_accept", args=[raw])))
