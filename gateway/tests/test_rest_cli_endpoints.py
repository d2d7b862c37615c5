"""The REST endpoints the bonito CLI needs: who am I, key rotation, provider test, budgets,
and the config file over the API (dry-run diff, export that applies back unchanged)."""

from decimal import Decimal

import pytest

from billing.models import Budget
from gateway import services
from gateway.models import ApiKey, Deployment
from gateway.tests.conftest import ACTOR, org_models
from orgs import services as org_services
from orgs.models import AuditLog

pytestmark = pytest.mark.django_db
JSON = "application/json"


@pytest.fixture
def mock_provider(org_a):
    provider = services.provider_save(actor=ACTOR, org=org_a, name="mock", kind="mock")
    services.deployment_save(
        actor=ACTOR,
        org=org_a,
        model_name="chat",
        provider=provider,
        upstream_model="mock-chat",
        input_price_per_mtok=Decimal("0.15"),
    )
    return provider


def test_me_names_the_tokens_org_and_role(client, org_a, bob):
    _token, raw = org_services.pat_create(actor=ACTOR, user=bob, org=org_a, name="cli")
    body = client.get("/api/me", HTTP_AUTHORIZATION=f"Bearer {raw}").json()
    assert body == {
        "email": bob.email,
        "name": bob.name,
        "org": {"slug": org_a.slug, "name": org_a.name},
        "role": "member",
        "auth": "token",
    }
    assert client.get("/api/me", HTTP_AUTHORIZATION="Bearer pat-nope").status_code == 401


def test_it_rotates_a_key_keeping_its_settings(bob_client, alice_client, org_a, bob):
    org_models(org_a, "chat")
    created = bob_client.post(
        "/api/gateway/keys",
        {"name": "ci", "allowed_models": ["chat"], "rpm_limit": 7},
        content_type=JSON,
    ).json()
    response = bob_client.post(f"/api/gateway/keys/{created['id']}/rotate")
    assert response.status_code == 200
    new = response.json()
    # the same key with a new secret; with no grace period the old secret stops at once
    key = ApiKey.objects.get(pk=created["id"])
    assert new["id"] == key.id and key.matches(new["api_key"]) and key.revoked_at is None
    assert not key.matches(created["api_key"]) and not key.previous_valid()
    assert (key.name, key.allowed_models, key.rpm_limit) == ("ci", ["chat"], 7)
    actions = set(AuditLog.objects.filter(org=org_a).values_list("action", flat=True))
    assert {"api_key.create", "api_key.rotate"} <= actions
    # a revoked key is not rotated; an admin's key is not a member's to rotate
    bob_client.delete(f"/api/gateway/keys/{created['id']}")
    again = bob_client.post(f"/api/gateway/keys/{created['id']}/rotate")
    assert again.status_code == 400 and "revoked" in again.json()["detail"][0]
    admins = alice_client.post("/api/gateway/keys", {"name": "a"}, content_type=JSON).json()
    assert bob_client.post(f"/api/gateway/keys/{admins['id']}/rotate").status_code == 403


def test_outsiders_see_none_of_it(charlie_client, org_a, mock_provider):
    key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="a")
    budget = Budget.objects.create(org=org_a, amount_usd=5)
    assert charlie_client.post(f"/api/gateway/keys/{key.id}/rotate").status_code == 404
    assert charlie_client.post(f"/api/gateway/providers/{mock_provider.id}/test").status_code == 404
    assert charlie_client.get(f"/api/gateway/budgets/{budget.id}").status_code == 404
    assert charlie_client.get("/api/gateway/budgets").json()["count"] == 0
    exported = charlie_client.get("/api/gateway/config/export").json()["yaml"]
    assert "mock" not in exported and org_a.slug not in exported


def test_provider_test_answers_ok_or_why_not(alice_client, org_a, mock_provider):
    body = alice_client.post(f"/api/gateway/providers/{mock_provider.id}/test").json()
    assert body["ok"] is True
    empty = services.provider_save(actor=ACTOR, org=org_a, name="empty", kind="mock")
    body = alice_client.post(f"/api/gateway/providers/{empty.id}/test").json()
    assert body == {"ok": False, "detail": body["detail"]} and "deployment" in body["detail"]


def test_budgets_are_written_through_the_audited_service(alice_client, vera_client, org_a):
    response = alice_client.post(
        "/api/gateway/budgets",
        {"amount_usd": "10.10", "hard": True, "webhook_url": "https://hooks.example.com/s3cret"},
        content_type=JSON,
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["amount_usd"] == "10.10" and body["has_webhook"] is True
    assert "s3cret" not in str(body) and "webhook_url" not in body
    budget = Budget.objects.get(pk=body["id"])
    assert budget.amount_usd == Decimal("10.10") and budget.hard
    changed = alice_client.patch(
        f"/api/gateway/budgets/{budget.id}", {"amount_usd": 20}, content_type=JSON
    ).json()
    assert changed["amount_usd"] == "20.00" and changed["hard"] is True
    assert Budget.objects.get(pk=budget.id).webhook_url.endswith("s3cret")  # kept
    bad = alice_client.post("/api/gateway/budgets", {"amount_usd": "-1"}, content_type=JSON)
    assert bad.status_code == 400 and "negative" in str(bad.json())
    team_less = alice_client.post(
        "/api/gateway/budgets", {"amount_usd": "1", "scope": "team"}, content_type=JSON
    )
    assert team_less.status_code == 400
    denied = vera_client.post("/api/gateway/budgets", {"amount_usd": "1"}, content_type=JSON)
    assert denied.status_code == 403
    assert alice_client.delete(f"/api/gateway/budgets/{budget.id}").status_code == 204
    assert AuditLog.objects.filter(org=org_a, action="budget.delete").exists()


def test_config_export_applies_back_with_no_change(alice_client, org_a, mock_provider):
    exported = alice_client.get("/api/gateway/config/export").json()["yaml"]
    assert "0.15" in exported  # the price, exactly
    response = alice_client.post(
        "/api/gateway/config/apply", {"yaml": exported, "dry_run": True}, content_type=JSON
    )
    assert response.json() == {"applied": False, "changes": []}


def test_config_dry_run_reports_and_keeps_nothing(alice_client, org_a, mock_provider):
    text = "deployments:\n- {model: chat, provider: mock, upstream_model: mock-chat, weight: 4}\n"
    before = AuditLog.objects.count()
    dry = alice_client.post(
        "/api/gateway/config/apply", {"yaml": text, "dry_run": True}, content_type=JSON
    ).json()
    assert dry["applied"] is False
    [change] = dry["changes"]
    assert change["action"] == "deployment.update"
    assert (change["changes"]["before"]["weight"], change["changes"]["after"]["weight"]) == (1, 4)
    assert Deployment.objects.get(model_name="chat").weight == 1
    assert AuditLog.objects.count() == before
    applied = alice_client.post("/api/gateway/config/apply", {"yaml": text}, content_type=JSON)
    assert applied.json()["applied"] is True
    assert Deployment.objects.get(model_name="chat").weight == 4


@pytest.mark.parametrize(
    "text, message",
    [
        ("tier: enterprise\n", "not allowed over the API: tier"),
        ("members: []\n", "not allowed over the API: members"),
        ("orgs:\n- slug: globex\n", "this token is for org"),
        # the sections at the top level, naming another org (they were applied to this one)
        ("slug: globex\nteams: [Ops]\n", "slug: this token is for org 'acme'"),
        ("providers: [\n", "not valid YAML"),
        ("- a list\n", "must be a mapping"),
        ("providers:\n- {name: x, kind: openai, api_key: 'env:SECRET_KEY'}\n", "env: values"),
        ("providers:\n- {name: x, kind: openai, credentials: {api_key: 'env:HOME'}}\n", "env:"),
        ("deployments:\n- {model: x, provider: nope, upstream_model: y}\n", "not defined"),
    ],
)
def test_config_apply_refuses_bad_files_clearly(alice_client, org_a, org_b, text, message):
    response = alice_client.post("/api/gateway/config/apply", {"yaml": text}, content_type=JSON)
    assert response.status_code == 400
    assert message in response.json()["yaml"][0]


def test_config_needs_the_admin_role(bob_client):
    assert bob_client.get("/api/gateway/config/export").status_code == 403
    response = bob_client.post("/api/gateway/config/apply", {"yaml": "{}"}, content_type=JSON)
    assert response.status_code == 403


def test_the_tokens_page_shows_the_cli_login_line(alice_client, org_a):
    response = alice_client.post(
        f"/o/{org_a.slug}/settings/tokens/", {"name": "laptop"}, follow=True
    )
    page = response.content.decode()
    assert "bonito auth login --url http://testserver" in page
    assert "pat-" in page  # the token itself, shown once beside it
