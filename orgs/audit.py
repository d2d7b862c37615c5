"""Writing audit rows. Callers are service functions, inside their own transaction."""

import re
from dataclasses import dataclass

from core.config_version import ORG, ORG_ONLY, TIER, config_version_bump

from .models import AuditLog

REDACTED = "[redacted]"
_SECRET_NAME = re.compile(
    r"(secret|password|passwd|token|api_?key|credential|authorization|private|cert_key|hash)", re.I
)
_SECRET_VALUE = re.compile(r"\b(bn|rt|bt|sk|pat|inv)-[A-Za-z0-9_\-]{12,}|AKIA[0-9A-Z]{16}")


@dataclass(frozen=True)
class Actor:
    """Who is making a change and from where; passed into every service function."""

    user: object = None
    ip: str | None = None
    via: str = "web"

    @property
    def label(self) -> str:
        if self.user is not None and getattr(self.user, "is_authenticated", False):
            return self.user.email
        return self.via

    @classmethod
    def from_request(cls, request, via="web"):
        from core.client_ip import client_ip

        user = request.user if request.user.is_authenticated else None
        return cls(user=user, ip=client_ip(request), via=via)


SYSTEM = Actor(via="system")


def scrub(value):
    """Remove secrets from a before/after summary, recursively."""
    if isinstance(value, dict):
        return {
            k: (
                REDACTED
                if _SECRET_NAME.search(str(k)) and v not in (None, "", [], {})
                else scrub(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return _SECRET_VALUE.sub(REDACTED, value)
    return value


def audit_record(*, actor: Actor, org, action: str, target, before=None, after=None) -> AuditLog:
    changes = {}
    if before is not None:
        changes["before"] = scrub(before)
    if after is not None:
        changes["after"] = scrub(after)
    return AuditLog.objects.create(
        org=org,
        actor=actor.user if getattr(actor.user, "pk", None) else None,
        actor_label=actor.label,
        via=actor.via,
        action=action,
        target_type=target.__class__.__name__.lower() if target is not None else "",
        target_id=str(getattr(target, "pk", "") or ""),
        target_repr=_SECRET_VALUE.sub(REDACTED, str(target))[:254] if target is not None else "",
        changes=changes,
        ip=actor.ip,
    )


# Entities whose changes touch an org's settings but none of its keys' fields: the
# gateways reload the org, not its keys. A routing policy's name is on its keys, but it is
# never renamed; deleting one lets go of its revoked keys (they change, see below).
SETTINGS_ONLY = frozenset(
    {"policy", "provider", "deployment", "gateway_config", "budget", "routing_policy"}
)
# Entities whose deletion changes keys' fields (a deleted routing policy's revoked keys).
DELETE_TOUCHES_KEYS = frozenset({"routing_policy"})


def config_changed(entity: str, org, target, deleted: bool = False) -> None:
    """Bump the config version saying what changed (core.config_version's kinds)."""
    if entity == "tier_limit":
        config_version_bump(TIER, ref=target.tier)
    elif org is None:
        config_version_bump()  # not one org's: every gateway rebuilds
    else:
        keys_touched = entity not in SETTINGS_ONLY or (deleted and entity in DELETE_TOUCHES_KEYS)
        config_version_bump(ORG if keys_touched else ORG_ONLY, org_id=org.pk)


def record_config_change(*, actor: Actor, org, entity: str, target, before, after) -> None:
    """Audit the create or update of something the gateways read and bump the config
    version, so every worker enforces it within seconds; nothing when it did not change."""
    if after == before:
        return
    action = f"{entity}.update" if before is not None else f"{entity}.create"
    audit_record(actor=actor, org=org, action=action, target=target, before=before, after=after)
    config_changed(entity, org, target)


def record_config_delete(*, actor: Actor, org, entity: str, target, before) -> None:
    """Audit and delete something the gateways read, and bump the config version."""
    audit_record(actor=actor, org=org, action=f"{entity}.delete", target=target, before=before)
    config_changed(entity, org, target, deleted=True)
    target.delete()
