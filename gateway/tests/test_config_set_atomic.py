"""gateway_config_set is one transaction: a change whose audit row cannot be written is not
kept (its @transaction.atomic sat on the helper above it, so the settings were saved, and
published, without their audit row)."""

import pytest

from gateway import services
from gateway.models import GatewayConfig
from gateway.tests.conftest import ACTOR

pytestmark = pytest.mark.django_db(transaction=True)


class AuditDown(Exception):
    pass


def test_a_change_whose_audit_fails_is_not_kept(org_a, monkeypatch):
    services.gateway_config_set(actor=ACTOR, org=org_a, fallback_models=["a"])

    def audit_fails(**_kwargs):  # the audit write failing, as a database error would
        raise AuditDown

    monkeypatch.setattr(services, "record_config_change", audit_fails)
    with pytest.raises(AuditDown):
        services.gateway_config_set(actor=ACTOR, org=org_a, fallback_models=["b"])
    assert GatewayConfig.objects.get(org=org_a).fallback_models == ["a"]
