"""The management REST API: roles, other orgs' ids, validation, pagination, query counts."""

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from billing.models import UsageRecord
from gateway import services
from gateway.models import ApiKey, ProviderConnection
from gateway.tests.conftest import ACTOR, org_models
from orgs.models import AuditLog

pytestmark = pytest.mark.django_db


def _usage(org, key=None, n=1, **fields):
    now = timezone.now()
    for i in range(n):
        UsageRecord.objects.create(
            id=uuid.uuid4(),
            org=org,
            key=key,
            model_requested=fields.get("model", "chat-small"),
            model_used=fields.get("model", "chat-small"),
            provider=fields.get("provider", "fake"),
            status=fields.get("status", "success"),
            input_tokens=10,
            output_tokens=5,
            cost=Decimal("0.001"),
            latency_ms=100 + i,
            created_at=now - timedelta(minutes=i),
        )


@pytest.fixture
def alice_key(org_a, alice):
    key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="alice-app")
    return key


def test_keys_list_never_shows_a_raw_key(alice_client, alice_key):
    body = alice_client.get("/api/gateway/keys").json()
    assert body["count"] == 1
    row = body["results"][0]
    assert row["key"] == alice_key.masked and "api_key" not in row
    assert alice_key.key_hash not in str(body)


def test_creating_a_key_shows_it_once(bob_client, org_a):
    org_models(org_a, "chat-small")
    response = bob_client.post(
        "/api/gateway/keys",
        {"name": "ci", "allowed_models": ["chat-small"], "rpm_limit": 10},
        content_type="application/json",
    )
    assert response.status_code == 201
    raw = response.json()["api_key"]
    key = ApiKey.objects.get(name="ci")
    assert raw.startswith("bn-") and key.matches(raw) and key.allowed_models == ["chat-small"]
    assert raw not in str(bob_client.get("/api/gateway/keys").json())
    assert AuditLog.objects.filter(action="api_key.create", actor_label="bob@acme.test").exists()


def test_viewers_cannot_create_keys(vera_client):
    response = vera_client.post("/api/gateway/keys", {"name": "x"}, content_type="application/json")
    assert response.status_code == 403
    assert "member role" in response.json()["detail"]


def test_key_validation_errors_are_clear(bob_client):
    response = bob_client.post(
        "/api/gateway/keys",
        {"name": "x", "rpm_limit": -5, "expires_at": "soon"},
        content_type="application/json",
    )
    assert response.status_code == 400
    body = response.json()
    assert "rpm_limit" in body and "expires_at" in body
    past = (timezone.now() - timedelta(days=1)).isoformat()
    response = bob_client.post(
        "/api/gateway/keys", {"name": "x", "expires_at": past}, content_type="application/json"
    )
    assert response.status_code == 400 and "future" in str(response.json())


def test_delete_revokes(alice_client, alice_key):
    assert alice_client.delete(f"/api/gateway/keys/{alice_key.id}").status_code == 204
    alice_key.refresh_from_db()
    assert alice_key.revoked_at is not None
    assert alice_client.get(f"/api/gateway/keys/{alice_key.id}").json()["status"] == "revoked"


def test_members_revoke_only_their_own_keys(bob_client, alice_key):
    assert bob_client.delete(f"/api/gateway/keys/{alice_key.id}").status_code == 403
    alice_key.refresh_from_db()
    assert alice_key.revoked_at is None


@pytest.mark.parametrize(
    "path",
    [
        "/api/gateway/keys/{key}",
        "/api/gateway/logs/{log}",
        "/api/gateway/providers/{provider}",
        "/api/gateway/members/{member}",
    ],
)
def test_charlie_gets_404_on_alices_ids(charlie_client, alice_key, org_a, alice, path):
    _usage(org_a, alice_key)
    provider = services.provider_save(
        actor=ACTOR, org=org_a, name="oai", kind="openai", credentials={"api_key": "x"}
    )
    ids = {
        "key": alice_key.id,
        "log": UsageRecord.objects.first().id,
        "provider": provider.id,
        "member": alice.memberships.first().id,
    }
    url = path.format(**ids)
    assert charlie_client.get(url).status_code == 404
    assert charlie_client.delete(url).status_code in (
        404,
        405,
    )  # logs are read-only: 405 for everyone
    assert not ApiKey.objects.filter(revoked_at__isnull=False).exists()


def test_charlie_cannot_pick_alices_org(charlie_client, alice_key):
    assert charlie_client.get("/api/gateway/keys?org=acme").status_code == 404
    assert charlie_client.get("/api/gateway/keys", HTTP_X_BONITO_ORG="acme").status_code == 404


def test_logs_filter_paginate_and_detail(alice_client, org_a, alice_key):
    _usage(org_a, alice_key, n=60)
    _usage(org_a, alice_key, n=3, model="embed-small", status="rejected")
    page = alice_client.get("/api/gateway/logs").json()
    assert page["count"] == 63 and len(page["results"]) == 50 and page["next"]
    assert len(alice_client.get(page["next"]).json()["results"]) == 13
    filtered = alice_client.get("/api/gateway/logs?model=embed-small&status=rejected").json()
    assert filtered["count"] == 3
    assert filtered["results"][0]["key_name"] == "alice-app"
    detail = alice_client.get(f"/api/gateway/logs/{filtered['results'][0]['id']}").json()
    assert detail["status"] == "rejected"


@pytest.mark.parametrize(
    "query,field",
    [
        ("since=yesterday", "since"),
        ("status=weird", "status"),
        ("key=abc", "key"),
        ("range=5y", "range"),
        ("ordering=name", "ordering"),
    ],
)
def test_bad_filters_are_explained(alice_client, query, field):
    response = alice_client.get(f"/api/gateway/logs?{query}")
    assert response.status_code == 400
    assert field in response.json()


def test_usage_and_analytics_answer_with_real_numbers(alice_client, org_a, alice_key):
    _usage(org_a, alice_key, n=4)
    _usage(org_a, alice_key, n=1, status="error")
    usage = alice_client.get("/api/gateway/usage").json()
    assert usage["requests"] == 5 and usage["errors"] == 1 and usage["error_rate"] == 0.2
    assert usage["cost_usd"] == pytest.approx(0.005)
    analytics = alice_client.get("/api/gateway/analytics?range=24h")
    assert analytics.status_code == 200  # it was a 404 in the seed product
    body = analytics.json()
    assert body["totals"]["requests"] == 5
    assert body["latency"]["p50_ms"] is not None
    assert body["by_key"][0]["name"] == "alice-app" and body["by_key"][0]["requests"] == 5
    assert sum(b["requests"] for b in body["series"]) == 5


def test_config_read_by_viewers_written_by_admins(alice_client, vera_client):
    assert vera_client.get("/api/gateway/config").json()["default_strategy"] == "failover"
    assert (
        vera_client.put(
            "/api/gateway/config",
            {"default_strategy": "round_robin"},
            content_type="application/json",
        ).status_code
        == 403
    )
    response = alice_client.put(
        "/api/gateway/config",
        {"default_strategy": "cost_optimized", "fallback_models": ["x"]},
        content_type="application/json",
    )
    assert response.status_code == 200 and response.json()["default_strategy"] == "cost_optimized"
    bad = alice_client.put(
        "/api/gateway/config", {"default_strategy": "psychic"}, content_type="application/json"
    )
    assert bad.status_code == 400 and "default_strategy" in bad.json()


def test_policy_put_and_validation(alice_client):
    response = alice_client.put(
        "/api/gateway/policy",
        {"allowed_models": ["a"], "monthly_spend_cap_usd": "25.50"},
        content_type="application/json",
    )
    assert response.status_code == 200 and response.json()["monthly_spend_cap_usd"] == "25.50"
    bad = alice_client.put(
        "/api/gateway/policy", {"allowed_models": "a"}, content_type="application/json"
    )
    assert bad.status_code == 400


def test_provider_credentials_are_write_only(alice_client):
    response = alice_client.post(
        "/api/gateway/providers",
        {"name": "oai", "kind": "openai", "credentials": {"api_key": "sk-write-only-secret"}},
        content_type="application/json",
    )
    assert response.status_code == 201
    assert "sk-write-only-secret" not in response.content.decode()
    assert response.json()["has_credentials"] is True and response.json()["active_deployments"] == 0
    listing = alice_client.get("/api/gateway/providers").content.decode()
    assert "sk-write-only-secret" not in listing and "credentials_encrypted" not in listing
    provider = ProviderConnection.objects.get(name="oai")
    assert provider.get_credentials() == {"api_key": "sk-write-only-secret"}
    dup = alice_client.post(
        "/api/gateway/providers", {"name": "oai", "kind": "openai"}, content_type="application/json"
    )
    assert dup.status_code == 400


def test_deployments_crud(alice_client, org_a):
    services.provider_save(actor=ACTOR, org=org_a, name="oai", kind="openai")
    created = alice_client.post(
        "/api/gateway/deployments",
        {"model_name": "chat", "provider": "oai", "upstream_model": "gpt-4o-mini"},
        content_type="application/json",
    )
    assert created.status_code == 201
    dep_id = created.json()["id"]
    updated = alice_client.patch(
        f"/api/gateway/deployments/{dep_id}", {"weight": 5}, content_type="application/json"
    )
    assert updated.json()["weight"] == 5
    assert (
        alice_client.get("/api/gateway/providers").json()["results"][0]["active_deployments"] == 1
    )
    assert alice_client.delete(f"/api/gateway/deployments/{dep_id}").status_code == 204
    unknown = alice_client.post(
        "/api/gateway/deployments",
        {"model_name": "c", "provider": "nope", "upstream_model": "x"},
        content_type="application/json",
    )
    assert unknown.status_code == 400 and "provider" in unknown.json()


def test_catalog_is_searchable_and_paginated(alice_client):
    body = alice_client.get("/api/gateway/models?search=gpt-4o-mini").json()
    assert body["count"] >= 1 and all("gpt-4o-mini" in m["name"] for m in body["results"])


def test_routing_policies_crud(alice_client):
    created = alice_client.post(
        "/api/gateway/routing-policies",
        {"name": "ha", "strategy": "failover", "models": ["a", "b"]},
        content_type="application/json",
    )
    assert created.status_code == 201 and created.json()["models"] == ["a", "b"]
    bad = alice_client.post(
        "/api/gateway/routing-policies",
        {"name": "x", "models": []},
        content_type="application/json",
    )
    assert bad.status_code == 400


def test_team_members_invitations_and_audit(alice_client, bob, vera_client, org_a):
    team = alice_client.post(
        "/api/gateway/teams", {"name": "Research"}, content_type="application/json"
    ).json()
    members = alice_client.get("/api/gateway/members").json()["results"]
    bob_row = next(m for m in members if m["email"] == "bob@acme.test")
    changed = alice_client.patch(
        f"/api/gateway/members/{bob_row['id']}",
        {"role": "viewer", "team": team["id"]},
        content_type="application/json",
    )
    assert changed.json()["role"] == "viewer" and changed.json()["team"] == team["id"]
    invited = alice_client.post(
        "/api/gateway/invitations",
        {"email": "new@acme.test", "role": "member"},
        content_type="application/json",
    )
    assert invited.status_code == 201 and invited.json()["status"] == "pending"
    assert vera_client.get("/api/gateway/audit").status_code == 403  # the audit log is for admins
    actions = {r["action"] for r in alice_client.get("/api/gateway/audit").json()["results"]}
    assert {"team.create", "membership.update", "invitation.create"} <= actions


def test_personal_access_tokens(alice_client, alice, org_a, org_b, charlie):
    created = alice_client.post("/api/tokens", {"name": "cli"}, content_type="application/json")
    assert created.status_code == 201 and created["Cache-Control"] == "no-store"
    raw = created.json()["access_token"]
    assert raw.startswith("pat-")
    api = Client()
    assert api.get("/api/gateway/keys", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    # The token is tied to Acme: it never reaches another org, even one Alice could join.
    assert (
        api.get("/api/gateway/keys?org=globex", HTTP_AUTHORIZATION=f"Bearer {raw}").json()["count"]
        == 0
    )
    alice_client.delete(f"/api/tokens/{created.json()['id']}")
    assert api.get("/api/gateway/keys", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401
    assert api.get("/api/gateway/keys", HTTP_AUTHORIZATION="Bearer pat-garbage").status_code == 401


def test_each_user_s_api_requests_are_limited_per_minute(alice_client, vera_client, settings):
    """API_REQUESTS_PER_MINUTE per user, a token counting as its user: past it a 429 with
    Retry-After, and other users are not held up."""
    settings.API_REQUESTS_PER_MINUTE = 3
    created = alice_client.post("/api/tokens", {"name": "cli"}, content_type="application/json")
    raw = created.json()["access_token"]  # the 1st of alice's 3
    token = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    answers = [Client().get("/api/gateway/keys", **token) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert int(answers[-1]["Retry-After"]) > 0 and "throttled" in answers[-1].json()["detail"]
    assert alice_client.get("/api/gateway/keys").status_code == 429  # the same user
    assert vera_client.get("/api/gateway/keys").status_code == 200
    settings.API_REQUESTS_PER_MINUTE = 0  # off
    assert alice_client.get("/api/gateway/keys").status_code == 200


def test_the_api_limit_lets_requests_through_while_the_cache_is_down(alice_client, settings):
    from django.core.cache import caches

    from gateway.tests.conftest import free_port

    settings.API_REQUESTS_PER_MINUTE = 1
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": [f"redis://127.0.0.1:{free_port()}/0"],  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 0.5},
        }
    }
    try:
        assert [alice_client.get("/api/gateway/config").status_code for _ in range(3)] == [200] * 3
    finally:
        caches["default"].close()


def test_anonymous_requests_are_refused(client, db):
    assert client.get("/api/gateway/keys").status_code in (401, 403)


def test_a_user_in_several_orgs_must_say_which(alice_client, alice, org_b):
    from orgs import services as org_services

    org_services.membership_add(actor=ACTOR, org=org_b, user=alice, role="viewer")
    fresh = Client()
    fresh.force_login(alice)
    response = fresh.get("/api/gateway/keys")
    assert response.status_code == 400 and "org" in response.json()
    assert fresh.get("/api/gateway/keys?org=globex").status_code == 200


def test_list_endpoints_make_a_fixed_number_of_queries(
    alice_client, org_a, alice_key, django_assert_max_num_queries
):
    for i in range(5):
        services.api_key_create(actor=ACTOR, org=org_a, name=f"k{i}")
    _usage(org_a, alice_key, n=20)
    with django_assert_max_num_queries(8):
        assert alice_client.get("/api/gateway/keys").json()["count"] == 6
    with django_assert_max_num_queries(8):
        assert alice_client.get("/api/gateway/logs").json()["count"] == 20
    with django_assert_max_num_queries(8):
        alice_client.get("/api/gateway/providers")


def test_openapi_schema_and_docs(alice_client):
    schema = alice_client.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/gateway/keys" in schema.content
    docs = alice_client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()
    assert b"cdn" not in docs.content.lower()


def test_explicit_dates_filter_logs(alice_client, org_a, alice_key):
    _usage(org_a, alice_key, n=2)
    today = timezone.now().date()
    since, until = (today - timedelta(days=1)).isoformat(), (today + timedelta(days=1)).isoformat()
    assert alice_client.get(f"/api/gateway/logs?since={since}&until={until}").json()["count"] == 2
    assert (
        alice_client.get(f"/api/gateway/logs?until={since}T00:00:00Z&range=1h").json()["count"] == 0
    )


def test_a_routing_policy_whose_rt_keys_are_all_revoked_can_be_deleted(alice_client, org_a):
    policy = alice_client.post(
        "/api/gateway/routing-policies",
        {"name": "old", "strategy": "failover", "models": ["a"]},
        content_type="application/json",
    ).json()
    key = alice_client.post(
        "/api/gateway/keys",
        {"name": "router", "routing_policy": "old"},
        content_type="application/json",
    ).json()
    url = f"/api/gateway/routing-policies/{policy['id']}"
    assert alice_client.delete(url).status_code == 400  # a live rt- key still uses it
    alice_client.delete(f"/api/gateway/keys/{key['id']}")
    assert alice_client.delete(url).status_code == 204
    assert alice_client.get(url).status_code == 404
    revoked = alice_client.get(f"/api/gateway/keys/{key['id']}").json()
    assert revoked["revoked_at"] and revoked["routing_policy"] is None
