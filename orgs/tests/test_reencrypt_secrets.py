"""Rotating ENCRYPTION_KEYS: a new key is put first (the old one kept, so everything stays
readable), `manage.py reencrypt_secrets` writes every stored secret again under it, and the
old key can then be dropped. Before, nothing wrote old secrets again: the old key could
never go, and shared config deltas stayed off for those orgs (gateway/snapshot_builder)."""

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError

from agents import services as agents_services
from agents.models import OrgToken
from core import crypto
from core.models import ConfigChange
from gateway import services
from gateway.models import CredentialsUnreadable, ProviderConnection
from orgs import secrets_check, sso
from orgs.audit import Actor
from orgs.models import Organization, SSOConfig

from .saml_idp import TestIdP

ACTOR = Actor(via="test")
OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


@pytest.fixture
def keys(settings):
    def use(*keys):
        settings.ENCRYPTION_KEYS = list(keys)
        crypto._fernet.cache_clear()

    yield use
    crypto._fernet.cache_clear()


@pytest.fixture
def secrets(org_a, keys):
    """A provider's credentials, an SSO SP key pair (rotated once: two private keys) and a
    pending agent token, all written under OLD."""
    keys(OLD)
    services.provider_save(
        actor=ACTOR, org=org_a, name="p", kind="openai", credentials={"api_key": "sk-org-own"}
    )
    idp = TestIdP()
    config = sso.sso_config_save(
        actor=ACTOR,
        org=org_a,
        preset="okta",
        idp_entity_id=idp.entity_id,
        idp_sso_url=idp.sso_url,
        idp_x509_cert=idp.cert,
        email_domains=["acme.test"],
    )
    sso.sp_keys(config)
    sso.sp_key_rotate(actor=ACTOR, config=SSOConfig.objects.get(pk=config.pk))
    Organization.objects.filter(pk=org_a.pk).update(deployment_mode="vpc")
    org_a.refresh_from_db()
    agents_services.vpc_enable(actor=ACTOR, org=org_a)
    _, raw = agents_services.org_token_rotate(actor=ACTOR, org=org_a)
    return {"raw_token": raw, "key": sso.sp_keys(SSOConfig.objects.get(org=org_a))[0]}


def stored():
    config = SSOConfig.objects.get()
    return [
        *ProviderConnection.objects.values_list("credentials_encrypted", flat=True),
        config.sp_private_key,
        config.sp_previous_private_key,
        *OrgToken.objects.exclude(pending="").values_list("pending", flat=True),
    ]


def run(*args) -> str:
    out = io.StringIO()
    call_command("reencrypt_secrets", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_every_secret_is_written_again_under_the_new_key_and_the_old_one_can_go(
    org_a, keys, secrets
):
    before = stored()
    assert len(before) == 4 and all(before)
    keys(NEW, OLD)
    secrets_check.record()  # the server restarted with the new key first
    assert run("--dry-run").startswith("4 would be encrypted again")
    assert stored() == before  # a dry run writes nothing
    assert run().startswith("4 were encrypted again under the newest key; 0 already")
    assert all(crypto.sealed_by_newest(t) for t in stored())
    assert run().startswith("0 were encrypted again under the newest key; 4 already")
    keys(NEW)  # the old key dropped: everything still reads, unchanged
    assert ProviderConnection.objects.get().get_credentials() == {"api_key": "sk-org-own"}
    config = SSOConfig.objects.get()
    assert sso.sp_keys(config)[0] == secrets["key"]
    assert sso.sp_previous_keys(config)[0]
    token = OrgToken.objects.exclude(pending="").get()
    assert crypto.decrypt_json(token.pending) == {"token": secrets["raw_token"]}


@pytest.mark.django_db
def test_a_secret_no_key_reads_is_named_and_left_as_it_is(org_a, keys, secrets):
    foreign = Fernet(Fernet.generate_key()).encrypt(b'{"api_key": "x"}').decode()
    services.provider_save(actor=ACTOR, org=org_a, name="lost", kind="mock")
    ProviderConnection.objects.filter(name="lost").update(credentials_encrypted=foreign)
    keys(NEW, OLD)
    secrets_check.record()
    with pytest.raises(CommandError) as refused:
        run()
    assert "1 cannot be decrypted" in str(refused.value)
    assert "gateway.ProviderConnection" in str(refused.value) and "name lost" in str(refused.value)
    assert ProviderConnection.objects.get(name="lost").credentials_encrypted == foreign
    # The others were written again all the same.
    assert crypto.sealed_by_newest(ProviderConnection.objects.get(name="p").credentials_encrypted)
    with pytest.raises(CredentialsUnreadable):
        ProviderConnection.objects.get(name="lost").get_credentials()


@pytest.mark.django_db
def test_it_refuses_a_key_the_server_does_not_have(org_a, keys, secrets):
    secrets_check.record()  # the server runs with OLD only
    keys(NEW, OLD)  # the command has a new key the server lacks
    before = stored()
    with pytest.raises(CommandError) as refused:
        run()
    assert "does not have" in str(refused.value)
    assert stored() == before
    assert run("--other-secrets").startswith("4 were encrypted again")


# Rotating while the dashboard is in use: an edit that read a secret before the command
# rewrote it must not write the old ciphertext back (the old key then dropped: lost).
@pytest.mark.django_db
def test_a_provider_edit_during_the_run_keeps_the_rewritten_credentials(org_a, keys, monkeypatch):
    keys(OLD)
    services.provider_save(
        actor=ACTOR, org=org_a, name="p", kind="openai", credentials={"api_key": "sk-org-own"}
    )
    keys(NEW, OLD)
    secrets_check.record()
    from gateway.dataplane import provider_kinds

    real = provider_kinds.ProviderKind.problems

    def problems(self, **kw):  # the command runs between the edit's read and its save
        run()
        return real(self, **kw)

    monkeypatch.setattr(provider_kinds.ProviderKind, "problems", problems)
    services.provider_save(actor=ACTOR, org=org_a, name="p", kind="openai", is_active=False)
    monkeypatch.setattr(provider_kinds.ProviderKind, "problems", real)
    provider = ProviderConnection.objects.get(name="p")
    assert not provider.is_active  # the edit itself was saved
    assert crypto.sealed_by_newest(provider.credentials_encrypted)
    keys(NEW)
    assert provider.get_credentials() == {"api_key": "sk-org-own"}


@pytest.mark.django_db
def test_an_sso_edit_during_the_run_keeps_the_rewritten_sp_key(org_a, keys, monkeypatch):
    keys(OLD)
    idp = TestIdP()
    fields = dict(
        preset="okta",
        idp_entity_id=idp.entity_id,
        idp_sso_url=idp.sso_url,
        idp_x509_cert=idp.cert,
        email_domains=["acme.test"],
    )
    config = sso.sso_config_save(actor=ACTOR, org=org_a, **fields)
    key = sso.sp_keys(config)[0]
    keys(NEW, OLD)
    secrets_check.record()
    real = sso.sso_config_prepare

    def prepare(*a, **kw):
        prepared = real(*a, **kw)
        run()  # between the edit's read and its save
        return prepared

    monkeypatch.setattr(sso, "sso_config_prepare", prepare)
    sso.sso_config_save(
        actor=ACTOR, org=org_a, **{**fields, "email_domains": ["acme.test", "b.test"]}
    )
    config = SSOConfig.objects.get(org=org_a)
    assert config.email_domains == ["acme.test", "b.test"]
    assert crypto.sealed_by_newest(config.sp_private_key)
    keys(NEW)
    assert sso.sp_keys(config)[0] == key


@pytest.mark.django_db
def test_stored_deltas_under_the_old_key_are_cleared(org_a, keys, settings):
    from core.config_version import current_version
    from gateway.snapshot_builder import share_deltas

    settings.GATEWAY_SHARE_DELTAS = True
    keys(OLD)
    p = services.provider_save(
        actor=ACTOR, org=org_a, name="p", kind="openai", credentials={"api_key": "sk-in-delta"}
    )
    services.deployment_save(actor=ACTOR, org=org_a, model_name="c", provider=p, upstream_model="m")
    share_deltas([current_version()])
    assert ConfigChange.objects.exclude(delta=None).exists()
    keys(NEW, OLD)
    secrets_check.record()
    assert "1 stored config deltas under an older key would be cleared" in run("--dry-run")
    assert ConfigChange.objects.exclude(delta=None).exists()
    assert "1 stored config deltas under an older key were cleared" in run()
    old = Fernet(OLD.encode())
    for row in ConfigChange.objects.exclude(delta=None):
        with pytest.raises(Exception):  # noqa: B017 (any: not readable with the old key)
            old.decrypt(bytes(row.delta))
