"""The org's deployment mode and vpc_only in config files: `bonito config export` writes
them, and the file applies back (REST and `apply_config`) with the dashboard's rules and
audit rows: leaving VPC mode revokes the org tokens, vpc_only needs VPC mode."""

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from agents.models import OrgToken
from orgs.models import AuditLog, Organization, Team
from orgs.services import org_vpc_only_set, team_create

from .conftest import SETUP

JSON = "application/json"


def _export(client) -> str:
    response = client.get("/api/gateway/config/export")
    assert response.status_code == 200
    return response.json()["yaml"]


def _apply(client, text, dry_run=False):
    return client.post(
        "/api/gateway/config/apply", {"yaml": text, "dry_run": dry_run}, content_type=JSON
    )


def _org(org):
    return Organization.objects.get(pk=org.pk)


def _actions(org, since):
    return [r.action for r in AuditLog.objects.filter(org=org, id__gt=since).order_by("id")]


def _last_audit_id():
    return AuditLog.objects.order_by("-id").values_list("id", flat=True).first() or 0


def test_export_writes_every_org_setting_the_api_applies(alice_client, org_a, token_a):
    org_vpc_only_set(actor=SETUP, org=org_a, vpc_only=True)
    team_create(actor=SETUP, org=org_a, name="Research", description="R&D")
    [spec] = yaml.safe_load(_export(alice_client))["orgs"]
    assert spec["deployment_mode"] == "vpc" and spec["vpc_only"] is True
    assert spec["teams"] == [{"name": "Research", "description": "R&D"}]


def test_an_exported_file_applies_back_with_no_change(alice_client, org_a, token_a, tmp_path):
    org_vpc_only_set(actor=SETUP, org=org_a, vpc_only=True)
    text = _export(alice_client)
    assert _apply(alice_client, text, dry_run=True).json() == {"applied": False, "changes": []}
    before = _last_audit_id()
    path = tmp_path / "acme.yaml"
    path.write_text(text)
    call_command("apply_config", str(path))
    assert _actions(org_a, before) == []
    assert OrgToken.objects.for_org(org_a).usable().count() == 1  # the token is untouched


def test_the_round_trip_restores_mode_and_vpc_only_over_rest(alice_client, org_a, token_a):
    org = _org(org_a)
    assert org.deployment_mode == "vpc"
    vpc_file = _export(alice_client)

    # Back to the shared gateway with the file: the tokens are revoked, as the dashboard's
    # switch does, and each change has its audit row.
    before = _last_audit_id()
    shared_file = vpc_file.replace("deployment_mode: vpc", "deployment_mode: shared")
    response = _apply(alice_client, shared_file)
    assert response.status_code == 200, response.json()
    assert _org(org_a).deployment_mode == "shared"
    assert not OrgToken.objects.for_org(org_a).usable().exists()
    assert _actions(org_a, before) == ["agent_token.revoke", "org.update"]

    # And the VPC file again: VPC mode, keys only through agents; a new token is rotated in
    # (`bonito agent token rotate`), the revoked one stays revoked.
    before = _last_audit_id()
    response = _apply(alice_client, vpc_file.replace("vpc_only: false", "vpc_only: true"))
    assert response.status_code == 200, response.json()
    org = _org(org_a)
    assert (org.deployment_mode, org.vpc_only) == ("vpc", True)
    assert not OrgToken.objects.for_org(org_a).usable().exists()
    assert _actions(org_a, before) == ["org.update", "org.vpc_only"]
    [spec] = yaml.safe_load(_export(alice_client))["orgs"]
    assert (spec["deployment_mode"], spec["vpc_only"]) == ("vpc", True)


@pytest.mark.parametrize(
    "text, message",
    [
        ("deployment_mode: cloud\n", "deployment_mode"),
        ("vpc_only: 'yes'\n", "vpc_only: must be true or false"),
        ("deployment_mode: shared\nvpc_only: true\n", "VPC mode"),
    ],
)
def test_bad_values_are_refused_and_nothing_changes(alice_client, org_a, token_a, text, message):
    before = _last_audit_id()
    response = _apply(alice_client, text)
    assert response.status_code == 400
    assert message in response.json()["yaml"][0]
    org = _org(org_a)
    assert (org.deployment_mode, org.vpc_only) == ("vpc", False)
    assert _actions(org_a, before) == []


def test_members_and_outsiders_cannot_change_them(bob_client, charlie_client, org_a, token_a):
    assert _apply(bob_client, "deployment_mode: shared\n").status_code == 403
    refused = _apply(charlie_client, "orgs:\n- {slug: acme, deployment_mode: shared}\n")
    assert refused.status_code == 400 and "globex" in refused.json()["yaml"][0]
    assert _org(org_a).deployment_mode == "vpc"
    assert OrgToken.objects.for_org(org_a).usable().count() == 1


def test_the_command_follows_the_same_rules(org_a, token_a, tmp_path):
    path = tmp_path / "acme.yaml"
    path.write_text("orgs:\n- {slug: acme, deployment_mode: shared, vpc_only: true}\n")
    with pytest.raises(CommandError, match="VPC mode"):
        call_command("apply_config", str(path))
    path.write_text("orgs:\n- {slug: acme, deployment_mode: shared}\n")
    call_command("apply_config", str(path))
    assert _org(org_a).deployment_mode == "shared"
    assert not OrgToken.objects.for_org(org_a).usable().exists()
    assert Team.objects.for_org(org_a).count() == 0
