import pytest
from django.test import Client

from orgs.models import AuditLog, User

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(db):
    user = User.objects.create_superuser(email="root@bonito.test", password="x-long-password-1")
    client = Client()
    client.force_login(user)
    return client


def test_system_page_shows_counts_and_health(admin_client, alice, charlie):
    response = admin_client.get("/admin/system/")
    assert response.status_code == 200
    counts = response.context["counts"]
    assert counts["organizations"] == 2
    assert counts["users"] == 3  # root, alice, charlie
    assert "active API keys" in counts and "requests today" in counts
    assert response.context["services"]["database"]["ok"] is True


def test_organization_list_shows_tier_and_member_count(admin_client, alice, bob):
    response = admin_client.get("/admin/orgs/organization/")
    assert response.status_code == 200
    assert b"Acme Corp" in response.content
    assert response.context["cl"].result_list[0]._members == 2


@pytest.mark.parametrize(
    "path",
    [
        "/admin/orgs/user/",
        "/admin/orgs/membership/",
        "/admin/orgs/team/",
        "/admin/orgs/invitation/",
        "/admin/orgs/auditlog/",
    ],
)
def test_admin_lists_answer(admin_client, alice, path):
    assert admin_client.get(path).status_code == 200


def test_audit_log_is_read_only_in_the_admin(admin_client, alice):
    row = AuditLog.objects.first()
    assert admin_client.get("/admin/orgs/auditlog/add/").status_code == 403
    response = admin_client.post(f"/admin/orgs/auditlog/{row.pk}/change/", {"action": "x"})
    assert response.status_code == 403
    assert (
        admin_client.post(f"/admin/orgs/auditlog/{row.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    row.refresh_from_db()
    assert row.action != "x"


def test_audit_log_is_filterable(admin_client, alice):
    response = admin_client.get("/admin/orgs/auditlog/?action=membership.add")
    assert response.status_code == 200
    assert {r.action for r in response.context["cl"].result_list} == {"membership.add"}


def test_creating_an_org_in_the_admin_is_audited(admin_client):
    response = admin_client.post(
        "/admin/orgs/organization/add/",
        {
            "name": "Initech",
            "slug": "initech",
            "tier": "pro",
            "deployment_mode": "shared",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    row = AuditLog.objects.get(action="org.create", target_repr="Initech")
    assert row.actor_label == "root@bonito.test"


def test_org_members_cannot_open_the_admin(alice_client):
    assert alice_client.get("/admin/").status_code == 302


@pytest.mark.parametrize(
    "path",
    [
        "/admin/gateway/apikey/",
        "/admin/gateway/providerconnection/",
        "/admin/gateway/deployment/",
        "/admin/gateway/modelcatalogentry/",
        "/admin/governance/policy/",
        "/admin/governance/routingpolicy/",
        "/admin/billing/usagerecord/",
    ],
)
def test_gateway_admin_lists_answer(admin_client, path):
    assert admin_client.get(path).status_code == 200


def test_provider_credentials_never_render_in_the_admin(admin_client, org_a):
    from gateway import services
    from orgs.audit import Actor

    provider = services.provider_save(
        actor=Actor(via="test"),
        org=org_a,
        name="oai",
        kind="openai",
        credentials={"api_key": "sk-admin-must-not-see-this"},
    )
    page = admin_client.get(f"/admin/gateway/providerconnection/{provider.pk}/change/").content
    assert b"sk-admin-must-not-see-this" not in page
    assert provider.credentials_encrypted.encode() not in page


def test_revoking_a_key_from_the_admin_is_audited(admin_client, org_a):
    from gateway import services
    from gateway.models import ApiKey
    from orgs.audit import Actor

    key, _raw = services.api_key_create(actor=Actor(via="test"), org=org_a, name="k")
    admin_client.post("/admin/gateway/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
    assert AuditLog.objects.filter(action="api_key.revoke", actor_label="root@bonito.test").exists()
