"""A management command run with other secrets than the server's (an outside check: the
README's command after `make run`, with a SECRET_KEY set to get past "SECRET_KEY is not
set") wrote a key that could never work and credentials the server could not decrypt. The
server records its secrets' fingerprint when it starts; apply_config and create_api_key
refuse to write under others."""

import threading
from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from core.crypto import secrets_fingerprints
from gateway.models import ApiKey
from orgs import secrets_check
from orgs.models import SecretsFingerprint

pytestmark = pytest.mark.django_db


def _create_key(name, *extra):
    out = StringIO()
    call_command("create_api_key", "--org", "acme", "--name", name, *extra, stdout=out)
    return out.getvalue().strip().splitlines()[-1]


def test_a_command_under_other_secrets_than_the_server_s_writes_nothing(org_a, settings, tmp_path):
    secrets_check.record()  # the server, at its start
    row = SecretsFingerprint.objects.get()
    assert (row.key_hash, row.encryption.split(",")) == secrets_fingerprints()
    assert settings.SECRET_KEY not in row.key_hash + row.encryption
    assert _create_key("same").startswith("bn-")  # the server's secrets: written
    call_command("demo", "--force", stdout=StringIO())  # the demo key, under the server's secrets
    settings.KEY_HASH_SECRET = "another-secret-key-for-this-command-only-000"
    with pytest.raises(CommandError, match="another KEY_HASH_SECRET .* would get 401"):
        _create_key("other")
    config = tmp_path / "c.yaml"
    config.write_text("orgs:\n  - slug: acme\n    teams: [{name: t}]\n")
    with pytest.raises(CommandError, match="DEBUG=1 and no SECRET_KEY"):
        call_command("apply_config", str(config), stdout=StringIO())
    with pytest.raises(CommandError, match="would get 401"):
        call_command("demo", "--new-key", "--force", stdout=StringIO())
    assert not ApiKey.objects.filter(name="other").exists()
    # Said on purpose: written.
    assert _create_key("other", "--other-secrets").startswith("bn-")
    # demo without --new-key keeps the key made earlier and says it will not work here.
    out = StringIO()
    call_command("demo", "--force", stdout=out)
    assert "the demo key made earlier gets 401 under it" in out.getvalue()
    # A key made now (none was left) is said to work only with a server of these settings.
    ApiKey.objects.filter(org__slug="demo").update(revoked_at=timezone.now())
    out = StringIO()
    call_command("demo", "--force", stdout=out)
    assert "the key above works only with a server that runs with this run" in out.getvalue()


def test_encryption_keys_count_for_credentials_not_for_keys(org_a, settings, tmp_path):
    """Keys are hashed under KEY_HASH_SECRET alone; credentials are readable by the server
    when the command's newest encryption key is one of the server's (a rotation: the server
    has the new key in front and the old behind)."""
    settings.KEY_HASH_SECRET = "the-key-hash-secret-of-this-install-0000000"
    settings.ENCRYPTION_KEYS = [NEW, OLD]
    secrets_check.record()
    config = tmp_path / "c.yaml"
    config.write_text("orgs:\n  - slug: acme\n    teams: [{name: t}]\n")
    for keys in ([NEW], [OLD], [OLD, NEW]):  # the server has each command's newest key
        settings.ENCRYPTION_KEYS = keys
        call_command("apply_config", str(config), stdout=StringIO())
    settings.ENCRYPTION_KEYS = [OTHER, NEW]  # its newest is not the server's
    with pytest.raises(CommandError, match="does not have: it could not decrypt"):
        call_command("apply_config", str(config), stdout=StringIO())
    assert _create_key("keys-only").startswith("bn-")  # no credentials: not refused


NEW, OLD, OTHER = (Fernet.generate_key().decode() for _ in range(3))


def test_other_encryption_keys_are_other_secrets(settings):
    before = secrets_fingerprints()
    settings.ENCRYPTION_KEYS = [NEW]
    assert secrets_fingerprints()[1] != before[1] and secrets_fingerprints()[0] == before[0]


def test_before_any_server_started_nothing_is_checked(org_a):
    assert not SecretsFingerprint.objects.exists()
    assert _create_key("first").startswith("bn-")


@pytest.mark.django_db(transaction=True)
def test_the_server_s_snapshot_thread_records_it(org_a):
    from gateway.snapshot_builder import SnapshotRefresher

    class Target:
        def publish(self, snap):
            pass

        def current(self):
            return None

    refresher = SnapshotRefresher(Target(), interval=0.05)
    refresher.start()
    try:
        for _ in range(200):
            if SecretsFingerprint.objects.exists():
                break
            threading.Event().wait(0.05)
    finally:
        refresher.stop()
        connection.close()
    row = SecretsFingerprint.objects.get()
    assert (row.key_hash, row.encryption.split(",")) == secrets_fingerprints()
