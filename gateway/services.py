"""Control-plane writes for the gateway: keys. Each one audits itself."""

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from governance.audit import Actor, audit_record

from . import keys
from .models import ApiKey


def _key_summary(key: ApiKey) -> dict:
    return {
        "name": key.name,
        "key": key.masked,
        "kind": key.kind,
        "allowed_models": key.allowed_models,
        "allowed_providers": key.allowed_providers,
        "team": key.team.name if key.team else None,
        "rpm_limit": key.rpm_limit,
        "tpm_limit": key.tpm_limit,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
    }


@transaction.atomic
def api_key_create(
    *,
    actor: Actor,
    org,
    name: str,
    allowed_models=(),
    allowed_providers=(),
    team=None,
    rpm_limit=None,
    tpm_limit=None,
    expires_at=None,
    kind: str = ApiKey.Kind.STANDARD,
) -> tuple[ApiKey, str]:
    """Create a key; returns (key, raw). The raw key exists only in this return value."""
    if team is not None and team.org_id != org.id:
        raise ValidationError("That team belongs to another organization.")
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError("The expiry must be in the future.")
    raw = keys.generate(f"{kind}-")
    key = ApiKey(
        org=org,
        name=name.strip() or "key",
        kind=kind,
        team=team,
        allowed_models=sorted(set(allowed_models)),
        allowed_providers=sorted(set(allowed_providers)),
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
        expires_at=expires_at,
        created_by=actor.user if getattr(actor.user, "pk", None) else None,
    )
    key.set_raw(raw)
    key.full_clean(exclude=["key_hash"])
    key.save()
    audit_record(actor=actor, org=org, action="api_key.create", target=key, after=_key_summary(key))
    return key, raw


@transaction.atomic
def api_key_revoke(*, actor: Actor, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit_record(
            actor=actor, org=key.org, action="api_key.revoke", target=key, before=_key_summary(key)
        )
    return key
