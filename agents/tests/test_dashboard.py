"""Settings → Deployment mode, the Agents page, the header indicator, the REST endpoints and
the admin list: admins act, members read, outsiders get 404."""

from datetime import timedelta

import pytest
from django.utils import timezone

from agents.models import Agent, OrgToken
from agents.tests.conftest import AgentClient
from orgs.models import AuditLog, Organization


def _shown(client, r):
    """The page the POST redirects to (post/redirect/get), where a new token is shown once."""
    assert r.status_code == 302 and "bt-" not in r.content.decode()
    return client.get(r["Location"])


def test_an_admin_switches_to_vpc_and_sees_the_token_once(alice_client, org_a):
    r = _shown(
        alice_client, alice_client.post("/o/acme/settings/deployment/", {"action": "enable"})
    )
    assert r.status_code == 200
    html = r.content.decode()
    token = html.split('<code id="new-token">')[1].split("</code>")[0]
    assert token.startswith("bt-")
    assert (
        "BONITO_CONTROL_PLANE" in html
        and "helm install" in html
        and "module &quot;bonito_gateway&quot;" in html  # escaped in the page
    )
    # The snippets are deploy/snippets (validated by make deploy-check), filled in: the
    # token right after it is made, the control plane's own URL.
    assert (
        f"--from-literal=token=&#x27;{token}&#x27;" in html and "BONITO_ORG_TOKEN: " + token in html
    )
    assert "controlPlane.url=http://testserver" in html
    assert AgentClient(token).config().status_code == 200
    again = alice_client.get("/o/acme/settings/deployment/").content.decode()
    assert token not in again
    org_a.refresh_from_db()
    assert org_a.deployment_mode == Organization.DeploymentMode.VPC


def test_an_admin_rotates_and_revokes(alice_client, org_a, token_a):
    r = _shown(
        alice_client, alice_client.post("/o/acme/settings/deployment/", {"action": "rotate"})
    )
    assert r.status_code == 200 and "bt-" in r.content.decode()
    # A reload shows the page without the token and rotates nothing.
    assert len(OrgToken.objects.filter(org=org_a).usable()) == 2  # the old one in its grace
    again = alice_client.get("/o/acme/settings/deployment/")
    assert 'id="new-token"' not in again.content.decode() and "no-store" not in again.get(
        "Cache-Control", ""
    )
    assert len(OrgToken.objects.filter(org=org_a).usable()) == 2
    r = alice_client.post("/o/acme/settings/deployment/", {"action": "revoke"})
    assert r.status_code == 302
    assert not OrgToken.objects.filter(org=org_a).usable().exists()
    assert AgentClient(token_a).config().status_code == 401


def test_an_admin_sets_the_alert_webhook_without_it_reaching_the_audit(
    alice_client, org_a, token_a, hook
):
    url = hook.url.replace("/v1", "/hooks") + "?secret=s3cr3t"
    alice_client.post("/o/acme/settings/deployment/", {"action": "alerts", "webhook_url": url})
    assert org_a.agent_state.alert_webhook_url == url
    assert "s3cr3t" not in str(list(AuditLog.objects.values_list("changes", flat=True)))


def test_a_webhook_to_a_private_address_is_refused(alice_client, org_a, token_a):
    r = alice_client.post(
        "/o/acme/settings/deployment/",
        {"action": "alerts", "webhook_url": "http://169.254.169.254/latest"},
        follow=True,
    )
    assert r.status_code == 200
    org_a.refresh_from_db()
    assert org_a.agent_state.alert_webhook_url == ""


def test_a_webhook_url_longer_than_its_column_is_refused_with_a_message(
    alice_client, org_a, token_a
):
    url = "https://hooks.example.com/" + "a" * 1000  # PostgreSQL refused it: a 500
    r = alice_client.post(
        "/o/acme/settings/deployment/", {"action": "alerts", "webhook_url": url}, follow=True
    )
    assert r.status_code == 200
    assert "at most 1000 characters" in r.content.decode()
    org_a.refresh_from_db()
    assert org_a.agent_state.alert_webhook_url == ""


@pytest.mark.parametrize("action", ["enable", "rotate", "revoke", "disable", "alerts"])
def test_members_cannot_change_the_deployment(bob_client, org_a, token_a, action):
    r = bob_client.post("/o/acme/settings/deployment/", {"action": action})
    assert r.status_code == 403
    assert OrgToken.objects.filter(org=org_a).usable().count() == 1


@pytest.mark.parametrize("path", ["/o/acme/settings/deployment/", "/o/acme/agents/"])
def test_members_read_and_outsiders_get_404(bob_client, charlie_client, token_a, path):
    assert bob_client.get(path).status_code == 200
    assert charlie_client.get(path).status_code == 404
    assert charlie_client.post(path, {"action": "revoke"}).status_code == 404


def test_the_agents_page_shows_each_agent(alice_client, agent_a, org_a):
    agent_a.heartbeat(
        hostname="ip-10-0-1-5",
        config_version=10**9,
        providers=[{"name": "oai", "kind": "openai", "healthy": True, "last_error": None}],
        warnings=["spool 80% full"],
    )
    html = alice_client.get("/o/acme/agents/").content.decode()
    assert "ip-10-0-1-5" in html and "1.0.0" in html and "in sync" in html
    assert "oai: healthy" in html and "spool 80% full" in html


def test_an_agent_behind_is_shown_behind(alice_client, agent_a, org_a):
    from conftest import SETUP
    from governance.services import policy_set

    agent_a.heartbeat(config_version=0)
    policy_set(actor=SETUP, org=org_a, denied_models=["x"])
    assert "behind (v0)" in alice_client.get("/o/acme/agents/").content.decode()


@pytest.mark.parametrize(
    ("minutes", "colour"), [(None, "grey"), (0, "green"), (3, "yellow"), (6, "red")]
)
def test_the_header_indicator_shows_the_colour(alice_client, agent_a, org_a, minutes, colour):
    if minutes is not None:
        agent_a.heartbeat()
        Agent.objects.filter(org=org_a).update(
            last_heartbeat_at=timezone.now() - timedelta(minutes=minutes)
        )
    html = alice_client.get("/o/acme/keys/").content.decode()
    assert f'data-agent-status="{colour}"' in html


def test_no_indicator_for_a_shared_org(alice_client, org_a):
    assert "data-agent-status" not in alice_client.get("/o/acme/keys/").content.decode()


def test_the_pages_carry_no_inline_script_or_style(alice_client, agent_a):
    agent_a.heartbeat()
    for path in ("/o/acme/settings/deployment/", "/o/acme/agents/"):
        html = alice_client.get(path).content.decode()
        assert "<script>" not in html and "style=" not in html and "onclick" not in html


# ------------------------------------------------------------------------------ REST


def test_members_read_the_orgs_agent_status(bob_client, agent_a, org_a):
    agent_a.heartbeat()
    body = bob_client.get("/api/orgs/acme/agent").json()
    assert body["deployment_mode"] == "vpc" and body["status"] == "green"
    assert [a["agent_id"] for a in body["agents"]] == [str(agent_a.agent_id)]
    assert all(t["id"].startswith("bt-") and "…" in t["id"] for t in body["tokens"])


def test_another_orgs_slug_is_404(charlie_client, bob_client, token_a, token_b):
    assert charlie_client.get("/api/orgs/acme/agent").status_code == 404
    assert charlie_client.post("/api/orgs/acme/agent/token").status_code == 404
    assert bob_client.get("/api/orgs/globex/agent").status_code == 404


def test_an_admin_rotates_over_rest_and_sees_the_token_once(alice_client, org_a, token_a):
    r = alice_client.post("/api/orgs/acme/agent/token")
    assert r.status_code == 201
    assert r["Cache-Control"] == "no-store"  # the raw token, once: no cache keeps it
    new = r.json()["token"]
    assert AgentClient(new).config().status_code == 200
    assert new not in alice_client.get("/api/orgs/acme/agent").content.decode()


def test_members_cannot_rotate_over_rest(bob_client, token_a):
    assert bob_client.post("/api/orgs/acme/agent/token").status_code == 403


def test_rotating_a_shared_org_is_a_clear_400(alice_client, org_a):
    r = alice_client.post("/api/orgs/acme/agent/token")
    assert r.status_code == 400 and "VPC mode" in r.content.decode()


def test_a_personal_access_token_works_only_for_its_org(alice, org_a, org_b, token_a):
    from django.test import Client

    from conftest import SETUP
    from orgs.services import membership_add, pat_create

    membership_add(actor=SETUP, org=org_b, user=alice, role="admin")
    _t, raw = pat_create(actor=SETUP, user=alice, org=org_a, name="ci")
    c = Client(headers={"Authorization": f"Bearer {raw}"})
    assert c.get("/api/orgs/acme/agent").status_code == 200
    assert c.get("/api/orgs/globex/agent").status_code == 404


def test_platform_admins_list_every_agent(admin_client, alice_client, agent_a, agent_b):
    agent_a.heartbeat()
    agent_b.heartbeat()
    body = admin_client.get("/api/admin/agents").json()
    assert {a["org"] for a in body} == {"acme", "globex"}
    assert alice_client.get("/api/admin/agents").status_code == 403


def test_a_platform_admin_s_token_does_not_list_other_orgs_agents(platform_admin, org_a, agent_b):
    """A personal access token is tied to one org, even a platform admin's."""
    from django.test import Client

    from conftest import SETUP
    from orgs.services import membership_add, pat_create

    membership_add(actor=SETUP, org=org_a, user=platform_admin, role="admin")
    _t, raw = pat_create(actor=SETUP, user=platform_admin, org=org_a, name="ci")
    answer = Client(headers={"Authorization": f"Bearer {raw}"}).get("/api/admin/agents")
    assert answer.status_code == 403 and "signed-in platform admin" in answer.json()["detail"]


def test_the_django_admin_lists_agents_read_only(admin_client, agent_a):
    agent_a.heartbeat()
    r = admin_client.get("/admin/agents/agent/")
    assert r.status_code == 200 and "agent-1" in r.content.decode()
    agent = Agent.objects.get()
    assert (
        admin_client.post(f"/admin/agents/agent/{agent.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )


def test_the_page_showing_a_new_token_is_never_cached(alice_client, org_a):
    r = _shown(
        alice_client, alice_client.post("/o/acme/settings/deployment/", {"action": "enable"})
    )
    assert r.status_code == 200 and r["Cache-Control"] == "no-store"
