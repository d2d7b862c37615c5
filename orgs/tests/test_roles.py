import pytest
from django.urls import reverse

from bonito.navigation import SECTION_ROLES, SECTIONS
from orgs.models import Membership, Team

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("section", [key for key, _ in SECTIONS])
def test_it_shows_every_section_to_every_role(
    section, alice_client, bob_client, vera_client, org_a
):
    url = reverse(section, args=[org_a.slug])
    for client in (alice_client, bob_client, vera_client):
        response = client.get(url)
        if section in SECTION_ROLES and client is not alice_client:
            # An admin-only section (the audit log): refused, and not in the navigation.
            assert response.status_code == 403
            assert url.encode() not in client.get(reverse("overview", args=[org_a.slug])).content
            continue
        assert response.status_code == 200
        assert org_a.name.encode() in response.content


@pytest.mark.parametrize("section", [key for key, _ in SECTIONS])
def test_it_hides_every_section_from_outsiders(section, charlie_client, org_a):
    assert charlie_client.get(reverse(section, args=[org_a.slug])).status_code == 404


def test_it_hides_unknown_orgs_the_same_way_as_foreign_ones(charlie_client):
    assert charlie_client.get(reverse("overview", args=["no-such-org"])).status_code == 404


@pytest.mark.parametrize("section", [key for key, _ in SECTIONS])
def test_it_sends_anonymous_visitors_to_login(section, client, org_a):
    response = client.get(reverse(section, args=[org_a.slug]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("who,expected", [("alice", 302), ("bob", 403), ("vera", 403)])
def test_only_admins_invite(who, expected, request, org_a):
    client = request.getfixturevalue(f"{who}_client")
    response = client.post(
        reverse("team", args=[org_a.slug]), {"email": "new@acme.test", "role": "member"}
    )
    assert response.status_code == expected
    assert org_a.invitations.filter(email="new@acme.test").exists() == (expected == 302)


@pytest.mark.parametrize("who,expected", [("alice", 302), ("bob", 403), ("vera", 403)])
def test_only_admins_change_settings(who, expected, request, org_a):
    client = request.getfixturevalue(f"{who}_client")
    response = client.post(reverse("settings", args=[org_a.slug]), {"name": "Renamed"})
    assert response.status_code == expected
    org_a.refresh_from_db()
    assert (org_a.name == "Renamed") == (expected == 302)


def test_viewer_cannot_change_roles(vera_client, bob, org_a):
    membership = Membership.objects.get(org=org_a, user=bob)
    url = reverse("member_role", args=[org_a.slug, membership.id])
    assert vera_client.post(url, {"role": "admin"}).status_code == 403
    membership.refresh_from_db()
    assert membership.role == "member"


def test_admin_changes_a_role(alice_client, bob, org_a):
    membership = Membership.objects.get(org=org_a, user=bob)
    alice_client.post(reverse("member_role", args=[org_a.slug, membership.id]), {"role": "viewer"})
    membership.refresh_from_db()
    assert membership.role == "viewer"


def test_the_last_admin_cannot_be_demoted(alice_client, alice, org_a):
    membership = Membership.objects.get(org=org_a, user=alice)
    response = alice_client.post(
        reverse("member_role", args=[org_a.slug, membership.id]), {"role": "member"}, follow=True
    )
    assert b"at least one admin" in response.content
    membership.refresh_from_db()
    assert membership.role == "admin"


def test_charlie_gets_404_on_alices_member_ids(charlie_client, bob, org_a, org_b):
    membership = Membership.objects.get(org=org_a, user=bob)
    # Even through his own org's URL, Alice's membership id does not resolve.
    url = reverse("member_remove", args=[org_b.slug, membership.id])
    assert charlie_client.post(url).status_code == 404
    assert Membership.objects.filter(pk=membership.pk).exists()


def test_charlie_gets_404_on_alices_teams(charlie_client, alice_client, org_a, org_b):
    alice_client.post(reverse("team_create", args=[org_a.slug]), {"name": "Research"})
    team = Team.objects.get(org=org_a, name="Research")
    assert (
        charlie_client.post(reverse("team_delete", args=[org_b.slug, team.id])).status_code == 404
    )
    assert Team.objects.filter(pk=team.pk).exists()


def test_team_page_lists_only_own_members(alice_client, bob, charlie, org_a):
    content = alice_client.get(reverse("team", args=[org_a.slug])).content
    assert b"bob@acme.test" in content
    assert b"charlie@globex.test" not in content


def test_org_switcher_lists_every_org_of_the_user(alice_client, alice, org_b):
    from orgs import services
    from orgs.audit import Actor

    services.membership_add(actor=Actor(via="test"), org=org_b, user=alice, role="viewer")
    content = alice_client.get(reverse("org_switcher")).content
    assert b"Acme Corp" in content and b"Globex" in content
    response = alice_client.get(reverse("overview", args=[org_b.slug]))
    assert response.status_code == 200
    assert response.context["current_membership"].role == "viewer"


def test_home_goes_to_the_last_used_org(alice_client, alice, org_a, org_b):
    from orgs import services
    from orgs.audit import Actor

    services.membership_add(actor=Actor(via="test"), org=org_b, user=alice, role="viewer")
    alice_client.get(reverse("overview", args=[org_b.slug]))
    assert alice_client.get("/")["Location"] == reverse("overview", args=[org_b.slug])
