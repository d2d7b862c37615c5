"""A refused team rename (the Team page's inline form) or new team comes back with what was
typed and the error naming the field: it redirected, and the row showed the stored name
again, so the rename was typed again, as the other forms were fixed not to do."""

import pytest
from django.urls import reverse

from orgs import services
from orgs.audit import Actor
from orgs.models import Team

pytestmark = pytest.mark.django_db

ACTOR = Actor(via="test")


@pytest.fixture
def teams(org_a):
    return {
        name: services.team_create(actor=ACTOR, org=org_a, name=name, description=f"{name} d")
        for name in ("Research", "Support")
    }


def _row(html, team):
    """The inline form of ``team`` on the Team page."""
    return html.split(f'id="team-edit-{team.pk}"')[1].split("</form>")[0]


def _messages(response):
    return [(m.level_tag, str(m)) for m in response.context["messages"]]


@pytest.mark.parametrize(
    "typed, said",
    [
        ("Support", "A team with this name exists in this organization."),
        ("x" * 121, "Ensure this value has at most 120 characters (it has 121)."),
        ("R&D\n<labs>", "Names cannot contain line breaks"),
    ],
)
def test_a_refused_rename_keeps_what_was_typed(alice_client, org_a, teams, typed, said):
    research = teams["Research"]
    response = alice_client.post(
        reverse("team_edit", args=[org_a.slug, research.pk]),
        {"name": typed, "description": "new words"},
    )
    assert response.status_code == 400  # the page itself, not a redirect to the stored name
    [(level, message)] = _messages(response)
    assert level == "error" and message.startswith("Name: ") and said in message
    html = response.content.decode()
    row = _row(html, research)
    escaped = typed.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert f'value="{escaped}"' in row and 'value="new words"' in row
    # The other team's row shows what it has.
    other = _row(html, teams["Support"])
    assert 'value="Support"' in other and 'value="Support d"' in other
    research.refresh_from_db()
    assert (research.name, research.description) == ("Research", "Research d")


def test_a_refused_new_team_keeps_what_was_typed(alice_client, org_a, teams):
    response = alice_client.post(
        reverse("team_create", args=[org_a.slug]), {"name": "Support", "description": "dup"}
    )
    assert response.status_code == 400
    [(level, message)] = _messages(response)
    assert level == "error" and message.startswith("Name: ")
    action = f'action="{reverse("team_create", args=[org_a.slug])}"'
    form = response.content.decode().split(action)[1]
    form = form.split("</form>")[0]
    assert 'value="Support"' in form and 'value="dup"' in form
    assert Team.objects.for_org(org_a).count() == 2


def test_a_rename_that_works_still_redirects(alice_client, org_a, teams):
    response = alice_client.post(
        reverse("team_edit", args=[org_a.slug, teams["Research"].pk]), {"name": "Labs"}
    )
    assert response.status_code == 302
    assert Team.objects.get(pk=teams["Research"].pk).name == "Labs"


def test_an_outsider_cannot_rename_or_see_the_team(charlie_client, org_a, teams):
    response = charlie_client.post(
        reverse("team_edit", args=[org_a.slug, teams["Research"].pk]), {"name": "Mine"}
    )
    assert response.status_code == 404
    assert Team.objects.get(pk=teams["Research"].pk).name == "Research"
