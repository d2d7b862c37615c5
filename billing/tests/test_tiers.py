"""The tiers: one list (orgs.models.Tier) and one table of what each includes
(orgs.TierLimit), the per-key RPM ceiling included (it was a constant in the gateway)."""

import pytest
from django.core.exceptions import ValidationError

from bonito.tests.admin_forms import form_data
from core.config_version import current_version
from gateway import services as gateway_services
from gateway.snapshot_builder import build_snapshot
from orgs import services as org_services
from orgs.audit import Actor
from orgs.models import AuditLog, Organization, Tier, TierLimit

pytestmark = pytest.mark.django_db
ACTOR = Actor(via="test")


def test_one_list_of_tiers_and_a_row_for_each():
    assert Organization._meta.get_field("tier").choices == Tier.choices
    assert TierLimit._meta.get_field("tier").choices == Tier.choices
    assert sorted(TierLimit.objects.values_list("tier", flat=True)) == sorted(Tier.values)


def test_the_migrated_key_ceilings_are_the_ones_the_gateway_had():
    # proxy.TIER_KEY_RPM was {"free": 30, "pro": 300, "enterprise": None}.
    assert dict(TierLimit.objects.values_list("tier", "key_rpm")) == {
        "free": 30,
        "pro": 300,
        "enterprise": None,
    }


@pytest.mark.parametrize("tier", Tier.values)
def test_each_org_gets_its_tiers_key_ceiling_in_the_snapshot_and_at_save(tier):
    org = org_services.org_create(actor=ACTOR, name="T", slug="t", tier=tier)
    ceiling = TierLimit.objects.get(tier=tier).key_rpm
    assert build_snapshot().orgs[org.id].tier_key_rpm == ceiling
    rpm = gateway_services.key_limit_ceilings(org)["rpm"]
    assert (rpm[0] if rpm else None) == ceiling
    if ceiling is not None:
        with pytest.raises(ValidationError, match=f"at most {ceiling} requests per minute"):
            gateway_services.api_key_create(actor=ACTOR, org=org, name="k", rpm_limit=ceiling + 1)
    gateway_services.api_key_create(actor=ACTOR, org=org, name="k", rpm_limit=ceiling or 10**6)


def test_a_changed_ceiling_is_audited_and_reaches_the_snapshot_and_the_key_checks(org_b):
    version = current_version()
    limit = TierLimit.objects.get(tier="free")
    org_services.tier_limit_set(
        actor=ACTOR,
        tier="free",
        monthly_requests=limit.monthly_requests,
        monthly_spend_cap_usd=limit.monthly_spend_cap_usd,
        key_rpm=12,
    )
    row = AuditLog.objects.get(action="tier_limit.update")
    assert (row.changes["before"]["key_rpm"], row.changes["after"]["key_rpm"]) == (30, 12)
    assert current_version() > version
    assert build_snapshot().orgs[org_b.id].tier_key_rpm == 12
    with pytest.raises(ValidationError, match="at most 12 requests per minute per key on the Free"):
        gateway_services.gateway_config_set(actor=ACTOR, org=org_b, default_key_rpm=13)


@pytest.mark.parametrize("value", [0, -1])
def test_a_ceiling_below_1_is_refused(value):
    with pytest.raises(ValidationError, match="key_rpm"):
        org_services.tier_limit_set(
            actor=ACTOR,
            tier="pro",
            monthly_requests=None,
            monthly_spend_cap_usd=None,
            key_rpm=value,
        )
    assert TierLimit.objects.get(tier="pro").key_rpm == 300


def test_platform_admins_set_the_ceiling_in_the_admin(admin_client, org_b):
    limit = TierLimit.objects.get(tier="free")
    url = f"/admin/orgs/tierlimit/{limit.pk}/change/"
    response = admin_client.post(url, form_data(admin_client.get(url), key_rpm=""))
    assert response.status_code == 302
    assert TierLimit.objects.get(tier="free").key_rpm is None  # empty: no ceiling
    assert build_snapshot().orgs[org_b.id].tier_key_rpm is None
    row = AuditLog.objects.get(action="tier_limit.update", via="admin")
    assert (row.changes["before"]["key_rpm"], row.changes["after"]["key_rpm"]) == (30, None)
