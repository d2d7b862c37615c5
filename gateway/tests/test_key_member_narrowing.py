"""A member editing their own key may only rename and narrow it, the same over REST and in the
dashboard (services.api_key_update): never raise or remove a limit, clear or extend the
expiry, widen or clear the scopes, move it to another team (out of a spent team budget) or
change its routing policy. An admin may do all of that. A member creates keys on their own
team only."""

import re

import pytest

from conftest import SETUP
from gateway import services
from gateway.models import ApiKey
from gateway.tests.conftest import org_models, org_providers
from governance import services as governance_services
from orgs.audit import Actor
from orgs.models import AuditLog, Membership, Team

pytestmark = pytest.mark.django_db
JSON = "application/json"

# field: (values a member may not set, a value they may set, what is stored then)
CASES = {
    "rpm_limit": ([11, None], 9, 9),
    "tpm_limit": ([2000, None], 500, 500),
    "expires_at": ([None, "2099-01-01"], "2097-01-01", "2097-01-01T23:59:59+00:00"),
    "allowed_models": ([[], ["a", "c"], ["c"]], ["a"], ["a"]),
    "allowed_providers": ([[], ["p", "z"]], ["q"], ["q"]),
}


@pytest.fixture
def teams(org_a, bob):
    platform = Team.objects.create(org=org_a, name="platform")
    research = Team.objects.create(org=org_a, name="research")  # bob is not on it
    Membership.objects.filter(org=org_a, user=bob).update(team=platform)
    return platform, research


@pytest.fixture
def bobs_key(org_a, bob, teams):
    """Bob's key, as an admin tightened it."""
    org_models(org_a, "a", "b", "c")
    org_providers(org_a, "p", "q", "z")
    key, _raw = services.api_key_create(
        actor=Actor(user=bob, via="test"),
        org=org_a,
        name="bob-key",
        team=teams[0],
        rpm_limit=10,
        tpm_limit=1000,
        expires_at="2098-06-01",
        allowed_models=["a", "b"],
        allowed_providers=["p", "q"],
    )
    return key


def _row(key):
    return ApiKey.objects.filter(pk=key.pk).values().get()


def _shown(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


def _form(key, **override):
    """The dashboard edit form as the page fills it, with ``override`` typed in."""
    data = {
        "name": key.name,
        "allowed_models": ", ".join(key.allowed_models),
        "allowed_providers": ", ".join(key.allowed_providers),
        "team": key.team_id or "",
        "rpm_limit": key.rpm_limit or "",
        "tpm_limit": key.tpm_limit or "",
        "expires_at": key.expires_at.strftime("%Y-%m-%d") if key.expires_at else "",
    }
    for field, value in override.items():
        if isinstance(value, list):
            value = ", ".join(value)
        data[field] = "" if value is None else value
    return data


# ------------------------------------------------------------------------------ REST
@pytest.mark.parametrize("field", sorted(CASES))
def test_it_refuses_a_member_widening_a_field_over_rest(bob_client, bobs_key, field):
    refused, allowed, stored = CASES[field]
    url = f"/api/gateway/keys/{bobs_key.id}"
    for value in refused:
        before = _row(bobs_key)
        response = bob_client.patch(url, {field: value}, content_type=JSON)
        assert response.status_code == 400, (value, response.content)
        assert field in response.json() and "admin" in response.json()[field][0]
        assert _row(bobs_key) == before
    response = bob_client.patch(url, {field: allowed, "name": "narrowed"}, content_type=JSON)
    assert response.status_code == 200, response.content
    bobs_key.refresh_from_db()
    assert _shown(getattr(bobs_key, field)) == stored and bobs_key.name == "narrowed"


@pytest.mark.parametrize("field", sorted(CASES))
def test_an_admin_may_widen_each_field_over_rest(alice_client, bobs_key, field):
    for value in CASES[field][0]:
        response = alice_client.patch(
            f"/api/gateway/keys/{bobs_key.id}", {field: value}, content_type=JSON
        )
        assert response.status_code == 200, (value, response.content)


def test_a_member_keeps_the_team_and_an_admin_moves_it(
    bob_client, alice_client, bobs_key, teams, org_a
):
    platform, research = teams
    url = f"/api/gateway/keys/{bobs_key.id}"
    for team in (None, research.id):
        response = bob_client.patch(url, {"team": team}, content_type=JSON)
        assert response.status_code == 400 and "team" in response.json()
        assert ApiKey.objects.get(pk=bobs_key.pk).team == platform
    # the team it is on, sent back unchanged (as a full form does), is no move
    assert bob_client.patch(url, {"team": platform.id}, content_type=JSON).status_code == 200
    assert alice_client.patch(url, {"team": research.id}, content_type=JSON).status_code == 200
    assert ApiKey.objects.get(pk=bobs_key.pk).team == research


def test_a_member_keeps_an_rt_key_s_policy_and_an_admin_moves_it(
    bob, bob_client, alice_client, org_a
):
    first, second = (
        governance_services.routing_policy_save(
            actor=SETUP, org=org_a, name=name, strategy="failover", models=["chat"]
        )
        for name in ("first", "second")
    )
    key, _raw = services.api_key_create(
        actor=Actor(user=bob, via="test"), org=org_a, name="rt", routing_policy=first
    )
    url = f"/api/gateway/keys/{key.id}"
    response = bob_client.patch(url, {"routing_policy": "second"}, content_type=JSON)
    assert response.status_code == 400 and "routing_policy" in response.json()
    assert ApiKey.objects.get(pk=key.pk).routing_policy == first
    assert bob_client.patch(url, {"routing_policy": "first"}, content_type=JSON).status_code == 200
    response = alice_client.patch(url, {"routing_policy": "second"}, content_type=JSON)
    assert response.status_code == 200
    assert ApiKey.objects.get(pk=key.pk).routing_policy == second


def test_a_member_may_set_limits_and_an_expiry_where_there_were_none(bob, bob_client, org_a):
    key, _raw = services.api_key_create(actor=Actor(user=bob, via="test"), org=org_a, name="k")
    org_models(org_a, "a")
    org_providers(org_a, "p")
    body = {
        "rpm_limit": 3,
        "tpm_limit": 90,
        "expires_at": "2097-01-01",
        "allowed_models": ["a"],
        "allowed_providers": ["p"],
    }
    response = bob_client.patch(f"/api/gateway/keys/{key.id}", body, content_type=JSON)
    assert response.status_code == 200, response.content
    key.refresh_from_db()
    assert (key.rpm_limit, key.tpm_limit, key.allowed_models) == (3, 90, ["a"])


def test_a_refused_edit_is_not_audited(bob_client, bobs_key):
    before = AuditLog.objects.filter(action="api_key.update").count()
    bob_client.patch(f"/api/gateway/keys/{bobs_key.id}", {"rpm_limit": 99}, content_type=JSON)
    assert AuditLog.objects.filter(action="api_key.update").count() == before


# ------------------------------------------------------------------------------ dashboard
@pytest.mark.parametrize("field", sorted(CASES) + ["team"])
def test_the_dashboard_refuses_a_member_widening_a_field(
    bob_client, alice_client, bobs_key, teams, field
):
    refused, allowed, stored = CASES.get(field, ([None, teams[1].id], None, None))
    url = f"/o/acme/keys/{bobs_key.id}/edit/"
    for value in refused:
        before = _row(bobs_key)
        response = bob_client.post(url, _form(bobs_key, **{field: value}))
        assert response.status_code == 400, value
        assert f"{field}: " in response.content.decode() and "admin" in response.content.decode()
        assert _row(bobs_key) == before
    if allowed is not None:
        response = bob_client.post(url, _form(bobs_key, name="narrowed", **{field: allowed}))
        assert response.status_code == 302
        bobs_key.refresh_from_db()
        assert _shown(getattr(bobs_key, field)) == stored and bobs_key.name == "narrowed"
    # an admin may set what the member was refused
    response = alice_client.post(url, _form(bobs_key, **{field: refused[-1]}))
    assert response.status_code == 302


def test_the_dashboard_saves_a_member_s_unchanged_form(bob_client, bobs_key):
    before = _row(bobs_key)
    response = bob_client.post(f"/o/acme/keys/{bobs_key.id}/edit/", _form(bobs_key))
    assert response.status_code == 302 and _row(bobs_key) == before


# ------------------------------------------------------------------------------ create
def test_a_member_creates_keys_on_their_own_team_only(
    bob_client, alice_client, teams, org_a, alice
):
    platform, research = teams
    response = bob_client.post(
        "/api/gateway/keys", {"name": "x", "team": research.id}, content_type=JSON
    )
    assert response.status_code == 400 and "team" in response.json()
    page = bob_client.post("/o/acme/keys/", {"name": "y", "team": research.id})
    assert page.status_code == 400 and "team: members create keys" in page.content.decode()
    assert not ApiKey.objects.exists()
    # their own team, or none given: the key is on their team
    for body in ({"name": "own", "team": platform.id}, {"name": "none"}):
        response = bob_client.post("/api/gateway/keys", body, content_type=JSON)
        assert response.status_code == 201 and response.json()["team"] == platform.id
    assert bob_client.post("/o/acme/keys/", {"name": "page"}).status_code == 302
    assert ApiKey.objects.get(name="page").team == platform
    # an admin puts a key on any team, or none
    response = alice_client.post(
        "/api/gateway/keys", {"name": "a", "team": research.id}, content_type=JSON
    )
    assert response.status_code == 201 and response.json()["team"] == research.id
    assert (
        alice_client.post("/api/gateway/keys", {"name": "b"}, content_type=JSON).json()["team"]
        is None
    )


def test_a_member_without_a_team_creates_keys_without_one(bob, bob_client, org_a, teams):
    Membership.objects.filter(org=org_a, user=bob).update(team=None)
    response = bob_client.post(
        "/api/gateway/keys", {"name": "x", "team": teams[0].id}, content_type=JSON
    )
    assert response.status_code == 400 and "team" in response.json()
    response = bob_client.post("/api/gateway/keys", {"name": "y"}, content_type=JSON)
    assert response.status_code == 201 and response.json()["team"] is None


def _team_options(client) -> list[str]:
    page = client.get("/o/acme/keys/").content.decode()
    select = re.search(r'<select name="team">(.*?)</select>', page, re.S).group(1)
    return re.findall(r'<option value="([^"]*)">', select)


def test_the_key_form_offers_a_member_only_the_team_their_keys_go_on(
    bob, bob_client, alice_client, org_a, teams
):
    platform, research = teams
    assert _team_options(bob_client) == [str(platform.id)]  # bob is on platform
    assert _team_options(alice_client) == ["", str(platform.id), str(research.id)]
    Membership.objects.filter(org=org_a, user=bob).update(team=None)
    assert _team_options(bob_client) == [""]  # no team: "no team" only
