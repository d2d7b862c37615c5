"""Names people choose (keys, teams, tokens, orgs) hold no line breaks or other control
characters: every service refuses them, and every way in answers with a clear error."""

import pytest
from django.core.exceptions import ValidationError

from bonito.tests.admin_forms import form_data
from core.text import NAME_MESSAGE, one_line
from gateway import services
from gateway.models import ApiKey
from gateway.tests.conftest import ACTOR
from orgs import services as org_services
from orgs.models import Organization, PersonalAccessToken, Team

pytestmark = pytest.mark.django_db

# Inside the name: leading and trailing whitespace is trimmed as before.
CONTROL = ["\n", "\r", "\r\n", "\t", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\u2029"]
FINE = ["Ops team", "Équipe données", "ops/prod-1 (eu)", "日本語チーム", "🚀 launch", "a\u200bb"]


def _creates(org, user, team):
    return {
        "key": lambda name: services.api_key_create(actor=ACTOR, org=org, name=name),
        "team": lambda name: org_services.team_create(actor=ACTOR, org=org, name=name),
        "team rename": lambda name: org_services.team_update(actor=ACTOR, team=team, name=name),
        "token": lambda name: org_services.pat_create(actor=ACTOR, user=user, org=org, name=name),
        "org": lambda name: org_services.org_create(actor=ACTOR, name=name, slug="new-org"),
        "org rename": lambda name: org_services.org_update(actor=ACTOR, org=org, name=name),
    }


WRITES = ["key", "team", "team rename", "token", "org", "org rename"]


@pytest.fixture
def team(org_a):
    return org_services.team_create(actor=ACTOR, org=org_a, name="Platform")


@pytest.mark.parametrize("write", WRITES)
@pytest.mark.parametrize("char", CONTROL)
def test_every_service_refuses_control_characters(org_a, alice, team, write, char):
    with pytest.raises(ValidationError) as exc:
        _creates(org_a, alice, team)[write](f"ops{char}prod")
    assert exc.value.message_dict == {"name": [NAME_MESSAGE]}


@pytest.mark.parametrize("write", WRITES)
@pytest.mark.parametrize("name", FINE)
def test_other_names_are_kept(org_a, alice, team, write, name):
    result = _creates(org_a, alice, team)[write](f"  {name}\n")
    obj = result[0] if isinstance(result, tuple) else result
    assert obj.name == name


def test_one_line_flattens_every_break():
    assert one_line("a\nb\r\nc\rd\te\x0bf\u2028g\x85h  i") == "a b c d e f g h i"


# ------------------------------------------------------------------------- the ways in
BAD = "ops\nBcc: victim@evil.test"


def _shown(response, client):
    return [str(m) for m in client.get(response.url).context["messages"]]


def test_the_dashboard_refuses_with_a_message(alice_client, org_a):
    keys = alice_client.post(f"/o/{org_a.slug}/keys/", {"name": BAD})
    assert keys.status_code == 200 and NAME_MESSAGE in [str(m) for m in keys.context["messages"]]
    team = alice_client.post(f"/o/{org_a.slug}/team/teams/", {"name": BAD})
    assert team.status_code == 302 and NAME_MESSAGE in _shown(team, alice_client)
    token = alice_client.post(f"/o/{org_a.slug}/settings/tokens/", {"name": BAD})
    assert token.status_code == 302 and NAME_MESSAGE in _shown(token, alice_client)
    settings = alice_client.post(f"/o/{org_a.slug}/settings/", {"name": BAD})
    assert settings.status_code == 200 and NAME_MESSAGE in settings.content.decode()
    assert not ApiKey.objects.exists() and not Team.objects.exists()
    assert not PersonalAccessToken.objects.exists()
    assert Organization.objects.get(pk=org_a.pk).name == "Acme Corp"


@pytest.mark.parametrize("path", ["/api/gateway/keys", "/api/gateway/teams", "/api/tokens"])
def test_the_rest_api_answers_400(alice_client, path):
    response = alice_client.post(path, {"name": BAD}, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"name": [NAME_MESSAGE]}


def test_the_admin_shows_the_refusal(admin_client, org_a, team):
    for url in (
        f"/admin/orgs/organization/{org_a.pk}/change/",
        f"/admin/orgs/team/{team.pk}/change/",
    ):
        response = admin_client.post(url, form_data(admin_client.get(url), name=BAD))
        assert response.status_code == 302 and NAME_MESSAGE in _shown(response, admin_client)
    assert Organization.objects.get(pk=org_a.pk).name == "Acme Corp"
    assert Team.objects.get(pk=team.pk).name == "Platform"
