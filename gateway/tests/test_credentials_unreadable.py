"""A provider's credentials written under other keys than the server's (a management command
run with another SECRET_KEY, an ENCRYPTION_KEYS entry dropped too early) could not be
decrypted, and the snapshot build failed as a whole: every org's configuration froze (a
revoked key kept working, a new key got 401, a new worker answered 503 to everyone) with a
warning twice a second (an outside check). Now that provider's deployments are left out,
said once in an error log, and the dashboard asks for the credentials again."""

import logging

import httpx
import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ValidationError

from gateway import services
from gateway.models import ApiKey, CredentialsUnreadable, ProviderConnection
from gateway.snapshot_builder import build_snapshot, load_orgs
from gateway.tests.conftest import ACTOR, refresh_snapshot

FOREIGN = Fernet(Fernet.generate_key()).encrypt(b'{"api_key": "sk-written-elsewhere"}').decode()


def _unreadable_provider(org, name="elsewhere"):
    provider = services.provider_save(
        actor=ACTOR,
        org=org,
        name=name,
        kind="openai",
        credentials={"api_key": "sk-test-0000000000000000"},
    )
    services.deployment_save(
        actor=ACTOR, org=org, model_name="far-chat", provider=provider, upstream_model="gpt-4o"
    )
    ProviderConnection.objects.filter(pk=provider.pk).update(credentials_encrypted=FOREIGN)
    provider.refresh_from_db()
    return provider


def test_one_unreadable_provider_does_not_freeze_the_other_orgs(acme, org_b, caplog):
    provider = _unreadable_provider(org_b)
    with pytest.raises(CredentialsUnreadable, match="another SECRET_KEY or ENCRYPTION_KEYS"):
        provider.get_credentials()
    with caplog.at_level(logging.ERROR, logger="bonito.gateway.snapshot"):
        refresh_snapshot()  # raised InvalidToken: nothing was published
        build_snapshot()
    said = [r.getMessage() for r in caplog.records if "cannot be decrypted" in r.getMessage()]
    assert len(said) == 1 and "elsewhere" in said[0] and "sk-" not in said[0]
    assert "far-chat" not in load_orgs([org_b.id])[org_b.id].deployments
    # Acme's configuration still follows its changes: a new key works, a revoked one not.
    new, raw = services.api_key_create(actor=ACTOR, org=acme.org, name="after")
    services.api_key_revoke(actor=ACTOR, key=ApiKey.objects.get(pk=acme.key.pk))
    refresh_snapshot()
    body = {"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]}
    url = f"{acme.base_url}/chat/completions"
    ok = httpx.post(url, headers={"Authorization": f"Bearer {raw}"}, json=body, timeout=30)
    assert ok.status_code == 200
    old = httpx.post(url, headers={"Authorization": f"Bearer {acme.raw}"}, json=body, timeout=30)
    assert old.status_code == 401


@pytest.mark.django_db
def test_the_dashboard_asks_for_them_again_and_a_save_replaces_them(alice_client, org_a):
    provider = _unreadable_provider(org_a)
    url = f"/o/{org_a.slug}/providers/{provider.pk}/"
    page = alice_client.get(url)
    assert page.status_code == 200
    assert "cannot be decrypted with this server&#x27;s keys" in page.content.decode()
    assert "enter every one of them again" in page.content.decode()
    listed = alice_client.get(f"/o/{org_a.slug}/providers/").content.decode()
    assert "cannot be decrypted: enter them again (Edit)" in listed
    ok, message = services.provider_test(provider=provider)
    assert not ok and "cannot be decrypted" in message
    saved = services.provider_save(
        actor=ACTOR,
        org=org_a,
        name="elsewhere",
        kind="openai",
        credentials={"api_key": "sk-test-1111111111111111"},
    )
    assert saved.get_credentials() == {"api_key": "sk-test-1111111111111111"}


@pytest.mark.django_db
def test_credentials_it_cannot_read_never_move_to_a_new_endpoint_unseen(org_a):
    """readable_credentials() gave {} for them, so the guard that asks for credentials
    again before they go to a new endpoint was skipped: a process with other keys moved the
    endpoint, and the server that could read them sent the key there; then an empty
    mapping of credentials did the same (two outside checks)."""
    evil = "https://llm.example.com/v1"
    provider = _unreadable_provider(org_a)
    for fields in (
        {"kind": "openai", "api_base": evil},
        {"kind": "openai_compatible", "api_base": evil},
    ):
        with pytest.raises(ValidationError, match="cannot be decrypted"):
            services.provider_save(actor=ACTOR, org=org_a, name="elsewhere", **fields)
    provider.refresh_from_db()
    assert provider.credentials_encrypted == FOREIGN and provider.api_base == ""
    # A save that moves nothing keeps them as they are (switching the provider off).
    services.provider_save(actor=ACTOR, org=org_a, name="elsewhere", kind="openai", is_active=False)
    provider.refresh_from_db()
    assert provider.credentials_encrypted == FOREIGN and not provider.is_active
    # Credentials sent, even none, replace them: what moves never carries the old ones.
    for sent in ({}, {"api_key": None}):
        services.provider_save(
            actor=ACTOR,
            org=org_a,
            name="elsewhere",
            kind="openai_compatible",
            api_base=evil,
            credentials=sent,
        )
        provider.refresh_from_db()
        assert provider.credentials_encrypted == "" and provider.api_base == evil
        ProviderConnection.objects.filter(pk=provider.pk).update(
            credentials_encrypted=FOREIGN, kind="openai", api_base=""
        )


@pytest.mark.django_db
def test_a_delta_built_without_a_deployment_it_cannot_read_is_not_shared(org_a, settings):
    """Shared, it took the deployment from every worker that can read it (a replica with
    other keys, mid-rotation): those build the delta themselves instead."""
    from core.config_version import current_version, shared_deltas
    from gateway.snapshot_builder import build_delta, share_deltas

    settings.GATEWAY_SHARE_DELTAS = True  # as a server runs (the suite runs it off)
    _unreadable_provider(org_a)
    services.provider_save(actor=ACTOR, org=org_a, name="plain", kind="mock")
    version = current_version()
    skipped: list = []
    delta = build_delta(version - 1, version, skipped=skipped)
    assert delta is not None and skipped  # the org's deployments were read, one left out
    share_deltas([version])
    assert shared_deltas(version - 1, version) is None
    # A change the process can read whole is shared as before.
    ProviderConnection.objects.filter(org=org_a, name="elsewhere").delete()
    services.provider_save(actor=ACTOR, org=org_a, name="plain2", kind="mock")
    version = current_version()
    share_deltas([version])
    assert shared_deltas(version - 1, version) is not None


@pytest.mark.django_db
def test_a_delta_holding_credentials_under_an_older_key_is_not_shared(org_a, settings):
    """Mid-rotation (ENCRYPTION_KEYS = new, old), a provider's credentials still under the
    old key were decrypted here and sealed into the shared delta under the new one: a
    replica that has only the new key applied them, serving credentials it could not have
    read itself. Such a delta is not shared; the workers build it, each with its own keys."""
    from core import crypto
    from core.config_version import current_version, shared_deltas
    from gateway.snapshot_builder import share_deltas

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.GATEWAY_SHARE_DELTAS = True
    settings.ENCRYPTION_KEYS = [old]
    crypto._fernet.cache_clear()
    try:
        provider = services.provider_save(
            actor=ACTOR,
            org=org_a,
            name="rotating",
            kind="openai",
            credentials={"api_key": "sk-under-the-old-key-000000"},
        )
        services.deployment_save(
            actor=ACTOR, org=org_a, model_name="r-chat", provider=provider, upstream_model="m"
        )
        settings.ENCRYPTION_KEYS = [new, old]  # the rotation begins: new first, old kept
        crypto._fernet.cache_clear()
        services.provider_save(actor=ACTOR, org=org_a, name="plain", kind="mock")
        version = current_version()
        share_deltas([version])
        assert shared_deltas(version - 1, version) is None
        # Re-entered (so written under the new key), the org's deltas are shared again.
        services.provider_save(
            actor=ACTOR,
            org=org_a,
            name="rotating",
            kind="openai",
            credentials={"api_key": "sk-under-the-new-key-000000"},
        )
        version = current_version()
        share_deltas([version])
        assert shared_deltas(version - 1, version) is not None
        # A replica with only the new key reads the shared delta, and the credentials in it
        # are ones it can read itself.
        settings.ENCRYPTION_KEYS = [new]
        crypto._fernet.cache_clear()
        from gateway.snapshot_builder import stored_deltas

        (delta,) = stored_deltas(version - 1, version)
        deps = [d for ds in delta.orgs[org_a.id].deployments.values() for d in ds]
        assert [d.credentials for d in deps if d.kind == "openai"] == [
            {"api_key": "sk-under-the-new-key-000000"}
        ]
    finally:
        crypto._fernet.cache_clear()
