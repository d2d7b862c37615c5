import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from gateway.models import ApiKey
from orgs.models import AuditLog, Membership, Organization, Team, User

pytestmark = pytest.mark.django_db


def _call(*args, **kwargs):
    out = StringIO()
    call_command(*args, stdout=out, **kwargs)
    return out.getvalue()


def test_create_org(db):
    assert "Created organization acme" in _call(
        "create_org", "--slug", "acme", "--name", "Acme", "--tier", "pro"
    )
    assert Organization.objects.get(slug="acme").tier == "pro"
    with pytest.raises(CommandError, match="already exists"):
        _call("create_org", "--slug", "acme", "--name", "Acme again")


def test_create_user_reads_the_password_from_the_environment(monkeypatch, org_a):
    monkeypatch.setenv("BONITO_USER_PASSWORD", "a-long-password-from-env")
    _call("create_user", "--email", "dana@acme.test", "--org", "acme", "--role", "viewer")
    user = User.objects.get(email="dana@acme.test")
    assert user.check_password("a-long-password-from-env")
    assert Membership.objects.get(user=user).role == "viewer"


def test_demo_is_idempotent_and_prints_json(settings):
    first = json.loads(_call("demo", "--json", "--force"))
    user = User.objects.get(email=first["admin_email"])
    password_hash, audit_rows = user.password, AuditLog.objects.count()
    second = json.loads(_call("demo", "--json", "--force"))
    assert set(first) == {
        "org",
        "admin_email",
        "admin_password",
        "api_key",
        "api_key_masked",
        "base_url",
    }
    assert first["org"] == second["org"] == "demo"
    assert first["api_key"].startswith("bn-")
    assert first["base_url"].endswith("/v1")
    # A second run changes nothing: no new key (the first is kept, not shown again), the
    # same password hash (an open browser stays signed in), no audit row.
    assert second["api_key"] is None and second["api_key_masked"] == first["api_key_masked"]
    assert ApiKey.objects.filter(name="demo key").count() == 1
    user.refresh_from_db()
    assert user.password == password_hash
    assert AuditLog.objects.count() == audit_rows
    assert Organization.objects.filter(slug="demo").count() == 1
    assert user.is_staff and user.is_superuser and user.check_password(first["admin_password"])
    assert Membership.objects.get(user=user).role == "admin"
    # The raw key matches its stored hash (raw keys are never stored).
    assert any(k.matches(first["api_key"]) for k in ApiKey.objects.all())
    assert not ApiKey.objects.filter(key_hash=first["api_key"]).exists()


def test_demo_new_key_replaces_the_demo_key(settings):
    first = json.loads(_call("demo", "--json", "--force"))
    text = _call("demo", "--force")
    assert first["api_key"] not in text and first["api_key_masked"] in text and "--new-key" in text
    third = json.loads(_call("demo", "--json", "--force", "--new-key"))
    assert third["api_key"].startswith("bn-") and third["api_key"] != first["api_key"]
    active = ApiKey.objects.active().filter(name="demo key")
    assert [k.matches(third["api_key"]) for k in active] == [True]


def test_demo_restores_a_changed_password_and_lost_staff(settings):
    first = json.loads(_call("demo", "--json", "--force"))
    user = User.objects.get(email=first["admin_email"])
    user.set_password("something-else-entirely")
    user.is_superuser = False
    user.save()
    _call("demo", "--force")
    user.refresh_from_db()
    assert user.check_password(first["admin_password"]) and user.is_superuser


def test_demo_refuses_other_databases_without_force(monkeypatch):
    from django.db import connection

    monkeypatch.setattr(connection, "vendor", "postgresql")
    with pytest.raises(CommandError, match="--force"):
        _call("demo")


CONFIG = """
orgs:
  - slug: acme
    name: Acme Corp
    tier: pro
    teams:
      - Research
      - {name: Support, description: Tier 1}
    members:
      - {email: erin@acme.test, role: admin}
      - {email: finn@acme.test, role: viewer, team: Research}
  - slug: globex
    name: Globex
"""


def test_apply_config_creates_and_is_idempotent(tmp_path):
    path = tmp_path / "bonito.yaml"
    path.write_text(CONFIG)
    _call("apply_config", str(path))
    rows_after_first = AuditLog.objects.count()
    _call("apply_config", str(path))
    acme = Organization.objects.get(slug="acme")
    assert acme.tier == "pro"
    assert set(Team.objects.for_org(acme).values_list("name", flat=True)) == {"Research", "Support"}
    finn = Membership.objects.get(org=acme, user__email="finn@acme.test")
    assert finn.role == "viewer" and finn.team.name == "Research"
    assert Organization.objects.filter(slug="globex").exists()
    assert AuditLog.objects.count() == rows_after_first  # nothing changed the second time


def test_apply_config_updates_roles(tmp_path):
    path = tmp_path / "bonito.yaml"
    path.write_text(CONFIG)
    _call("apply_config", str(path))
    path.write_text(CONFIG.replace("role: viewer", "role: member"))
    _call("apply_config", str(path))
    assert Membership.objects.get(user__email="finn@acme.test").role == "member"


def test_apply_config_is_all_or_nothing(tmp_path):
    path = tmp_path / "bonito.yaml"
    path.write_text(CONFIG.replace("team: Research", "team: Nowhere"))
    with pytest.raises(
        CommandError, match=r"orgs\[0\]\.members\[1\]: team 'Nowhere' is not defined"
    ):
        _call("apply_config", str(path))
    assert not Organization.objects.exists()


@pytest.mark.parametrize(
    "text,message",
    [
        ("orgs: [{name: X}]", "'slug' is required"),
        ("orgs: [{slug: x, name: X, colour: red}]", "unknown key(s) colour"),
        (
            "orgs: [{slug: x, name: X, members: [{email: a@b.test, role: owner}]}]",
            "role must be admin, member or viewer",
        ),
        ("hello: world", "must be a mapping with an 'orgs:' list"),
        ("orgs: [\n  - {", "not valid YAML"),
    ],
)
def test_apply_config_explains_bad_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CommandError) as info:
        _call("apply_config", str(path))
    assert message in str(info.value)
