"""Serving an org's keys only through its VPC agents (Organization.vpc_only): who may turn
it on (admins, in VPC mode; dashboard and REST), its audit rows, the agent's config carrying
it, and, in real processes, the shared gateway refusing the org's keys (403 vpc_only, one
usage row each) within its sync interval while the org's agent keeps serving them."""

import json
import time

import httpx
import pytest

from agents import services
from agents.tests.agent_harness import AgentProcess, ControlPlane, wait_for
from agents.tests.conftest import SETUP
from conftest import SETUP as ORG_SETUP
from core.config_version import current_version
from gateway.dataplane.snapshot import delta_from_dict, snapshot_from_dict
from gateway.tests.fake_upstream import FakeUpstream
from orgs.config import config_apply
from orgs.models import AuditLog, Organization
from orgs.services import org_vpc_only_set

PAGE = "/o/acme/settings/deployment/"


def _rows(org):
    return list(AuditLog.objects.filter(org=org, action="org.vpc_only").order_by("id"))


# ------------------------------------------------------------------------------ service
def test_it_is_off_by_default_and_needs_vpc_mode(org_a):
    assert Organization.objects.get(pk=org_a.pk).vpc_only is False
    version = current_version()
    with pytest.raises(Exception, match="VPC mode") as exc:
        org_vpc_only_set(actor=SETUP, org=org_a, vpc_only=True)
    assert type(exc.value).__name__ == "ValidationError"
    assert Organization.objects.get(pk=org_a.pk).vpc_only is False
    assert current_version() == version and _rows(org_a) == []


def test_it_is_audited_bumped_once_per_change(org_a, token_a):
    version = current_version()
    org_vpc_only_set(actor=SETUP, org=org_a, vpc_only=True)
    assert Organization.objects.get(pk=org_a.pk).vpc_only is True
    assert current_version() == version + 1
    org_vpc_only_set(actor=SETUP, org=org_a, vpc_only=True)  # no change: no row, no bump
    assert current_version() == version + 1
    org_vpc_only_set(actor=SETUP, org=org_a, vpc_only=False)
    assert current_version() == version + 2
    rows = _rows(org_a)
    assert [(r.changes["before"], r.changes["after"]) for r in rows] == [
        ({"vpc_only": False}, {"vpc_only": True}),
        ({"vpc_only": True}, {"vpc_only": False}),
    ]


def test_switching_back_to_the_shared_gateway_ends_it_audited(org_a, token_a):
    org_vpc_only_set(actor=SETUP, org=org_a, vpc_only=True)
    services.vpc_disable(actor=SETUP, org=org_a)
    org = Organization.objects.get(pk=org_a.pk)
    assert (org.deployment_mode, org.vpc_only) == ("shared", False)
    assert [r.changes["after"] for r in _rows(org_a)] == [{"vpc_only": True}, {"vpc_only": False}]


def test_apply_config_sets_it(org_a, token_a):
    config_apply(actor=ORG_SETUP, data={"orgs": [{"slug": "acme", "vpc_only": True}]})
    assert Organization.objects.get(pk=org_a.pk).vpc_only is True
    assert len(_rows(org_a)) == 1
    with pytest.raises(ValueError, match="vpc_only"):
        config_apply(actor=ORG_SETUP, data={"orgs": [{"slug": "acme", "vpc_only": "yes"}]})
    config_apply(actor=ORG_SETUP, data={"orgs": [{"slug": "acme", "vpc_only": False}]})
    assert Organization.objects.get(pk=org_a.pk).vpc_only is False


# ------------------------------------------------------------------------------ agent config
def test_the_agents_config_carries_it_in_full_and_in_deltas(agent_a, org_a):
    full = agent_a.config().json()
    snap = snapshot_from_dict(full["snapshot"], b"")
    assert snap.orgs[org_a.id].vpc_only is False
    org_vpc_only_set(actor=SETUP, org=org_a, vpc_only=True)
    doc = agent_a.config(since=full["version"]).json()
    assert doc["full"] is False
    delta = delta_from_dict(doc["delta"])
    assert delta.orgs[org_a.id].vpc_only is True


# ------------------------------------------------------------------------------ dashboard
def test_an_admin_turns_it_on_and_off_on_the_deployment_page(alice_client, org_a, token_a):
    html = alice_client.get(PAGE).content.decode()
    assert 'id="vpc-only"' in html and "Serve keys only through agents" in html
    r = alice_client.post(PAGE, {"action": "vpc_only", "vpc_only": "on"}, follow=True)
    assert r.redirect_chain[-1][0] == PAGE
    html = r.content.decode()
    assert "only your agents serve them" in html and "403 vpc_only" in html
    assert "Also serve keys on the shared gateway" in html
    assert Organization.objects.get(pk=org_a.pk).vpc_only is True
    alice_client.post(PAGE, {"action": "vpc_only"})
    assert Organization.objects.get(pk=org_a.pk).vpc_only is False
    [on, off] = _rows(org_a)
    assert on.actor_id == off.actor_id == org_a.memberships.get(role="admin").user_id
    assert (on.via, on.changes["after"], off.changes["after"]) == (
        "web",
        {"vpc_only": True},
        {"vpc_only": False},
    )


def test_members_see_it_but_cannot_change_it_and_outsiders_get_404(
    bob_client, vera_client, charlie_client, org_a, token_a
):
    org_vpc_only_set(actor=SETUP, org=org_a, vpc_only=True)
    html = bob_client.get(PAGE).content.decode()
    assert "Only through your agents" in html and 'value="vpc_only"' not in html
    for client in (bob_client, vera_client):
        assert client.post(PAGE, {"action": "vpc_only"}).status_code == 403
    assert charlie_client.get(PAGE).status_code == 404
    assert charlie_client.post(PAGE, {"action": "vpc_only"}).status_code == 404
    assert Organization.objects.get(pk=org_a.pk).vpc_only is True and len(_rows(org_a)) == 1


def test_a_shared_org_is_told_to_switch_first(alice_client, org_a):
    r = alice_client.post(PAGE, {"action": "vpc_only", "vpc_only": "on"}, follow=True)
    assert "switch to VPC agent first" in r.content.decode()
    assert Organization.objects.get(pk=org_a.pk).vpc_only is False


# ------------------------------------------------------------------------------ REST
def _patch(client, slug, body):
    return client.patch(
        f"/api/orgs/{slug}/agent", data=json.dumps(body), content_type="application/json"
    )


def test_an_admin_sets_it_over_rest(alice_client, bob_client, org_a, token_a):
    r = _patch(alice_client, "acme", {"vpc_only": True})
    assert r.status_code == 200 and r.json()["vpc_only"] is True
    assert bob_client.get("/api/orgs/acme/agent").json()["vpc_only"] is True
    [row] = _rows(org_a)
    assert row.via == "api" and row.changes["after"] == {"vpc_only": True}
    assert _patch(alice_client, "acme", {"vpc_only": False}).json()["vpc_only"] is False


def test_rest_refuses_members_outsiders_bad_input_and_shared_orgs(
    alice_client, bob_client, charlie_client, org_a, org_b, token_a
):
    assert _patch(bob_client, "acme", {"vpc_only": True}).status_code == 403
    assert _patch(charlie_client, "acme", {"vpc_only": True}).status_code == 404
    assert _patch(alice_client, "globex", {"vpc_only": True}).status_code == 404
    for bad in ({}, {"vpc_only": "maybe"}, {"vpc_only": None}):
        r = _patch(alice_client, "acme", bad)
        assert r.status_code == 400 and "vpc_only" in r.json(), bad
    assert Organization.objects.get(pk=org_a.pk).vpc_only is False and _rows(org_a) == []
    r = _patch(charlie_client, "globex", {"vpc_only": True})  # globex is on the shared gateway
    assert r.status_code == 400 and "VPC mode" in json.dumps(r.json())
    assert Organization.objects.get(pk=org_b.pk).vpc_only is False


# ------------------------------------------------------------------------------ real processes
def _set(cp: ControlPlane, on: bool) -> None:
    cp.shell(
        "from orgs.models import Organization; from orgs.services import org_vpc_only_set;"
        "from orgs.audit import Actor;"
        "org_vpc_only_set(actor=Actor(via='test'), org=Organization.objects.get(slug='acme'),"
        f" vpc_only={on}); print('ok')"
    )


@pytest.mark.slow
@pytest.mark.alone  # the shared gateway refuses within 2 s
def test_the_shared_gateway_refuses_the_key_within_its_sync_and_the_agent_serves_it(tmp_path):
    upstream = FakeUpstream().start()
    cp = ControlPlane(tmp_path / "cp", upstream.url)
    agent = AgentProcess(tmp_path / "agent-state", cp.url, cp.token)
    calls = []  # (source, status) of every request made with the org's key

    def chat(where: str):
        url = cp.url if where == "shared_gateway" else agent.url
        r = httpx.post(
            url + "/v1/chat/completions",
            json={"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {cp.key}"},
            timeout=30,
        )
        calls.append((where, r.status_code))
        return r

    try:
        agent.start()
        # Off (the default, in VPC mode): both serve the key.
        assert chat("shared_gateway").status_code == 200
        assert chat("vpc_agent").status_code == 200

        _set(cp, True)
        # The running gateway polls every 0.5 s (GATEWAY_SNAPSHOT_POLL_S): refused within 2 s.
        changed, refused = time.monotonic(), False
        while not refused and time.monotonic() - changed < 2.0:
            refused = chat("shared_gateway").status_code == 403
            time.sleep(0 if refused else 0.05)
        assert refused, "the shared gateway still served the key 2 s after the change"
        sent = len(upstream.requests)
        r = chat("shared_gateway")
        body = r.json()
        assert r.status_code == 403, r.text
        assert body["error"]["code"] == "vpc_only" and body["error"]["type"] == "permission_error"
        assert "agent's /v1 URL" in body["error"]["message"]
        assert len(upstream.requests) == sent  # nothing reached a model
        # The org's agent serves it still, after its own sync brought it the flag.
        assert wait_for(lambda: _agent_has_the_flag(agent), 10), agent.log()
        r = chat("vpc_agent")
        assert r.status_code == 200 and r.headers["x-bonito-source"] == "vpc_agent", r.text

        # Every request with a valid key is exactly one usage row; the refused ones rejected.
        expected = sorted(
            (where, "success" if status == 200 else "rejected", status) for where, status in calls
        )

        def rows():
            return sorted(cp.ext.query("SELECT source, status, http_status FROM gateway_requests"))

        assert wait_for(lambda: rows() == expected, 20), (rows(), expected)
        refused = cp.ext.query("SELECT error_type FROM gateway_requests WHERE status = 'rejected'")
        assert {row[0] for row in refused} == {"vpc_only"}

        # Off again: the shared gateway serves it within its sync interval.
        _set(cp, False)
        assert wait_for(lambda: chat("shared_gateway").status_code == 200, 2, interval=0.05)
    finally:
        agent.stop()
        cp.close()


def _agent_has_the_flag(agent: AgentProcess) -> bool:
    """Whether the config the agent serves from (its disk cache) has the org VPC-only."""
    path = agent.state_dir / "config.json"
    if not path.exists():
        return False
    orgs = json.loads(path.read_text())["snapshot"]["orgs"]
    return [o.get("vpc_only") for o in orgs.values()] == [True]


def test_a_platform_admin_sets_it_in_the_django_admin_through_the_service(admin_client, org_a):
    services.vpc_enable(actor=SETUP, org=org_a)
    url = f"/admin/orgs/organization/{org_a.pk}/change/"
    form = {
        "name": org_a.name,
        "tier": org_a.tier,
        "deployment_mode": "vpc",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
    }
    assert admin_client.post(url, {**form, "vpc_only": "on"}).status_code == 302
    assert Organization.objects.get(pk=org_a.pk).vpc_only is True
    [row] = _rows(org_a)
    assert row.via == "admin" and row.changes["after"] == {"vpc_only": True}
    # shared and VPC-only at once is refused on the form, nothing changed
    r = admin_client.post(url, {**form, "deployment_mode": "shared", "vpc_only": "on"})
    assert r.status_code == 200 and "switch to VPC agent first" in r.content.decode()
    assert Organization.objects.get(pk=org_a.pk).deployment_mode == "vpc"
    assert admin_client.post(url, form).status_code == 302  # unticked
    assert Organization.objects.get(pk=org_a.pk).vpc_only is False and len(_rows(org_a)) == 2
