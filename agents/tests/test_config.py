"""GET /api/agent/config and /keys: the token's org only, never a credential; a delta
brings an agent to the same state as a full pull; an unchanged config costs a 304."""

import base64
import json

import pytest

from agents.tests.conftest import AgentClient
from conftest import SETUP
from core.months import month_key
from gateway import services as gw
from gateway.dataplane.snapshot import apply_delta, delta_from_dict, snapshot_from_dict
from governance.services import policy_set

SECRET = "sk-provider-credential-never-leaves"


@pytest.fixture
def acme_setup(org_a, org_b):
    p = gw.provider_save(
        actor=SETUP, org=org_a, name="oai", kind="openai", credentials={"api_key": SECRET}
    )
    gw.deployment_save(
        actor=SETUP, org=org_a, model_name="chat", provider=p, upstream_model="gpt-4o-mini"
    )
    q = gw.provider_save(
        actor=SETUP, org=org_b, name="globex-oai", kind="openai", credentials={"api_key": "sk-b"}
    )
    gw.deployment_save(
        actor=SETUP, org=org_b, model_name="globex-chat", provider=q, upstream_model="gpt-4o"
    )
    key, raw = gw.api_key_create(actor=SETUP, org=org_a, name="backend")
    other, _ = gw.api_key_create(actor=SETUP, org=org_b, name="globex")
    return key, other


def test_the_full_document_is_the_orgs_own_without_credentials(agent_a, org_a, acme_setup):
    key, other = acme_setup
    r = agent_a.config()
    assert r.status_code == 200
    doc = r.json()
    assert doc["schema"] == 1 and doc["full"] is True
    assert doc["org"] == {"id": org_a.id, "slug": "acme"}
    assert set(doc["snapshot"]["orgs"]) == {str(org_a.id)}
    assert {k["id"] for k in doc["snapshot"]["keys"].values()} == {key.id}
    deps = doc["snapshot"]["orgs"][str(org_a.id)]["deployments"]["chat"]
    assert [d["credentials"] for d in deps] == [{}]
    assert SECRET not in r.content.decode() and "sk-b" not in r.content.decode()
    assert doc["facts"] == {"spent_this_month": 0.0, "month": month_key(), "blocked": {}}
    assert base64.b64decode(doc["hash_secret"]) == b"agent-tests-key-hash-secret-0123456789"
    assert (doc["poll_s"], doc["heartbeat_s"], doc["ingest_batch_s"]) == (30, 60, 10)
    assert doc["token"] is None
    assert r["Cache-Control"] == "no-store"


def test_it_never_hands_out_secret_key_as_the_hash_secret(agent_a, settings):
    settings.KEY_HASH_SECRET = settings.SECRET_KEY
    r = agent_a.config()
    assert r.status_code == 503 and r.json()["code"] == "hash_secret_shared"
    assert settings.SECRET_KEY not in r.content.decode()


def _state(doc_or_snap):
    """What an agent serves: keys and orgs, compared as plain JSON."""
    from gateway.dataplane.snapshot import snapshot_to_dict

    data = snapshot_to_dict(doc_or_snap)
    data.pop("built_at")
    return json.loads(json.dumps(data, sort_keys=True))


def test_a_delta_brings_the_agent_to_the_full_documents_state(agent_a, org_a, org_b, acme_setup):
    key, other = acme_setup
    first = agent_a.config().json()
    secret = base64.b64decode(first["hash_secret"])
    snap = snapshot_from_dict(first["snapshot"], secret)
    # Changes of every kind, for this org and the other one.
    policy_set(actor=SETUP, org=org_a, denied_models=["gpt-3.5"])
    gw.api_key_revoke(actor=SETUP, key=key)
    new_key, _ = gw.api_key_create(actor=SETUP, org=org_a, name="second")
    gw.api_key_create(actor=SETUP, org=org_b, name="globex-second")
    policy_set(actor=SETUP, org=org_b, denied_models=["x"])
    r = agent_a.config(since=first["version"])
    doc = r.json()
    assert doc["full"] is False and doc["delta"]["from"] == first["version"]
    assert str(org_b.id) not in doc["delta"]["orgs"]
    assert {k["org_id"] for k in doc["delta"]["keys"].values()} <= {org_a.id}
    applied = apply_delta(snap, delta_from_dict(doc["delta"]))
    full = snapshot_from_dict(agent_a.config().json()["snapshot"], secret)
    assert _state(applied) == _state(full)
    assert any(k["id"] == new_key.id for k in doc["delta"]["keys"].values())


@pytest.mark.parametrize("since", ["abc", "-1", "1.5", "99999999999", ""])
def test_a_since_that_cannot_be_applied_gets_the_full_document(agent_a, since):
    doc = agent_a.config(since=since).json()
    assert doc["full"] is True and "snapshot" in doc


def test_an_unchanged_config_costs_a_304(agent_a, org_a, acme_setup):
    r = agent_a.config()
    etag = r["ETag"]
    again = agent_a.config(**{"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again["ETag"] == etag
    policy_set(actor=SETUP, org=org_a, denied_models=["gpt-3.5"])
    changed = agent_a.config(**{"If-None-Match": etag})
    assert changed.status_code == 200 and changed["ETag"] != etag


def test_the_etag_moves_with_the_orgs_spend(agent_a, org_a, acme_setup):
    import time
    import uuid

    key, _ = acme_setup
    etag = agent_a.config()["ETag"]
    record = {
        "id": str(uuid.uuid4()),
        "key_id": key.id,
        "model_requested": "chat",
        "status": "success",
        "cost": 1.5,
        "created_at": time.time(),
    }
    assert agent_a.ingest([record]).status_code == 200
    r = agent_a.config(**{"If-None-Match": etag})
    assert r.status_code == 200 and r.json()["facts"]["spent_this_month"] == 1.5


def test_the_keys_endpoint_lists_the_orgs_live_keys_only(agent_a, org_a, acme_setup):
    key, other = acme_setup
    revoked, _ = gw.api_key_create(actor=SETUP, org=org_a, name="old")
    gw.api_key_revoke(actor=SETUP, key=revoked)
    doc = agent_a.keys().json()
    assert {k["id"] for k in doc["keys"].values()} == {key.id}
    assert doc["keys"][key.key_hash]["org_id"] == org_a.id


def test_the_openapi_docs_are_served_without_inline_script(client):
    r = client.get("/api/agent/docs")
    assert r.status_code == 200
    html = r.content.decode()
    assert "cdn" not in html.lower()
    schema = client.get("/api/agent/openapi.json").json()
    assert {
        "/api/agent/config",
        "/api/agent/ingest",
        "/api/agent/heartbeat",
        "/api/agent/keys",
    } <= set(schema["paths"])


def test_an_async_client_gets_the_same_answers(token_a, org_a):
    # The views are async; through the ASGI handler too.
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    agent = AgentClient(token_a)
    r = async_to_sync(AsyncClient().get)("/api/agent/config", headers=agent.headers())
    assert r.status_code == 200 and r.json()["org"]["id"] == org_a.id


@pytest.mark.parametrize("since", ["%C2%B2", "%D9%A5", "-1", "1e3", "9" * 30])
def test_a_since_that_is_not_a_plain_version_gets_the_full_document(agent_a, since):
    r = agent_a.config(since=since)
    assert r.status_code == 200 and r.json()["full"] is True
