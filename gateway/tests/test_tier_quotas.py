"""What an org may hold, by tier (orgs.TierLimit max_keys, max_providers, max_deployments):
every key and deployment sits in every gateway's memory, so no org grows them without
bound. Refused with one message on every way in (services, REST, dashboard, apply_config)."""

import threading

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import close_old_connections
from django.urls import reverse

from gateway import services
from gateway.models import ApiKey, Deployment, ProviderConnection
from gateway.tests.conftest import ACTOR
from orgs import services as org_services
from orgs.models import TierLimit


def _set(tier, **quotas):
    limit = TierLimit.objects.get(tier=tier)
    org_services.tier_limit_set(
        actor=ACTOR,
        tier=tier,
        monthly_requests=limit.monthly_requests,
        monthly_spend_cap_usd=limit.monthly_spend_cap_usd,
        key_rpm=limit.key_rpm,
        **quotas,
    )


@pytest.mark.django_db
def test_the_free_tier_connects_three_providers(org_b, charlie_client):
    for i in range(3):
        services.provider_save(actor=ACTOR, org=org_b, name=f"p{i}", kind="mock")
    with pytest.raises(ValidationError, match="Free tier includes at most 3 provider connections"):
        services.provider_save(actor=ACTOR, org=org_b, name="p3", kind="mock")
    # Changing one it has is not adding one.
    services.provider_save(actor=ACTOR, org=org_b, name="p0", kind="mock", is_active=False)
    answer = charlie_client.post(
        "/api/gateway/providers?org=globex",
        {"name": "p4", "kind": "mock"},
        content_type="application/json",
    )
    assert answer.status_code == 400 and "at most 3" in str(answer.json())
    page = charlie_client.post(
        reverse("providers", args=["globex"]), {"name": "p5", "kind": "mock"}, follow=True
    )
    assert "at most 3 provider connections" in page.content.decode()
    assert ProviderConnection.objects.filter(org=org_b).count() == 3


@pytest.mark.django_db
def test_active_keys_are_limited_and_a_revoked_one_frees_its_place(org_a, alice_client):
    _set("pro", max_keys=2)
    first, _ = services.api_key_create(actor=ACTOR, org=org_a, name="one")
    services.api_key_create(actor=ACTOR, org=org_a, name="two")
    answer = alice_client.post(
        "/api/gateway/keys", {"name": "three"}, content_type="application/json"
    )
    assert answer.status_code == 400
    assert "Pro tier includes at most 2 active API keys" in str(answer.json())
    services.api_key_revoke(actor=ACTOR, key=first)
    answer = alice_client.post(
        "/api/gateway/keys", {"name": "three"}, content_type="application/json"
    )
    assert answer.status_code == 201
    assert ApiKey.objects.filter(org=org_a).active().count() == 2


@pytest.mark.django_db
def test_deployments_are_limited_in_apply_config_too(org_a, tmp_path):
    _set("pro", max_deployments=1)
    provider = services.provider_save(actor=ACTOR, org=org_a, name="mock", kind="mock")
    services.deployment_save(
        actor=ACTOR, org=org_a, model_name="a", provider=provider, upstream_model="m"
    )
    # The same deployment again is an update, not one more.
    services.deployment_save(
        actor=ACTOR, org=org_a, model_name="a", provider=provider, upstream_model="m", weight=2
    )
    config = tmp_path / "c.yaml"
    config.write_text(
        "orgs:\n"
        "  - slug: acme\n"
        "    name: Acme Corp\n"
        "    deployments:\n"
        "      - {model: b, provider: mock, upstream_model: m}\n"
    )
    with pytest.raises(CommandError, match="at most 1 deployments"):
        call_command("apply_config", str(config))
    assert list(Deployment.objects.filter(org=org_a).values_list("model_name", flat=True)) == ["a"]


@pytest.mark.django_db
def test_a_tier_s_quotas_are_kept_unless_set_and_empty_means_unlimited(org_b):
    _set("free", max_providers=None)
    for i in range(5):
        services.provider_save(actor=ACTOR, org=org_b, name=f"p{i}", kind="mock")
    _set("free")  # (the other fields only)
    assert TierLimit.objects.get(tier="free").max_providers is None
    assert TierLimit.objects.get(tier="free").max_keys == 100  # as the migration set it


@pytest.mark.django_db(transaction=True)
def test_two_requests_at_once_cannot_both_take_the_last_place(org_a):
    _set("pro", max_keys=1)
    barrier, made, refused = threading.Barrier(4), [], []

    def create(i):
        try:
            barrier.wait()
            services.api_key_create(actor=ACTOR, org=org_a, name=f"k{i}")
            made.append(i)
        except ValidationError:
            refused.append(i)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=create, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert (len(made), len(refused)) == (1, 3)
    assert ApiKey.objects.filter(org=org_a).count() == 1
