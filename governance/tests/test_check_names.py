"""manage.py check_names: names saved before the names rule (a bidi override, a zero-width
space, a control character) keep them; the command lists each one the rule now refuses,
with its model, id, field and escaped value, and with --fix rewrites it to its safe form
(each refused character written as its escape), audited like any admin change
(docs/security.md, "Names")."""

import io
import json

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import models

from core.config_version import current_version
from core.names import KEYWORDS, LIST, NAME_FIELDS, NOT_NAMES, TEXT
from core.text import name_error
from gateway import services
from gateway.models import GatewayConfig
from gateway.tests.conftest import ACTOR
from governance import services as governance_services
from orgs import services as org_services
from orgs.models import AuditLog

pytestmark = pytest.mark.django_db
BAD = "ops\u202eprod"  # shows as "opsdorp"
SAFE = "ops\\u202eprod"


@pytest.fixture
def old_names(org_a, alice):
    """One row of every model with a name field, then every name field set (as saved
    before the rule, past the services) to a name the rule refuses."""
    provider = services.provider_create(actor=ACTOR, org=org_a, name="p", kind="mock")
    for model in ("small", "big"):
        services.deployment_create(
            actor=ACTOR, org=org_a, model_name=model, provider=provider, upstream_model="m"
        )
    org_services.team_create(actor=ACTOR, org=org_a, name="Platform")
    org_services.pat_create(actor=ACTOR, user=alice, org=org_a, name="cli")
    services.api_key_create(actor=ACTOR, org=org_a, name="backend")
    services.gateway_config_set(actor=ACTOR, org=org_a, smart_tiers=["small", "big"])
    governance_services.policy_set(actor=ACTOR, org=org_a, denied_models=["big"])
    governance_services.routing_policy_create(
        actor=ACTOR, org=org_a, name="tiers", strategy="smart", models=["small", "big"]
    )
    expected = set()
    for spec in NAME_FIELDS:
        model = spec.model_class
        obj = model.objects.order_by("pk").first()
        assert obj is not None, spec
        value = {
            TEXT: BAD,
            LIST: ["small", BAD],
            KEYWORDS: {"keywords": {"code": ["kube", BAD]}},
        }[spec.kind]
        model.objects.filter(pk=obj.pk).update(**{spec.field: value})
        where = {TEXT: spec.field, LIST: f"{spec.field}[1]"}.get(
            spec.kind, f"{spec.field}.keywords.code[1]"
        )
        expected.add((spec.model, str(obj.pk), where))
    return expected


def _run(*args) -> str:
    out = io.StringIO()
    call_command("check_names", *args, stdout=out, stderr=out)
    return out.getvalue()


def _listed(output: str) -> set:
    lines = [line for line in output.splitlines() if " U+202E " in line]
    return {tuple(line.split(" ")[:3]) for line in lines}


def _stored_values():
    for spec in NAME_FIELDS:
        for value in spec.model_class.objects.values_list(spec.field, flat=True):
            if spec.kind == TEXT:
                yield value
            elif spec.kind == LIST:
                yield from value
            else:
                for words in (value or {}).get("keywords", {}).values():
                    yield from words


def test_it_lists_every_refused_name_escaped_and_changes_nothing(old_names):
    audit_rows = AuditLog.objects.count()
    output = _run()
    assert _listed(output) == old_names
    assert f"'{SAFE}': U+202E (RIGHT-TO-LEFT OVERRIDE)" in output
    assert BAD not in output  # shown escaped, never drawn
    assert "Run with --fix" in output
    assert BAD in set(_stored_values())
    assert AuditLog.objects.count() == audit_rows


def test_fix_rewrites_each_to_its_safe_form_audited(old_names, org_a):
    version = current_version()
    output = _run("--fix")
    assert _listed(output) == old_names
    assert f"{len(old_names)} rewritten" in output
    values = list(_stored_values())
    assert BAD not in values and SAFE in values
    assert not [v for v in values if name_error(v.strip())]
    # The lists keep their other names, the spec its other settings.
    config = GatewayConfig.objects.get(org=org_a)
    assert config.smart_tiers == ["small", SAFE]
    assert config.smart["keywords"] == {"code": ["kube", SAFE]}
    rows = AuditLog.objects.filter(via="cli")
    # One row per field rewritten, of each object.
    fields = {(m, pk, where.split("[")[0].split(".")[0]) for m, pk, where in old_names}
    assert rows.count() == len(fields)
    assert all(r.action.endswith(".update") for r in rows)
    renamed = rows.get(action="api_key.update", changes__after__name=SAFE)
    assert renamed.changes["before"] == {"name": BAD}
    assert current_version() > version  # the gateways reload the names
    assert "Every stored name follows the names rule." in _run()


def test_nothing_to_report():
    assert "Every stored name follows the names rule." in _run()


NAME_LIKE = ("name", "names", "description", "alias", "tiers", "hostname")


def _name_like(field) -> bool:
    return (
        isinstance(field, models.CharField | models.JSONField)
        and not field.choices
        and (
            field.name.endswith(NAME_LIKE)
            or field.name.startswith(("allowed_", "denied_", "model", "fallback_", "enabled_"))
            or field.name in ("smart", "region")
        )
    )


def test_every_field_that_looks_like_a_name_is_registered():
    """A new name field goes into core.names.NAME_FIELDS (or NOT_NAMES, saying why not)."""
    registered = {f"{spec.model}.{spec.field}" for spec in NAME_FIELDS}
    assert not registered & NOT_NAMES
    fields = {f"{m._meta.label}.{f.name}" for m in apps.get_models() for f in m._meta.fields}
    assert registered | NOT_NAMES <= fields  # no stale entry
    missing = []
    for model in apps.get_models():
        if model._meta.app_label not in ("orgs", "gateway", "governance", "billing", "agents"):
            continue
        for field in model._meta.concrete_fields:
            label = f"{model._meta.label}.{field.name}"
            if _name_like(field) and label not in registered | NOT_NAMES:
                missing.append(label)
    assert not missing, json.dumps(missing)
