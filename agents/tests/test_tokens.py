"""bt- org tokens: made when the org switches to VPC mode, checked on every agent call;
rotation hands the new token to running agents and retires the old one once they all use
it (or the grace ends); revocation is immediate; cookies authenticate nothing here."""

from datetime import timedelta

import pytest
from django.utils import timezone

from agents import services
from agents.models import OrgToken
from agents.tests.conftest import AgentClient
from conftest import SETUP
from orgs.models import AuditLog, Organization

ENDPOINTS = [
    ("get", "/api/agent/config"),
    ("get", "/api/agent/keys"),
    ("post", "/api/agent/ingest"),
    ("post", "/api/agent/heartbeat"),
]


def test_switching_to_vpc_mode_makes_a_token_stored_only_as_a_hash(org_a, token_a):
    org_a.refresh_from_db()
    assert org_a.deployment_mode == Organization.DeploymentMode.VPC
    assert token_a.startswith("bt-")
    token = OrgToken.objects.get(org=org_a)
    assert token_a not in (token.token_hash, token.prefix, token.pending)
    assert token.pending == ""
    audit = AuditLog.objects.filter(org=org_a, action="agent_token.create").get()
    assert token_a not in str(audit.changes) and token_a not in audit.target_repr


def test_switching_twice_is_refused(org_a, token_a):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        services.vpc_enable(actor=SETUP, org=org_a)


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer ", "Bearer bt-garbage", "Bearer bn-" + "A" * 38, "Basic dXNlcjpwYXNz"],
)
def test_a_missing_or_malformed_token_is_401(client, token_a, method, path, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    r = getattr(client, method)(path, headers=headers)
    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_a_well_formed_unknown_token_is_401(token_a, method, path):
    from core import keys

    stranger = AgentClient(keys.generate("bt-"))
    r = getattr(stranger.http, method)(path, headers=stranger.headers())
    assert r.status_code == 401


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_a_dashboard_session_authenticates_nothing(alice_client, token_a, method, path):
    r = getattr(alice_client, method)(path)
    assert r.status_code == 401


def test_a_bad_agent_id_header_is_400(agent_a):
    agent_a.agent_id = "not-a-uuid"
    r = agent_a.config()
    assert r.status_code == 400 and r.json()["code"] == "agent_id"


def test_revocation_is_immediate(agent_a, org_a):
    assert agent_a.config().status_code == 200
    services.org_token_revoke(actor=SETUP, org=org_a)
    assert agent_a.config().status_code == 401
    assert agent_a.heartbeat().status_code == 401
    assert AuditLog.objects.filter(org=org_a, action="agent_token.revoke").exists()


def test_switching_back_to_shared_revokes_the_token(agent_a, org_a):
    services.vpc_disable(actor=SETUP, org=org_a)
    org_a.refresh_from_db()
    assert org_a.deployment_mode == Organization.DeploymentMode.SHARED
    assert agent_a.config().status_code == 401


def test_an_org_put_back_on_the_shared_gateway_elsewhere_has_no_agents(agent_a, org_a):
    from orgs.services import org_update

    org_update(actor=SETUP, org=org_a, deployment_mode="shared")  # the platform admin's way
    assert agent_a.config().status_code == 401


def test_a_rotated_token_is_handed_to_agents_still_on_the_old_one(agent_a, org_a):
    agent_a.config()
    _token, new = services.org_token_rotate(actor=SETUP, org=org_a)
    r = agent_a.config()
    assert r.status_code == 200
    assert r.json()["token"] == {"rotate_to": new}
    # The new token's own caller is not told anything.
    assert AgentClient(new, agent_a.agent_id).config().json()["token"] is None


def test_the_old_token_stops_once_every_recent_agent_uses_the_new_one(org_a, token_a):
    one, two = AgentClient(token_a), AgentClient(token_a)
    one.config(), two.config()
    _token, new = services.org_token_rotate(actor=SETUP, org=org_a)
    AgentClient(new, one.agent_id).config()
    assert two.config().status_code == 200, "two has not switched yet: the old token still works"
    AgentClient(new, two.agent_id).config()
    assert two.config().status_code == 401
    assert OrgToken.objects.get(org=org_a, revoked_at__isnull=True).pending == ""
    assert AuditLog.objects.filter(org=org_a, action="agent_token.rotation_done").exists()


def test_the_old_token_stops_when_the_grace_ends(org_a, token_a, settings):
    laggard = AgentClient(token_a)
    laggard.config()
    services.org_token_rotate(actor=SETUP, org=org_a)
    assert laggard.config().status_code == 200
    OrgToken.objects.filter(org=org_a, grace_until__isnull=False).update(
        grace_until=timezone.now() - timedelta(seconds=1)
    )
    assert laggard.config().status_code == 401


def test_rotation_sets_the_grace_from_the_setting(org_a, token_a, settings):
    settings.AGENT_TOKEN_GRACE_HOURS = 2
    before = timezone.now()
    services.org_token_rotate(actor=SETUP, org=org_a)
    old = OrgToken.objects.get(org=org_a, grace_until__isnull=False)
    assert timedelta(hours=2) <= old.grace_until - before < timedelta(hours=2, seconds=30)


def test_the_kept_copy_of_a_new_token_is_encrypted_and_wiped_after_the_grace(org_a, token_a):
    from agents.alerts import agent_heartbeats_check

    AgentClient(token_a).config()
    _token, new = services.org_token_rotate(actor=SETUP, org=org_a)
    kept = OrgToken.objects.get(org=org_a, grace_until__isnull=True, revoked_at__isnull=True)
    assert kept.pending and new not in kept.pending
    OrgToken.objects.filter(org=org_a, grace_until__isnull=False).update(
        grace_until=timezone.now() - timedelta(seconds=1)
    )
    agent_heartbeats_check()
    kept.refresh_from_db()
    assert kept.pending == ""


def test_after_a_revocation_a_rotation_issues_a_working_token(agent_a, org_a):
    services.org_token_revoke(actor=SETUP, org=org_a)
    _token, new = services.org_token_rotate(actor=SETUP, org=org_a)
    assert AgentClient(new).config().status_code == 200
    assert agent_a.config().status_code == 401


def test_one_orgs_token_never_reads_another_orgs_data(agent_a, agent_b, org_a, org_b):
    doc = agent_b.config().json()
    assert doc["org"] == {"id": org_b.id, "slug": "globex"}
    assert set(doc["snapshot"]["orgs"]) == {str(org_b.id)}


@pytest.mark.parametrize(
    "path", ["/api/agent/nope", "/api/agent/config/extra", "/api/agent/v2/ingest"]
)
def test_unknown_agent_paths_are_a_json_404(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found" and response["Content-Type"] == "application/json"
