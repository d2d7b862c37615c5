"""Names people choose (keys, teams, tokens, orgs) hold no line breaks or other control
characters: every service refuses them, and every way in answers with a clear error."""

import pytest
from django.core.exceptions import ValidationError

from bonito.tests.admin_forms import form_data
from core.text import NAME_MESSAGE, one_line
from gateway import services
from gateway.models import ApiKey, ProviderConnection
from gateway.tests.conftest import ACTOR
from orgs import services as org_services
from orgs.models import Organization, PersonalAccessToken, Team

pytestmark = pytest.mark.django_db

# Inside the name: leading and trailing whitespace is trimmed as before.
CONTROL = ["\n", "\r", "\r\n", "\t", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\u2029"]
# A zero-width joiner or non-joiner where a script or an emoji needs it is fine (Persian,
# Devanagari, 👩‍💻); a zero-width space is not (governance/tests/test_names_invisible.py).
FINE = [
    "Ops team",
    "Équipe données",
    "ops/prod-1 (eu)",
    "日本語チーム",
    "🚀 launch",
    "فریق داده",
    "می\u200cخواهم",
    "क्\u200dष",
    "👩\u200d💻 devs",
]


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


_MODELS = {
    "key": ApiKey,
    "team": Team,
    "team rename": Team,
    "token": PersonalAccessToken,
    "org": Organization,
    "org rename": Organization,
}


@pytest.mark.parametrize("write", WRITES)
def test_every_service_refuses_a_name_longer_than_its_column(org_a, alice, team, write):
    """Not only the forms: a way in that hands the text straight to the service (the
    Settings page's token form) must get a refusal, not a database error (PostgreSQL
    enforces the column's length; SQLite would store it)."""
    model = _MODELS[write]
    longest = model._meta.get_field("name").max_length
    names = sorted(model.objects.values_list("name", flat=True))
    with pytest.raises(ValidationError) as exc:
        _creates(org_a, alice, team)[write]("n" * (longest + 1))
    assert list(exc.value.message_dict) == ["name"]
    assert sorted(model.objects.values_list("name", flat=True)) == names


@pytest.mark.parametrize("char", CONTROL)
def test_a_provider_name_is_checked_before_it_is_looked_up(org_a, char):
    """provider_create and provider_save look the name up: a NUL reaching that query is a
    500 on PostgreSQL, so the name is checked first, with the message every name gets."""
    for save in (services.provider_create, services.provider_save):
        with pytest.raises(ValidationError) as exc:
            save(actor=ACTOR, org=org_a, name=f"p{char}x", kind="mock")
        assert exc.value.message_dict == {"name": [NAME_MESSAGE]}
    assert not ProviderConnection.objects.exists()


# ------------------------------------------------------------------------- the ways in
BAD = "ops\nBcc: victim@evil.test"


def _shown(response, client):
    return [str(m) for m in client.get(response.url).context["messages"]]


def test_the_dashboard_refuses_with_a_message(alice_client, org_a):
    keys = alice_client.post(f"/o/{org_a.slug}/keys/", {"name": BAD})
    assert keys.status_code == 400  # a refused form: the page again
    assert f"Name: {NAME_MESSAGE}" in [str(m) for m in keys.context["messages"]]
    team = alice_client.post(f"/o/{org_a.slug}/team/teams/", {"name": BAD})
    assert team.status_code == 400  # the page again, with what was typed
    assert f"Name: {NAME_MESSAGE}" in [str(m) for m in team.context["messages"]]
    token = alice_client.post(f"/o/{org_a.slug}/settings/tokens/", {"name": BAD})
    assert token.status_code == 400  # the page again, with what was typed
    assert f"Name: {NAME_MESSAGE}" in [str(m) for m in token.context["messages"]]
    settings = alice_client.post(f"/o/{org_a.slug}/settings/", {"name": BAD})
    assert settings.status_code == 400 and NAME_MESSAGE in settings.content.decode()
    provider = alice_client.post(f"/o/{org_a.slug}/providers/", {"name": "p\x00x", "kind": "mock"})
    assert provider.status_code == 400  # the provider form answers a refused form with 400
    # A provider's name is a slug: the form refuses the NUL before the service sees it.
    assert [str(m) for m in provider.context["messages"]][0].startswith("Name: ")
    long_token = alice_client.post(f"/o/{org_a.slug}/settings/tokens/", {"name": "t" * 121})
    assert long_token.status_code == 400 and any(
        "at most 120 characters" in str(m) for m in long_token.context["messages"]
    )
    assert not ApiKey.objects.exists() and not Team.objects.exists()
    assert not PersonalAccessToken.objects.exists() and not ProviderConnection.objects.exists()
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


@pytest.mark.parametrize("char", CONTROL)
@pytest.mark.parametrize("field", ["model_name", "upstream_model", "region"])
def test_a_deployments_names_hold_no_control_characters(org_a, char, field):
    """A model name reaches response headers, pages, CSV exports and emails; a NUL in any
    of the three reached a query (a 500 on PostgreSQL) and a line break was stored."""
    from gateway.models import Deployment

    provider = services.provider_create(actor=ACTOR, org=org_a, name="p", kind="mock")
    names = {"model_name": "chat", "upstream_model": "mock-chat", "region": ""}
    names[field] = f"a{char}b"
    with pytest.raises(ValidationError) as exc:
        services.deployment_save(actor=ACTOR, org=org_a, provider=provider, **names)
    assert exc.value.message_dict == {field: [NAME_MESSAGE]}
    assert not Deployment.objects.exists()


def test_a_deployment_with_a_control_character_is_a_400_over_rest(alice_client, org_a):
    services.provider_create(actor=ACTOR, org=org_a, name="p", kind="mock")
    response = alice_client.post(
        "/api/gateway/deployments",
        {"model_name": "chat\r\nX-Evil: 1", "provider": "p", "upstream_model": "mock-chat"},
        content_type="application/json",
    )
    assert response.status_code == 400 and "model_name" in response.json()
