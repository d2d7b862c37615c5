"""Disabling and enabling API keys (services.api_key_set_active): reversible, unlike revoking.
The service (audited with the masked key only, a config bump, who may), the REST actions,
and what /v1 does with a disabled key on every path, through the real snapshot refresher
(the change log's deltas), and the agent document carrying the flag."""

import json

import httpx
import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from core.config_version import current_version
from gateway import runtime, services
from gateway.dataplane.proxy import KEY_DISABLED
from gateway.dataplane.snapshot import key_from_dict, key_to_dict
from gateway.models import ApiKey
from gateway.snapshot_builder import SnapshotRefresher, build_snapshot, key_info
from gateway.tests.conftest import ACTOR, usage_rows
from orgs.audit import Actor
from orgs.models import AuditLog, Membership

pytestmark = pytest.mark.django_db
JSON = "application/json"


def _audits(key, action):
    return list(AuditLog.objects.filter(action=action, target_id=str(key.id)).order_by("id"))


@pytest.fixture
def bobs_key(org_a, bob):
    key, _raw = services.api_key_create(
        actor=Actor(user=bob, via="test"), org=org_a, name="bob-key", rpm_limit=7
    )
    return key


@pytest.fixture
def alices_key(org_a, alice):
    key, _raw = services.api_key_create(actor=Actor(user=alice, via="test"), org=org_a, name="a")
    return key


def _membership(user, org):
    return Membership.objects.get(user=user, org=org)


# ------------------------------------------------------------------------------ service
def test_disable_and_enable_are_audited_masked_bumped_and_keep_the_key(bobs_key):
    before = ApiKey.objects.filter(pk=bobs_key.pk).values().get()
    version = current_version()
    services.api_key_set_active(actor=ACTOR, key=bobs_key, active=False)
    stored = ApiKey.objects.get(pk=bobs_key.pk)
    assert stored.is_active is False and current_version() == version + 1
    # the secret, settings and history stay
    assert (stored.key_hash, stored.name, stored.rpm_limit, stored.revoked_at) == (
        before["key_hash"],
        "bob-key",
        7,
        None,
    )
    [row] = _audits(bobs_key, "api_key.disable")
    text = json.dumps(row.changes)
    assert row.changes["before"]["key"] == stored.masked and stored.key_hash not in text
    assert row.changes["after"]["is_active"] is False
    # the same state again changes nothing: no audit row, no bump
    services.api_key_set_active(actor=ACTOR, key=stored, active=False)
    assert current_version() == version + 1 and len(_audits(bobs_key, "api_key.disable")) == 1
    services.api_key_set_active(actor=ACTOR, key=stored, active=True)
    assert ApiKey.objects.get(pk=bobs_key.pk).is_active is True
    assert current_version() == version + 2 and len(_audits(bobs_key, "api_key.enable")) == 1
    after = ApiKey.objects.filter(pk=bobs_key.pk).values().get()
    assert after == before


def test_a_revoked_key_cannot_be_enabled(bobs_key):
    services.api_key_set_active(actor=ACTOR, key=bobs_key, active=False)
    services.api_key_revoke(actor=ACTOR, key=ApiKey.objects.get(pk=bobs_key.pk))
    version = current_version()
    with pytest.raises(ValidationError, match="revoked"):
        services.api_key_set_active(actor=ACTOR, key=bobs_key, active=True)
    stored = ApiKey.objects.get(pk=bobs_key.pk)
    assert stored.is_active is False and stored.revoked_at is not None
    assert current_version() == version and _audits(bobs_key, "api_key.enable") == []


def test_who_may_disable_and_enable(org_a, alice, bob, vera, bobs_key, alices_key):
    admin, member, viewer = (_membership(u, org_a) for u in (alice, bob, vera))
    # a member disables their own key, but does not enable it again
    services.api_key_set_active(actor=ACTOR, key=bobs_key, active=False, membership=member)
    with pytest.raises(PermissionDenied, match="admin"):
        services.api_key_set_active(actor=ACTOR, key=bobs_key, active=True, membership=member)
    assert ApiKey.objects.get(pk=bobs_key.pk).is_active is False
    # nor touches another's key; a viewer touches none
    for who, key in ((member, alices_key), (viewer, alices_key), (viewer, bobs_key)):
        for active in (False, True):
            with pytest.raises(PermissionDenied):
                services.api_key_set_active(actor=ACTOR, key=key, active=active, membership=who)
    assert ApiKey.objects.get(pk=alices_key.pk).is_active is True
    # an admin does both, on any key
    services.api_key_set_active(actor=ACTOR, key=bobs_key, active=True, membership=admin)
    services.api_key_set_active(actor=ACTOR, key=alices_key, active=False, membership=admin)
    assert ApiKey.objects.get(pk=bobs_key.pk).is_active is True
    assert ApiKey.objects.get(pk=alices_key.pk).is_active is False


# ------------------------------------------------------------------------------ snapshot
def test_the_flag_reaches_the_snapshot_and_the_agent_document(bobs_key):
    assert build_snapshot().keys[bobs_key.key_hash].disabled is False
    services.api_key_set_active(actor=ACTOR, key=bobs_key, active=False)
    stored = ApiKey.objects.select_related("routing_policy").get(pk=bobs_key.pk)
    info = build_snapshot().keys[stored.key_hash]
    assert info.disabled is True and key_info(stored) == info
    doc = key_to_dict(info)
    assert doc["disabled"] is True and key_from_dict(json.loads(json.dumps(doc))) == info
    # a document from a control plane that predates the flag: an enabled key
    older = {k: v for k, v in doc.items() if k != "disabled"}
    assert key_from_dict(older).disabled is False


# ------------------------------------------------------------------------------ REST
def test_rest_disable_and_enable_by_role(alice_client, bob_client, vera_client, bobs_key):
    url = f"/api/gateway/keys/{bobs_key.id}"
    assert vera_client.post(url + "/disable").status_code == 403
    response = bob_client.post(url + "/disable")
    assert response.status_code == 200, response.content
    assert response.json()["is_active"] is False and response.json()["status"] == "disabled"
    response = bob_client.post(url + "/enable")
    assert response.status_code == 403 and "admin" in response.json()["detail"]
    assert ApiKey.objects.get(pk=bobs_key.pk).is_active is False
    assert alice_client.get(url).json()["is_active"] is False
    response = alice_client.post(url + "/enable")
    assert response.status_code == 200 and response.json()["is_active"] is True
    # is_active is read-only in a PATCH: the actions are the way
    response = bob_client.patch(url, {"is_active": False}, content_type=JSON)
    assert response.status_code == 200 and ApiKey.objects.get(pk=bobs_key.pk).is_active


def test_rest_a_member_cannot_disable_another_s_key(bob_client, alices_key):
    response = bob_client.post(f"/api/gateway/keys/{alices_key.id}/disable")
    assert response.status_code == 403
    assert ApiKey.objects.get(pk=alices_key.pk).is_active is True


def test_rest_another_org_s_key_is_404(charlie_client, bobs_key):
    for action in ("disable", "enable"):
        assert charlie_client.post(f"/api/gateway/keys/{bobs_key.id}/{action}").status_code == 404
    assert ApiKey.objects.get(pk=bobs_key.pk).is_active is True


def test_rest_enabling_a_revoked_key_is_400(alice_client, bobs_key):
    services.api_key_revoke(actor=ACTOR, key=bobs_key)
    response = alice_client.post(f"/api/gateway/keys/{bobs_key.id}/enable")
    assert response.status_code == 400 and "revoked" in json.dumps(response.json())


# ------------------------------------------------------------------------------ through /v1
@pytest.fixture
def refresher(acme):
    refresher = SnapshotRefresher(runtime.snapshots(), interval=60)
    refresher.refresh_once()
    return refresher


def _calls(acme, raw):
    """One request on each /v1 path a key opens: (name, response)."""
    bearer = {"Authorization": f"Bearer {raw}"}
    hi = [{"role": "user", "content": "hi"}]
    return {
        "chat": httpx.post(
            f"{acme.base_url}/chat/completions",
            headers=bearer,
            json={"model": "chat-small", "messages": hi},
            timeout=30,
        ),
        "embeddings": httpx.post(
            f"{acme.base_url}/embeddings",
            headers=bearer,
            json={"model": "embed-small", "input": "hi"},
            timeout=30,
        ),
        "models": httpx.get(f"{acme.base_url}/models", headers=bearer, timeout=30),
        "messages": httpx.post(
            f"{acme.base_url}/messages",
            headers={"x-api-key": raw, "anthropic-version": "2023-06-01"},
            json={"model": "chat-small", "max_tokens": 10, "messages": hi},
            timeout=30,
        ),
    }


def test_a_disabled_key_is_refused_on_every_path_and_works_once_enabled(acme, mode, refresher):
    first = _calls(acme, acme.raw)
    assert {p: r.status_code for p, r in first.items()} == dict.fromkeys(first, 200)
    rows_before = len(usage_rows(acme.org))
    assert rows_before == len(first)  # one usage row per request with a valid key
    upstream_before = len(acme.fake.requests)
    services.api_key_set_active(actor=ACTOR, key=acme.key, active=False)
    refresher.refresh_once()
    for path, response in _calls(acme, acme.raw).items():
        assert response.status_code == 401, (path, response.text)
        body = response.json()
        assert body["error"]["message"] == KEY_DISABLED, path
        if path == "messages":
            assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
        else:
            assert body["error"]["code"] == "invalid_api_key"
    # a refused key is no valid key: no usage row, nothing sent upstream
    assert len(usage_rows(acme.org)) == rows_before
    assert len(acme.fake.requests) == upstream_before
    services.api_key_set_active(actor=ACTOR, key=acme.key, active=True)
    refresher.refresh_once()
    again = _calls(acme, acme.raw)
    assert {p: r.status_code for p, r in again.items()} == dict.fromkeys(again, 200)
    assert len(usage_rows(acme.org)) == 2 * rows_before


# ------------------------------------------------------------------------------ dashboard
def _page(client, name, org, key=None):
    from django.urls import reverse

    return reverse(name, args=[org.slug] + ([key.id] if key else []))


def test_dashboard_buttons_badge_and_roles(alice_client, bob_client, org_a, bobs_key):
    import re

    disable, enable = (_page(None, n, org_a, bobs_key) for n in ("key_disable", "key_enable"))
    listing, edit = _page(None, "keys", org_a), _page(None, "key_edit", org_a, bobs_key)
    for client in (alice_client, bob_client):
        for url in (listing, edit):
            html = client.get(url).content.decode()
            assert f'action="{disable}" data-confirm=' in html and enable not in html, url
    # bob disables his key from the edit page and lands back on it, with the state shown
    response = bob_client.post(disable, {"back": "edit"}, follow=True)
    assert response.redirect_chain[-1][0] == edit and b"disabled" in response.content
    assert ApiKey.objects.get(pk=bobs_key.pk).is_active is False
    html = bob_client.get(listing).content.decode()
    assert '<strong class="disabled">disabled</strong>' in html
    assert enable not in html and enable not in bob_client.get(edit).content.decode()
    # only an admin enables: bob's POST is refused and changes nothing
    assert bob_client.post(enable).status_code == 403
    assert ApiKey.objects.get(pk=bobs_key.pk).is_active is False
    for url in (listing, edit):
        html = alice_client.get(url).content.decode()
        assert f'action="{enable}" data-confirm=' in html, url
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), url
        assert not re.search(r"\son[a-z]+\s*=", html), url
    response = alice_client.post(enable, follow=True)
    assert response.redirect_chain[-1][0] == listing and b"enabled" in response.content
    assert ApiKey.objects.get(pk=bobs_key.pk).is_active is True
    assert len(_audits(bobs_key, "api_key.disable")) == len(_audits(bobs_key, "api_key.enable"))


def test_dashboard_refuses_others_keys_other_orgs_viewers_and_no_csrf(
    alice, bob_client, vera_client, charlie_client, org_a, org_b, alices_key
):
    from django.test import Client

    for name in ("key_disable", "key_enable"):
        # another org: its own slug or ours, the key is not found / not theirs
        assert charlie_client.post(_page(None, name, org_b, alices_key)).status_code == 404
        assert charlie_client.post(_page(None, name, org_a, alices_key)).status_code in (403, 404)
        assert bob_client.post(_page(None, name, org_a, alices_key)).status_code == 403
        assert vera_client.post(_page(None, name, org_a, alices_key)).status_code == 403
        client = Client(enforce_csrf_checks=True)
        client.force_login(alice)
        assert client.post(_page(None, name, org_a, alices_key)).status_code == 403
        assert client.get(_page(None, name, org_a, alices_key)).status_code == 405
    assert ApiKey.objects.get(pk=alices_key.pk).is_active is True
    assert _audits(alices_key, "api_key.disable") == []


def test_dashboard_enabling_a_revoked_key_says_why(alice_client, org_a, bobs_key):
    services.api_key_set_active(actor=ACTOR, key=bobs_key, active=False)
    services.api_key_revoke(actor=ACTOR, key=ApiKey.objects.get(pk=bobs_key.pk))
    response = alice_client.post(_page(None, "key_enable", org_a, bobs_key), follow=True)
    assert response.status_code == 200 and b"revoked" in response.content
    assert ApiKey.objects.get(pk=bobs_key.pk).is_active is False
