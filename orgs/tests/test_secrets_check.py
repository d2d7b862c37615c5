"""A management command run with other secrets than the server's (an outside check: the
README's command after `make run`, with a SECRET_KEY set to get past "SECRET_KEY is not
set") wrote a key that could never work and credentials the server could not decrypt. The
server records its secrets' fingerprint when it starts; apply_config and create_api_key
refuse to write under others."""

import threading
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from core.crypto import secrets_fingerprint
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
    recorded = SecretsFingerprint.objects.get().value
    assert recorded == secrets_fingerprint() and settings.SECRET_KEY not in recorded
    assert _create_key("same").startswith("bn-")  # the server's secrets: written
    settings.KEY_HASH_SECRET = "another-secret-key-for-this-command-only-000"
    assert secrets_fingerprint() != recorded
    with pytest.raises(CommandError, match="other secrets .* than the server that started last"):
        _create_key("other")
    config = tmp_path / "c.yaml"
    config.write_text("orgs:\n  - slug: acme\n    teams: [{name: t}]\n")
    with pytest.raises(CommandError, match="DEBUG=1 and no SECRET_KEY"):
        call_command("apply_config", str(config), stdout=StringIO())
    assert not ApiKey.objects.filter(name="other").exists()
    # Said on purpose: written.
    assert _create_key("other", "--other-secrets").startswith("bn-")


def test_other_encryption_keys_are_other_secrets(settings):
    before = secrets_fingerprint()
    settings.ENCRYPTION_KEYS = ["QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="]
    assert secrets_fingerprint() != before


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
    assert SecretsFingerprint.objects.get().value == secrets_fingerprint()
