"""Keys, providers, deployments and gateway settings edited in the admin: each write goes
through gateway.services, is audited as the platform admin and bumps the config version."""

import pytest

from bonito.tests.admin_forms import form_data
from core.config_version import current_version
from gateway import services
from gateway.models import ApiKey, Deployment, GatewayConfig, ProviderConnection
from gateway.snapshot_builder import build_snapshot
from orgs.audit import Actor
from orgs.models import AuditLog

pytestmark = pytest.mark.django_db
SETUP = Actor(via="test-setup")


@pytest.fixture
def provider(org_a):
    return services.provider_save(
        actor=SETUP,
        org=org_a,
        name="oai",
        kind="openai_compatible",
        api_base="https://llm.example.com/v1",
        credentials={"api_key": "sk-admin-must-keep-this"},
    )


@pytest.fixture
def deployment(org_a, provider):
    return services.deployment_save(
        actor=SETUP, org=org_a, model_name="chat", provider=provider, upstream_model="m-1"
    )


def _change(client, url, **changes):
    return client.post(url, form_data(client.get(url), **changes))


def _audited(action):
    row = AuditLog.objects.filter(via="admin").get(action=action)
    assert (row.actor_label, row.via) == ("root@bonito.test", "admin")
    return row


def test_keys_are_revoked_not_edited_or_deleted_in_the_admin(admin_client, org_a):
    key, _raw = services.api_key_create(actor=SETUP, org=org_a, name="k")
    url = f"/admin/gateway/apikey/{key.pk}/"
    assert admin_client.post(url + "delete/", {"post": "yes"}).status_code == 403
    assert admin_client.post(url + "change/", {"name": "renamed"}).status_code == 403
    bulk = admin_client.post(
        "/admin/gateway/apikey/",
        {"action": "delete_selected", "_selected_action": [key.pk], "post": "yes"},
    )
    assert ApiKey.objects.get(pk=key.pk).name == "k"  # still there, unchanged
    assert bulk.status_code in (200, 302)
    version = current_version()
    admin_client.post("/admin/gateway/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
    _audited("api_key.revoke")
    assert current_version() > version


def test_switching_a_provider_off_in_the_admin_is_audited_and_keeps_its_credentials(
    admin_client, org_a, provider, deployment
):
    version = current_version()
    response = _change(
        admin_client, f"/admin/gateway/providerconnection/{provider.pk}/change/", is_active=""
    )
    assert response.status_code == 302
    stored = ProviderConnection.objects.get(pk=provider.pk)
    assert stored.is_active is False
    assert stored.get_credentials() == {"api_key": "sk-admin-must-keep-this"}
    row = _audited("provider.update")
    assert row.changes["after"]["is_active"] is False
    assert current_version() > version
    assert build_snapshot().orgs[org_a.id].deployments == {}


def test_deleting_a_provider_in_the_admin_is_audited(admin_client, provider):
    response = admin_client.post(
        f"/admin/gateway/providerconnection/{provider.pk}/delete/", {"post": "yes"}
    )
    assert response.status_code == 302
    assert not ProviderConnection.objects.exists()
    _audited("provider.delete")


def test_a_deployment_change_in_the_admin_is_audited(admin_client, org_a, deployment):
    version = current_version()
    response = _change(
        admin_client, f"/admin/gateway/deployment/{deployment.pk}/change/", weight="7"
    )
    assert response.status_code == 302
    assert Deployment.objects.get(pk=deployment.pk).weight == 7
    row = _audited("deployment.update")
    assert (row.changes["before"]["weight"], row.changes["after"]["weight"]) == (1, 7)
    assert current_version() > version
    assert build_snapshot().orgs[org_a.id].deployments["chat"][0].weight == 7


def test_an_admin_change_keeps_a_deployment_s_timeout_and_can_set_it(
    admin_client, org_a, deployment
):
    Deployment.objects.filter(pk=deployment.pk).update(timeout_s=9)
    url = f"/admin/gateway/deployment/{deployment.pk}/change/"
    assert _change(admin_client, url, weight="7").status_code == 302
    assert Deployment.objects.get(pk=deployment.pk).timeout_s == 9  # not cleared
    assert _change(admin_client, url, timeout_s="4").status_code == 302
    assert Deployment.objects.get(pk=deployment.pk).timeout_s == 4
    assert build_snapshot().orgs[org_a.id].deployments["chat"][0].timeout_s == 4


def test_deleting_deployments_in_the_admin_is_audited_bulk_too(admin_client, org_a, deployment):
    second = services.deployment_save(
        actor=SETUP,
        org=org_a,
        model_name="chat",
        provider=deployment.provider,
        upstream_model="m-2",
    )
    response = admin_client.post(
        "/admin/gateway/deployment/",
        {
            "action": "delete_selected",
            "_selected_action": [deployment.pk, second.pk],
            "post": "yes",
        },
    )
    assert response.status_code == 302
    assert not Deployment.objects.exists()
    assert AuditLog.objects.filter(action="deployment.delete", via="admin").count() == 2


def test_gateway_settings_changed_in_the_admin_are_audited(admin_client, org_a):
    config = services.gateway_config_set(actor=SETUP, org=org_a, org_rpm_limit=100)
    version = current_version()
    response = _change(
        admin_client, f"/admin/gateway/gatewayconfig/{config.pk}/change/", org_rpm_limit="5"
    )
    assert response.status_code == 302
    assert GatewayConfig.objects.get(pk=config.pk).org_rpm_limit == 5
    _audited("gateway_config.update")
    assert current_version() > version
    delete = admin_client.post(f"/admin/gateway/gatewayconfig/{config.pk}/delete/", {"post": "yes"})
    assert delete.status_code == 403


def test_the_model_catalog_is_read_only_in_the_admin(admin_client):
    from gateway.models import ModelCatalogEntry

    entry = ModelCatalogEntry.objects.create(name="some-model")
    url = f"/admin/gateway/modelcatalogentry/{entry.pk}/"
    assert admin_client.post(url + "delete/", {"post": "yes"}).status_code == 403
    assert admin_client.post(url + "change/", {"name": "x"}).status_code == 403
    assert ModelCatalogEntry.objects.get(pk=entry.pk).name == "some-model"
