"""Control-plane writes for the gateway: keys. Each one audits itself."""

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.conf import settings as django_settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from core import keys
from core import strategies as dataplane_strategies
from core.config_version import KEY, ORG, config_version_bump, rotated_ref
from core.models import columns_but
from core.numbers import money
from core.text import distinct_checked, look_alike, name_checked, name_key, names_checked, shown
from governance import services as governance_services
from governance.models import RoutingPolicy
from orgs.audit import Actor, audit_record, record_config_change, record_config_delete
from orgs.services import quota_checked

from .dataplane import provider_kinds
from .models import ApiKey, CredentialsUnreadable, Deployment, GatewayConfig, ProviderConnection


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
        "routing_policy": key.routing_policy.name if key.routing_policy else None,
    }


def key_limit_ceilings(org, config: GatewayConfig | None = None) -> dict:
    """The widest RPM and TPM a key of ``org`` may have, each as (limit, where it comes
    from), or None when nothing caps it: the org's default key limit, within its tier's
    (orgs.TierLimit.key_rpm). The data plane applies the same minimum to every key
    (proxy.effective_limit, with the snapshot's OrgInfo.tier_key_rpm)."""
    from orgs.models import TierLimit

    if config is None:
        config = GatewayConfig.objects.filter(org=org).first()
    tier_rpm = TierLimit.objects.filter(tier=org.tier).values_list("key_rpm", flat=True).first()
    tier = (tier_rpm, f"on the {org.get_tier_display()} tier")
    org_rpm = (config.default_key_rpm if config else None, "in this organization (org default)")
    org_tpm = (config.default_key_tpm if config else None, "in this organization (org default)")

    def narrowest(*candidates):
        return min((c for c in candidates if c[0]), default=None, key=lambda c: c[0])

    return {"rpm": narrowest(org_rpm, tier), "tpm": narrowest(org_tpm)}


_LIMIT_UNITS = {"rpm": "requests", "tpm": "tokens"}


def _limit_checked(field: str, kind: str, value, ceiling) -> None:
    """Limits only narrow: refuse a key limit wider than its ceiling, naming both."""
    if value is None:
        return
    if value < 1:
        raise ValidationError({field: f"{field}: at least 1 (leave it empty for the default)."})
    if ceiling is not None and value > ceiling[0]:
        raise ValidationError(
            {
                field: f"{field}: at most {ceiling[0]} {_LIMIT_UNITS[kind]} per minute per key "
                f"{ceiling[1]}."
            }
        )


KEY_EXPIRY_HELP = (
    "A date (2027-01-31: the end of that day, 23:59:59 UTC) or an ISO 8601 time "
    "(2027-01-31T18:00:00+02:00; UTC when it names no offset). It must be in the future."
)
_EXPIRY_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_EXPIRY_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
    r"(Z|[+-][0-9]{2}:?[0-9]{2})?",
    re.ASCII,
)
_EXPIRY_MESSAGE = "must be a date like 2027-01-31 or an ISO 8601 time like 2027-01-31T18:00:00Z."


def _end_of_day(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 23, 59, 59, tzinfo=UTC)


def key_expiry(value) -> datetime | None:
    """The one reading of a key's expiry, for every way in (dashboard, REST, command line):
    None or "" is none; a date alone (text or a ``date``) is the END of that day, 23:59:59
    UTC; a time with an offset is that instant; a time without one is UTC. The result is
    in UTC. Anything else is a ValidationError (its message names no field: callers put
    it on theirs). Whether it is in the future is api_key_create's check."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, datetime):
            when = value
        elif isinstance(value, date):
            when = _end_of_day(value)
        elif isinstance(value, str) and _EXPIRY_DATE.fullmatch(value.strip()):
            when = _end_of_day(date.fromisoformat(value.strip()))
        elif isinstance(value, str) and _EXPIRY_TIME.fullmatch(value.strip()):
            when = datetime.fromisoformat(value.strip())
        else:
            raise ValueError
        # An offset that takes the instant out of the years 1-9999 cannot be stored.
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValidationError(_EXPIRY_MESSAGE, code="invalid") from None


def key_model_names(org) -> list[str]:
    """The names a key's allowed_models may hold: the org's models (its deployments' public
    names, a paused one's included) and its smart routing alias."""
    names = set(Deployment.objects.for_org(org).values_list("model_name", flat=True))
    config = GatewayConfig.objects.for_org(org).first()
    names.add(config.auto_model_alias if config is not None else "auto")
    return sorted(names)


def key_provider_names(org) -> list[str]:
    """The names a key's allowed_providers may hold: the org's provider connections and the
    provider kinds (a key scoped to `bedrock` may use any Bedrock connection)."""
    names = set(ProviderConnection.objects.for_org(org).values_list("name", flat=True))
    return sorted(names | set(provider_kinds.names()))


def _scope_checked(field: str, org, names, kept, valid_names, what: str) -> list[str]:
    """``names`` as a key stores them in ``field``, or a ValidationError naming those that
    are not in ``valid_names(org)`` and listing the valid ones (a typo scoped the key to
    nothing, and quietly: it was a 403 on /v1 only later). ``kept``: the key's names as
    stored, kept even if what they name has gone since, so an edit does not fail on a name
    no one is adding."""
    names = sorted(set(names_checked(names, field)))
    new = [n for n in names if n not in set(kept or ())]
    if not new:
        return names
    valid = valid_names(org)
    unknown = [n for n in new if n not in valid]
    if unknown:
        shown = ", ".join(valid[:50]) + (
            f" (and {len(valid) - 50} more)" if len(valid) > 50 else ""
        )
        raise ValidationError(
            {
                field: f"{field}: "
                + ", ".join(repr(n[:100]) for n in unknown[:10])
                + (f" is not a {what}" if len(unknown) == 1 else f" are not {what}s")
                + f" of this organization. Valid: {shown}."
            }
        )
    return names


def _allowed_models_checked(org, names, kept=()) -> list[str]:
    return _scope_checked("allowed_models", org, names, kept, key_model_names, "model")


def _allowed_providers_checked(org, names, kept=()) -> list[str]:
    return _scope_checked("allowed_providers", org, names, kept, key_provider_names, "provider")


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
    routing_policy=None,
    membership=None,
) -> tuple[ApiKey, str]:
    """Create a key; returns (key, raw). The raw key exists only in this return value.

    With a routing policy the key is an rt- key that routes through that policy.
    ``expires_at`` is read by key_expiry (text, a date or a datetime). ``membership``: the
    creator's, when a person creates it; a member (not an admin) puts it on their own team
    (none given: their team), so a key never starts outside the team budget they are under."""
    try:
        expires_at = key_expiry(expires_at)
    except ValidationError as exc:
        raise ValidationError({"expires_at": exc.error_list}) from None
    if team is not None and team.org_id != org.id:
        raise ValidationError("That team belongs to another organization.")
    if membership is not None and not membership.has_role("admin"):
        if team is not None and team.id != membership.team_id:
            raise ValidationError({"team": _MEMBER_TEAM_MESSAGE})
        team = membership.team
    if routing_policy is not None and routing_policy.org_id != org.id:
        raise ValidationError("That routing policy belongs to another organization.")
    kind = ApiKey.Kind.ROUTING if routing_policy is not None else ApiKey.Kind.STANDARD
    ceilings = key_limit_ceilings(org)
    _limit_checked("rpm_limit", "rpm", rpm_limit, ceilings["rpm"])
    _limit_checked("tpm_limit", "tpm", tpm_limit, ceilings["tpm"])
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "The expiry must be in the future."})
    allowed_models = _allowed_models_checked(org, allowed_models)
    allowed_providers = _allowed_providers_checked(org, allowed_providers)
    quota_checked(org, "keys", ApiKey.objects.for_org(org).active())
    raw = keys.generate(f"{kind}-")
    key = ApiKey(
        org=org,
        name=name_checked(name) or "key",
        kind=kind,
        team=team,
        allowed_models=allowed_models,
        allowed_providers=allowed_providers,
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
        expires_at=expires_at,
        routing_policy=routing_policy,
        created_by=actor.user if getattr(actor.user, "pk", None) else None,
    )
    key.set_raw(raw)
    key.full_clean(exclude=["key_hash"])
    key.save()
    audit_record(actor=actor, org=org, action="api_key.create", target=key, after=_key_summary(key))
    config_version_bump(KEY, org_id=org.id, ref=key.id)
    return key, raw


_MEMBER_TEAM_MESSAGE = "team: members create keys on their own team; ask an admin for another."


def api_key_may_change(membership, key: ApiKey) -> bool:
    """Who may edit, rotate or revoke a key, in the dashboard and over REST alike: an admin
    any key of the org; a member the keys they created (a viewer none: the pages and the
    API let only members and up write)."""
    return membership.has_role("admin") or (
        membership.has_role("member") and key.created_by_id == membership.user_id
    )


@transaction.atomic
def api_key_revoke(*, actor: Actor, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit_record(
            actor=actor, org=key.org, action="api_key.revoke", target=key, before=_key_summary(key)
        )
        config_version_bump(KEY, org_id=key.org_id, ref=key.id)
    return key


@transaction.atomic
def api_key_set_active(*, actor: Actor, key: ApiKey, active: bool, membership=None) -> ApiKey:
    """Disable (``active=False``) or enable a key. A disabled key is refused on /v1 by every
    worker within the config's propagation time, but keeps its secret, settings, spend and
    history, and works again once enabled. A revoked key stays revoked (not enabled).

    ``membership``: the changer's, when a person does it. Members may disable the keys they
    created (api_key_may_change): a narrowing. Only admins enable, so a member cannot undo
    an admin's disable. Setting the state a key already has changes nothing."""
    key = ApiKey.objects.select_for_update(of=("self",)).select_related("org").get(pk=key.pk)
    if membership is not None:
        if not api_key_may_change(membership, key):
            raise PermissionDenied(
                "Members can disable the keys they created; admins can change any key."
            )
        if active and not membership.has_role("admin"):
            raise PermissionDenied("Only an org admin can enable a disabled key.")
    if active and key.revoked_at is not None:
        raise ValidationError("This key is revoked; create a new one instead.")
    if key.is_active == bool(active):
        return key
    key.is_active = bool(active)
    key.save(update_fields=["is_active"])
    audit_record(
        actor=actor,
        org=key.org,
        action="api_key.enable" if active else "api_key.disable",
        target=key,
        before={"key": key.masked, "is_active": not key.is_active},
        after={"key": key.masked, "is_active": key.is_active},
    )
    config_version_bump(KEY, org_id=key.org_id, ref=key.id)
    return key


# The grace periods the dashboard offers for a rotated key's old secret (REST takes any
# number of seconds up to the longest).
ROTATION_GRACE_CHOICES = (
    (0, "none: the old secret stops at once"),
    (3600, "1 hour"),
    (86400, "24 hours"),
    (7 * 86400, "7 days"),
)
ROTATION_GRACE_MAX_S = 30 * 86400


@transaction.atomic
def api_key_rotate(*, actor: Actor, key: ApiKey, grace_seconds: int = 0) -> tuple[ApiKey, str]:
    """Give ``key`` a new secret; returns (key, raw). The key keeps its id, settings, spend
    and history. The old secret keeps working for ``grace_seconds`` (0: it stops at once),
    as the same key; a secret replaced by an earlier rotation stops now. A revoked key is
    not rotated."""
    # Locked and read again: two rotations at once replace one secret each, in turn.
    key = ApiKey.objects.select_for_update(of=("self",)).select_related("org").get(pk=key.pk)
    if key.revoked_at is not None:
        raise ValidationError("This key is revoked; create a new one instead.")
    if (
        isinstance(grace_seconds, bool)
        or not isinstance(grace_seconds, int)
        or not 0 <= grace_seconds <= ROTATION_GRACE_MAX_S
    ):
        raise ValidationError(
            {
                "grace_seconds": "grace_seconds: a whole number of seconds from 0 to "
                f"{ROTATION_GRACE_MAX_S} (30 days)."
            }
        )
    before = _key_summary(key)
    now = timezone.now()
    # A secret still in the grace of the last rotation: this one ends it, and the row will
    # not keep its hash for the gateways to drop.
    ends_a_grace = key.previous_valid(now)
    # The secret an earlier rotation replaced, whose grace (if it had one) ended by the
    # clock: the gateways may still hold it (refused), and drop it with this one.
    key.retired_key_hash = "" if ends_a_grace else key.previous_key_hash
    # The replaced secret's hash is kept even without a grace (valid until now, so until
    # never): the gateways drop exactly that hash (core.config_version.rotated_ref).
    key.previous_key_hash, key.previous_masked = key.key_hash, key.masked
    key.previous_valid_until = now + timedelta(seconds=grace_seconds)
    raw = keys.generate(f"{key.kind}-")
    key.set_raw(raw)
    key.save(
        update_fields=[
            "key_hash",
            "prefix",
            "last4",
            "previous_key_hash",
            "previous_masked",
            "previous_valid_until",
            "retired_key_hash",
        ]
    )
    after = {
        **_key_summary(key),
        "old_key_valid_until": key.previous_valid_until.isoformat() if grace_seconds else None,
    }
    audit_record(
        actor=actor, org=key.org, action="api_key.rotate", target=key, before=before, after=after
    )
    # The gateways reload this key and drop the replaced secret by its hash; when this
    # rotation ends an earlier one's grace, that secret's hash is gone from the row, and
    # the org's keys reload whole.
    config_version_bump(ORG, org_id=key.org_id, ref=None if ends_a_grace else rotated_ref(key.id))
    return key, raw


_EDITABLE = (
    "name",
    "allowed_models",
    "allowed_providers",
    "team",
    "rpm_limit",
    "tpm_limit",
    "expires_at",
    "routing_policy",
)


def _member_may_only_narrow(key: ApiKey, changes: dict) -> None:
    """What a member (not an admin) may do to their own key, for every way in: rename it
    and narrow it. Otherwise a member could undo an admin's tighter limits or move the key
    out of a spent team budget. ``key`` is the row as stored; ``expires_at`` in ``changes``
    already read by key_expiry. Raises a ValidationError naming each field refused."""
    errors = {}
    if "team" in changes and getattr(changes["team"], "id", None) != key.team_id:
        errors["team"] = "team: only an admin can move a key to another team (or to none)."
    if "routing_policy" in changes and (
        getattr(changes["routing_policy"], "id", None) != key.routing_policy_id
    ):
        errors["routing_policy"] = "routing_policy: only an admin can change a key's policy."
    for field in ("rpm_limit", "tpm_limit"):
        new, old = changes.get(field, getattr(key, field)), getattr(key, field)
        if new != old and (new is None or (old is not None and new > old)):
            errors[field] = (
                f"{field}: members can lower a key's limit ({old if old else 'none'}), "
                "not raise or remove it; ask an admin."
            )
    new, old = changes.get("expires_at", key.expires_at), key.expires_at
    if new != old and (new is None or (old is not None and new > old)):
        errors["expires_at"] = (
            "expires_at: members can set an expiry or bring it forward, not clear or "
            "extend it; ask an admin."
        )
    for field in ("allowed_models", "allowed_providers"):
        old = set(getattr(key, field) or ())
        new = set(changes.get(field, old) or ())
        if new != old and (not new or (old and not new <= old)):
            errors[field] = (
                f"{field}: members can narrow the list to some of its names, not add names "
                "or clear it (an empty list allows all); ask an admin."
            )
    if errors:
        raise ValidationError(errors)


@transaction.atomic
def api_key_update(*, actor: Actor, key: ApiKey, membership=None, **changes) -> ApiKey:
    """Change a key's name, scopes, team, limits, expiry or routing policy (only the fields
    given; the same checks as api_key_create). An rt- key may move to another routing
    policy, but a key does not change kind: its secret's prefix says which it is.

    ``membership``: the editor's, when a person edits. An admin may change anything; a
    member (api_key_may_change says whose keys) may only rename and narrow it
    (_member_may_only_narrow)."""
    unknown = set(changes) - set(_EDITABLE)
    if unknown:
        raise ValidationError(f"These key fields cannot be changed: {', '.join(sorted(unknown))}.")
    # Locked and read again: an edit starts from the row as it is (a revocation or another
    # edit that committed meanwhile), and the caller gets the saved key back.
    key = (
        ApiKey.objects.select_for_update(of=("self",))
        .select_related("org", "team", "routing_policy")
        .get(pk=key.pk)
    )
    if key.revoked_at is not None:
        raise ValidationError("This key is revoked; create a new one instead.")
    org = key.org
    before = _key_summary(key)
    if "expires_at" in changes:
        try:
            expires_at = key_expiry(changes["expires_at"])
        except ValidationError as exc:
            raise ValidationError({"expires_at": exc.error_list}) from None
        if expires_at != key.expires_at and expires_at is not None and expires_at <= timezone.now():
            raise ValidationError({"expires_at": "The expiry must be in the future."})
        changes["expires_at"] = expires_at
    for field in ("allowed_models", "allowed_providers"):
        if field in changes:  # as stored (NFC), before a member's list is compared with it
            changes[field] = names_checked(changes[field], field)
    if membership is not None and not membership.has_role("admin"):
        _member_may_only_narrow(key, changes)
    if "expires_at" in changes:
        key.expires_at = changes["expires_at"]
    if "team" in changes:
        team = changes["team"]
        if team is not None and team.org_id != org.id:
            raise ValidationError("That team belongs to another organization.")
        key.team = team
    if "routing_policy" in changes:
        policy = changes["routing_policy"]
        if policy is not None and policy.org_id != org.id:
            raise ValidationError("That routing policy belongs to another organization.")
        if (policy is not None) != (key.kind == ApiKey.Kind.ROUTING):
            raise ValidationError(
                {
                    "routing_policy": "An rt- key keeps a routing policy and a bn- key has none: "
                    "create a new key to change its kind."
                }
            )
        key.routing_policy = policy
    ceilings = key_limit_ceilings(org)
    for field, kind in (("rpm_limit", "rpm"), ("tpm_limit", "tpm")):
        if field in changes:
            # An unchanged limit is not checked again: an org ceiling lowered since does not
            # stop a rename (the data plane applies the ceiling anyway).
            if changes[field] != getattr(key, field):
                _limit_checked(field, kind, changes[field], ceilings[kind])
            setattr(key, field, changes[field])
    if "name" in changes:
        key.name = name_checked(changes["name"]) or "key"
    if "allowed_models" in changes:
        key.allowed_models = _allowed_models_checked(
            org, changes["allowed_models"], kept=key.allowed_models
        )
    if "allowed_providers" in changes:
        key.allowed_providers = _allowed_providers_checked(
            org, changes["allowed_providers"], kept=key.allowed_providers
        )
    key.full_clean(exclude=["key_hash"])
    after = _key_summary(key)
    if after == before:
        return key
    # Only these columns: the usage writer moves last_used_at meanwhile.
    key.save(update_fields=list(_EDITABLE))
    audit_record(
        actor=actor, org=org, action="api_key.update", target=key, before=before, after=after
    )
    config_version_bump(KEY, org_id=org.id, ref=key.id)
    return key


def url_check(url: str, field: str) -> None:
    """Refuse a URL Bonito must not call (see docs/security.md): not http(s), credentials
    in it, or a host that is or resolves to a loopback, private, link-local or metadata
    address outside PROVIDER_ALLOWED_NETWORKS. Every connection checks again."""
    from .dataplane.netpolicy import check_url
    from .runtime import network_policy

    try:
        check_url(url, network_policy())
    except ValueError as exc:
        raise ValidationError({field: str(exc)}) from exc


def _provider_summary(p: ProviderConnection) -> dict:
    return {
        "name": p.name,
        "kind": p.kind,
        "api_base": p.api_base,
        "settings": p.settings,
        "is_active": p.is_active,
        "credentials": "set" if p.has_credentials else "none",
    }


def _unset_dropped(values):
    """A mapping without its null values (YAML's ``key:`` with nothing after it)."""
    if isinstance(values, dict):
        return {k: v for k, v in values.items() if v is not None}
    return values


@transaction.atomic
def provider_save(
    *,
    actor: Actor,
    org,
    name: str,
    kind: str,
    api_base: str = "",
    settings: dict | None = None,
    credentials: dict | None = None,
    is_active: bool = True,
) -> ProviderConnection:
    """Create or update a provider connection. ``credentials=None`` keeps the stored ones.

    What a kind takes and requires is its entry in dataplane/provider_kinds.py: a value it
    does not take, or lacks, is a ValidationError naming the field."""
    spec = provider_kinds.get(kind)
    if spec is None:
        raise ValidationError({"kind": provider_kinds.unknown(kind)})
    api_base = (api_base or "").strip() if isinstance(api_base, str | None) else api_base
    if not isinstance(api_base, str):
        raise ValidationError({"api_base": "The endpoint must be a URL (text)."})
    name = name_checked(name)  # before the query: PostgreSQL cannot compare a NUL
    provider = ProviderConnection.objects.for_org(org).filter(name=name).first()
    before = _provider_summary(provider) if provider else None
    if provider is None:
        # A key's allowed providers list them: "OpenAI" beside "openai" is a trap.
        names = ProviderConnection.objects.for_org(org).values_list("name", flat=True)
        distinct_checked(name, names, what="provider")
        quota_checked(org, "providers", ProviderConnection.objects.for_org(org))
    provider = provider or ProviderConnection(org=org, name=name)
    stored, unreadable = {}, None
    if provider.pk:
        try:
            stored = provider.get_credentials()
        except CredentialsUnreadable as exc:  # written under other keys: none usable
            unreadable = exc
    settings, credentials = _unset_dropped(settings or {}), _unset_dropped(credentials)
    # What a save moves that stored credentials would follow: the endpoint, or the kind
    # (which decides the default host and how they are sent).
    moved = [
        field
        for field, was, now in (
            ("api_base", provider.api_base.rstrip("/"), api_base.rstrip("/")),
            ("kind", provider.kind, kind),
        )
        if provider.pk is not None and was != now
    ]
    if credentials is None and unreadable is not None and moved:
        # A new endpoint or kind must not take them along unseen: they would be sent there
        # once a server that can read them serves it. (A save that moves nothing, switching
        # the provider off say, keeps them as they are: readable where they were written.)
        raise ValidationError({"credentials": str(unreadable)})
    problems = spec.problems(
        api_base=api_base,
        settings=settings,
        credentials=stored if credentials is None else credentials,
        ambient_allowed=django_settings.PROVIDER_AMBIENT_CREDENTIALS,
    )
    if api_base and "api_base" not in problems:
        try:
            url_check(api_base, "api_base")
        except ValidationError as exc:
            problems.update(exc.message_dict)
    if credentials is None and unreadable is not None:
        problems.pop("credentials", None)  # kept as they are: not read here, not checked
    if credentials is None and provider.has_credentials:
        # The stored credentials go only where they were entered for: a new endpoint or
        # kind with the old keys would hand them to whoever runs that host.
        for field in moved:
            problems.setdefault(field, []).append(CREDENTIALS_AGAIN)
    if problems:
        raise ValidationError(problems)
    provider.kind, provider.api_base, provider.is_active = kind, api_base, is_active
    provider.settings = dict(settings)
    # Credentials sent replace unreadable ones whatever they are ({} too: an empty mapping
    # equals what could be read of them, and kept, the other keys' ciphertext went along to
    # a new endpoint).
    credentials_changed = credentials is not None and (
        credentials != stored or unreadable is not None
    )
    if credentials_changed:
        provider.set_credentials(credentials)
    provider.full_clean()
    if provider.pk is not None and not credentials_changed:
        # Not the credentials as read: written back, they would undo a rewrite made since
        # (reencrypt_secrets putting them under the newest key, the old one then dropped).
        provider.save(update_fields=columns_but(provider, "credentials_encrypted"))
    else:
        provider.save()
    after = _provider_summary(provider)
    if before and credentials_changed:
        after = {**after, "credentials": "changed"}
    record_config_change(
        actor=actor, org=org, entity="provider", target=provider, before=before, after=after
    )
    return provider


PROVIDER_NAME_TAKEN = "A provider with this name exists in this organization."
CREDENTIALS_AGAIN = (
    "Enter the credentials again to send them to a new endpoint: the stored ones are kept "
    "only while the endpoint stays the same."
)


@transaction.atomic
def provider_create(*, actor: Actor, org, name: str, **fields) -> ProviderConnection:
    """A new provider connection (provider_save's arguments). A name the org already has
    is refused: changing a provider is an explicit edit (provider_save on it), never a
    side effect of creating one. apply_config, which declares the org's providers, keeps
    provider_save's create-or-update."""
    name = name_checked(name)  # before the query: PostgreSQL cannot compare a NUL
    if ProviderConnection.objects.for_org(org).filter(name=name).exists():
        raise ValidationError({"name": PROVIDER_NAME_TAKEN})
    return provider_save(actor=actor, org=org, name=name, **fields)


@transaction.atomic
def provider_delete(*, actor: Actor, provider: ProviderConnection) -> list[str]:
    """Delete a provider connection and, with it, its deployments (they cannot serve
    without it); returns what they were ("chat → gpt-4o-mini"), and the audit row keeps
    them. The gateways stop routing to it with the next snapshot."""
    gone = [f"{d.model_name} → {d.upstream_model}" for d in provider.deployments.all()]
    record_config_delete(
        actor=actor,
        org=provider.org,
        entity="provider",
        target=provider,
        before={**_provider_summary(provider), "deployments": gone},
    )
    return gone


def _deployment_summary(d: Deployment) -> dict:
    return {
        "model": d.model_name,
        "provider": d.provider.name,
        "upstream_model": d.upstream_model,
        "region": d.region,
        "weight": d.weight,
        "priority": d.priority,
        "timeout_s": d.timeout_s,
        "is_active": d.is_active,
        "input_price_per_mtok": _price(d, "input_price_per_mtok"),
        "output_price_per_mtok": _price(d, "output_price_per_mtok"),
        "unit_price": _price(d, "unit_price"),
    }


def _price(d: Deployment, name: str) -> str | None:
    """A price as the database keeps it (its field's decimal places), whether read back
    (2.500000) or just set (2.5): saving the same price again is no change."""
    value = getattr(d, name)
    if value is None:
        return None
    places = Deployment._meta.get_field(name).decimal_places
    return str(value.quantize(Decimal(1).scaleb(-places)))


def _model_name_distinct(org, model_name: str, deployment: Deployment | None) -> None:
    """Refuse a new model name that only looks like one the org has (core.text.name_key):
    "GPT-4o" beside "gpt-4o" would be two models, with their own deployments, limits and
    allow-list entries, that a person picking one in a list cannot tell apart. The name
    itself (another deployment of the same model) is fine."""
    others = Deployment.objects.for_org(org)
    if deployment is not None:
        others = others.exclude(pk=deployment.pk)
    names = set(others.order_by().values_list("model_name", flat=True).distinct())
    other = None if model_name in names else look_alike(model_name, names)
    if other is not None:
        raise ValidationError(
            {
                "model_name": f"{shown(model_name)} looks like this organization's model "
                f"{shown(other)} (only case, width or spacing differ): name it {shown(other)} "
                "to add a deployment of that model, or pick a name that differs visibly."
            }
        )


@transaction.atomic
def deployment_save(
    *,
    actor: Actor,
    org,
    model_name: str,
    provider: ProviderConnection,
    upstream_model: str,
    region: str = "",
    weight: int = 1,
    priority: int | None = None,
    is_active: bool = True,
    input_price_per_mtok=None,
    output_price_per_mtok=None,
    unit_price=None,
    timeout_s: int | None = None,
    deployment: Deployment | None = None,
) -> Deployment:
    """Create a deployment, or update ``deployment``; the same (model, provider, upstream) is updated."""
    # Before any query (PostgreSQL cannot compare a NUL): a model name reaches headers,
    # pages, CSV exports and emails, and no upstream model id or region holds a line break.
    model_name = name_checked(model_name, "model_name")
    upstream_model = name_checked(upstream_model, "upstream_model")
    region = name_checked(region, "region")
    if provider.org_id != org.id:
        raise ValidationError("That provider belongs to another organization.")
    # It stands in for the connection's region: the host a signed call goes to.
    problem = provider_kinds.region_problem(region) if region else None
    if problem and provider_kinds.takes_region(provider.kind):
        raise ValidationError({"region": f"region {problem}."})
    if deployment is None:
        deployment = (
            Deployment.objects.for_org(org)
            .filter(model_name=model_name, provider=provider, upstream_model=upstream_model)
            .first()
        )
    before = _deployment_summary(deployment) if deployment else None
    _model_name_distinct(org, model_name, deployment)
    if deployment is None:
        quota_checked(org, "deployments", Deployment.objects.for_org(org))
        deployment = Deployment(org=org)
        if priority is None:
            priority = Deployment.objects.for_org(org).filter(model_name=model_name).count()
    deployment.model_name, deployment.provider, deployment.upstream_model = (
        model_name,
        provider,
        upstream_model,
    )
    deployment.region, deployment.weight, deployment.is_active = region or "", weight, is_active
    config = GatewayConfig.objects.for_org(org).first()
    alias = config.auto_model_alias if config is not None and config.smart_tiers else None
    if alias is not None and model_name == alias:
        # bn- keys asking for it are smart-routed: a model of that name would never serve
        raise ValidationError(
            {
                "model_name": f"{shown(model_name)} is the alias of this organization's smart "
                "routing (bn- keys asking for it are smart-routed); pick another model name, "
                "or change the alias under Routing."
            }
        )
    if alias is not None and name_key(model_name) == name_key(alias):
        # Model names are matched exactly: "AUTO" would be a model of its own beside the
        # alias "auto", which no one should have to tell apart (the rule between models).
        raise ValidationError(
            {
                "model_name": f"{shown(model_name)} looks like {shown(alias)}, the alias of "
                "this organization's smart routing (only case, width or spacing differ; "
                f"model names are matched exactly, so only {shown(alias)} is smart-routed): "
                "pick a name that differs visibly, or change the alias under Routing."
            }
        )
    if priority is not None:
        deployment.priority = priority
    # Prices exactly as written (0.15 is 0.15, not the float 0.1499…), never negative.
    deployment.input_price_per_mtok = money(
        input_price_per_mtok, Deployment._meta.get_field("input_price_per_mtok")
    )
    deployment.output_price_per_mtok = money(
        output_price_per_mtok, Deployment._meta.get_field("output_price_per_mtok")
    )
    deployment.unit_price = money(unit_price, Deployment._meta.get_field("unit_price"))
    deployment.timeout_s = timeout_s
    deployment.full_clean()
    deployment.save()
    record_config_change(
        actor=actor,
        org=org,
        entity="deployment",
        target=deployment,
        before=before,
        after=_deployment_summary(deployment),
    )
    return deployment


DEPLOYMENT_TAKEN = (
    "This provider already serves that upstream model under that model name; "
    "edit that deployment instead."
)


@transaction.atomic
def deployment_create(*, actor: Actor, org, **fields) -> Deployment:
    """A new deployment (deployment_save's arguments). The same (model name, provider,
    upstream model) as an existing one is refused: changing one is an explicit edit
    (deployment_save with ``deployment``), never a side effect of adding one. apply_config
    keeps deployment_save's create-or-update."""
    fields.pop("deployment", None)
    for name in ("model_name", "upstream_model"):  # before the query (a NUL, a surrogate)
        fields[name] = name_checked(fields.get(name), name)
    if (
        Deployment.objects.for_org(org)
        .filter(
            model_name=fields["model_name"],
            provider=fields.get("provider"),
            upstream_model=fields["upstream_model"],
        )
        .exists()
    ):
        raise ValidationError({"upstream_model": DEPLOYMENT_TAKEN})
    return deployment_save(actor=actor, org=org, **fields)


@transaction.atomic
def deployment_delete(*, actor: Actor, deployment: Deployment) -> None:
    record_config_delete(
        actor=actor,
        org=deployment.org,
        entity="deployment",
        target=deployment,
        before=_deployment_summary(deployment),
    )


def model_cheapest_prices(org) -> dict[str, tuple[float, float]]:
    """Model name -> its cheapest (input, output) price per token among the org's active
    deployments of it (two queries, for every model at once)."""
    from . import pricing

    deployments = list(
        Deployment.objects.for_org(org)
        .filter(is_active=True, provider__is_active=True, unit_price__isnull=True)
        .only("model_name", "upstream_model", "input_price_per_mtok", "output_price_per_mtok")
    )
    catalog = pricing.catalog_prices(d.upstream_model for d in deployments)
    cheapest: dict[str, tuple[float, float]] = {}
    for d in deployments:
        inp, out = pricing.price_per_token(d, catalog)
        was = cheapest.get(d.model_name, (inp, out))
        cheapest[d.model_name] = (min(was[0], inp), min(was[1], out))
    return cheapest


def _per_mtok(price: float) -> str:
    """A price per token as dollars per million tokens, in exact short decimals: the float
    per token carries binary noise (0.1 per million is 1.0000000000000001e-07 a token,
    which multiplied back read $0.10000000000000001), so 12 significant digits are kept,
    more than any price has and fewer than the noise needs."""
    text = f"{Decimal(f'{price * 1_000_000:.12g}').normalize():f}"
    return "$" + (text.rstrip("0").rstrip(".") if "." in text else text)


def smart_tier_price_warnings(org, tiers, prices: dict | None = None) -> list[str]:
    """What a member should know about smart ``tiers`` (a policy's, or the org default's)
    before their traffic reaches the Usage page: each lower tier that costs more than the
    top tier, per input and per output token at the cheapest of its active deployments (at
    least as much for both, more for one). Its prompts then cost more than the top tier
    would have, and the savings read as a loss. A warning, not a refusal: saved all the
    same (prices change, and an org may mean it). Tiers without an active deployment are
    said apart (the Routing page's "no active deployment"). ``prices``: from
    model_cheapest_prices, when warning about many policies."""
    tiers = [t for t in tiers or [] if isinstance(t, str)]
    if len(tiers) < 2:
        return []
    prices = model_cheapest_prices(org) if prices is None else prices
    top = tiers[-1]
    if top not in prices:
        return []
    top_in, top_out = prices[top]
    warnings = []
    for tier in tiers[:-1]:
        if tier not in prices:
            continue
        inp, out = prices[tier]
        if inp >= top_in and out >= top_out and (inp, out) != (top_in, top_out):
            warnings.append(
                f"The tier {shown(tier)} costs more than the top tier {shown(top)} "
                f"({_per_mtok(inp)} in, {_per_mtok(out)} out per million tokens at its "
                f"cheapest, against {_per_mtok(top_in)} and {_per_mtok(top_out)}): the prompts "
                "it gets cost more than on the top tier, and the Usage page shows a loss. "
                "List the tiers cheapest first."
            )
    return warnings


def smart_tier_warnings(org, tiers, prices: dict | None = None) -> list[str]:
    """What a save of smart ``tiers`` answers with (REST's ``warnings``, apply_config's
    stderr, the dashboard's messages): each tier no active deployment serves (a typo, or
    every deployment of it off: the Routing page marks it, and REST and the config file
    said nothing while its prompts went another way or got a 503), then the price
    warnings (smart_tier_price_warnings). Saved all the same: a deployment may come next."""
    tiers = [t for t in tiers or [] if isinstance(t, str)]
    if len(tiers) < 2:
        return []
    from .catalog import answers_chat
    from .models import ModelCatalogEntry

    upstreams: dict[str, set] = {}
    for name, upstream in (
        Deployment.objects.for_org(org)
        .filter(is_active=True, provider__is_active=True, model_name__in=tiers)
        .values_list("model_name", "upstream_model")
    ):
        upstreams.setdefault(name, set()).add(upstream)
    modes = dict(
        ModelCatalogEntry.objects.filter(
            name__in=set(tiers).union(*upstreams.values())
        ).values_list("name", "mode")
    )
    out = []
    names = None
    for tier in dict.fromkeys(tiers):
        if tier not in upstreams:
            if names is None:  # the org's model names, once, only when a tier is unserved
                names = set(Deployment.objects.for_org(org).values_list("model_name", flat=True))
            like = look_alike(tier, names)
            out.append(
                f"The tier {shown(tier)} has no active deployment (no deployment of this "
                "organization is named so, or every one of them or its provider is off): "
                "prompts scored for it go to another tier, or get a 503 when no tier can "
                "serve them. "
                + (
                    f"It looks like the model {shown(like)} (only case, width, spacing or a "
                    "look-alike letter differ; tiers are matched by their exact name): write "
                    "it as its deployments name it."
                    if like
                    else "Add a deployment of that name, or correct the tier's name."
                )
            )
        elif not any(answers_chat(tier, u, modes) for u in upstreams[tier]):
            # As the Playground leaves such a model out: by the catalog's mode, else by name.
            what = ", ".join(
                f"{shown(u)} ({(modes.get(u) or modes.get(tier) or 'embedding').replace('_', ' ')})"
                for u in sorted(upstreams[tier])
            )
            out.append(
                f"The tier {shown(tier)} is served by {what}, not a chat model: the chat "
                "requests smart routing sends it would be refused upstream. A tier is a "
                "chat model's name."
            )
    return out + smart_tier_price_warnings(org, tiers, prices)


GATEWAY_CONFIG_FIELDS = (
    "default_strategy",
    "enabled_providers",
    "fallback_models",
    "org_rpm_limit",
    "org_tpm_limit",
    "default_key_rpm",
    "default_key_tpm",
    "request_timeout_s",
    "smart_tiers",
    "smart",
    "auto_model_alias",
    "cors_origins",
)
CORS_ORIGINS_MAX = 50
_ORIGIN = re.compile(
    r"^(https?)://"
    r"([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
    r"|\[[0-9a-f:.]+\])"
    r"(?::([0-9]{1,5}))?"
)


def cors_origins_checked(values) -> list[str]:
    """The origins as browsers send them (lower case, no default port), or a
    ValidationError naming the first bad one. Each is scheme://host[:port] (http or
    https; no path, user, query or wildcard), or `*` alone: any origin."""
    if not isinstance(values, list):
        raise ValidationError({"cors_origins": "cors_origins must be a list of origins."})
    if len(values) > CORS_ORIGINS_MAX:
        raise ValidationError({"cors_origins": f"At most {CORS_ORIGINS_MAX} origins."})
    out = []
    for value in values:
        if not isinstance(value, str):
            raise ValidationError({"cors_origins": "Each origin must be a string."})
        origin = value.strip(" ").lower()
        if origin == "*":
            out.append(origin)
            continue
        match = _ORIGIN.fullmatch(origin)
        port = match and match.group(3)
        if not match or (port and not 0 < int(port) < 65536):
            shown = value[:100].encode("unicode_escape").decode()
            raise ValidationError(
                {
                    "cors_origins": f"'{shown}' is not an origin: write scheme://host[:port] "
                    "(http or https, no path and no trailing slash, no wildcard), e.g. "
                    "https://app.example.com, or * for any origin."
                }
            )
        scheme, host = match.group(1), match.group(2)
        default = {"http": "80", "https": "443"}[scheme]
        port = str(int(port)) if port else None
        origin = f"{scheme}://{host}" + (f":{port}" if port and port != default else "")
        if origin not in out:
            out.append(origin)
    if "*" in out and len(out) > 1:
        raise ValidationError(
            {"cors_origins": "* allows every origin: list it alone, or list origins."}
        )
    return out


ALIAS_EMPTY = "The alias of smart routing cannot be empty: name the model bn- keys ask for."


def smart_alias(org) -> str | None:
    """The alias bn- keys of ``org`` ask for to be smart-routed, while its default smart
    routing is on (smart_tiers set), else None: a name no model may take."""
    row = GatewayConfig.objects.filter(org=org).values_list("auto_model_alias", "smart_tiers")
    alias, tiers = row.first() or (None, None)
    return alias if tiers else None


def _smart_checked(config: GatewayConfig, saved=None) -> None:
    """The org's default smart routing: tiers are model names, the alias is not a model."""
    tiers = config.smart_tiers
    if not isinstance(tiers, list) or not all(isinstance(t, str) and t for t in tiers):
        raise ValidationError({"smart_tiers": "smart_tiers must be a list of model names."})
    alias = (config.auto_model_alias or "").strip()
    if not alias:
        raise ValidationError({"auto_model_alias": ALIAS_EMPTY})
    config.auto_model_alias = alias
    if not tiers:
        if config.smart:
            raise ValidationError({"smart": "Set smart_tiers first: the settings need tiers."})
        return  # off: the alias means nothing, a model of its name is served as usual
    models = set(Deployment.objects.for_org(config.org).values_list("model_name", flat=True))
    # A routing policy's model too: no deployment could take it, so it would never serve.
    policies = {}
    for name, listed in RoutingPolicy.objects.for_org(config.org).values_list(
        "name", "model_names"
    ):
        for m in listed if isinstance(listed, list) else []:
            policies.setdefault(m, name)
    names = [*tiers, *models, *policies]
    model = alias if alias in names else look_alike(alias, names)
    if model is not None:
        # Say which name it meets: a tier need not be any deployment's name (yet).
        if model in models:
            what = "a deployment's public name"
        elif model in tiers:
            what = "one of the organization's smart tiers"
        else:
            what = f"a model of the routing policy {shown(policies[model])}"
        said = (
            f"{shown(alias)} is already {what}"
            if model == alias
            else f"{shown(alias)} looks like {shown(model)}, {what}"
        )
        raise ValidationError(
            {"auto_model_alias": f"{said}; pick an alias that no model or tier is named."}
        )
    config.smart = governance_services.smart_checked(
        config.smart or {}, tiers, True, saved, tiers_field="smart_tiers", org=config.org
    )


def _names_checked(field: str, names) -> list[str]:
    """A list of names (providers, models), as every way in must give it (core.text)."""
    return names_checked(names, field)


def hold_gateway_config(org) -> GatewayConfig | None:
    """Lock ``org``'s gateway settings until the transaction ends and return them (None
    while it has no settings row): one writer at a time, in any process, so a check of what
    is saved (the dashboard's stale-form check) and the save after it see no other save in
    between. The org's row is the lock (a settings row may not exist yet), taken FOR NO KEY
    UPDATE: the rows that refer to the org (an audit row's deferred foreign-key check) do not
    wait for it. (SQLite's IMMEDIATE transactions already let one writer in at a time.)"""
    type(org).objects.select_for_update(no_key=True).filter(pk=org.pk).values_list("pk").first()
    return GatewayConfig.objects.filter(org=org).first()


@transaction.atomic
def gateway_config_set(*, actor: Actor, org, **fields) -> GatewayConfig:
    hold_gateway_config(org)
    unknown = set(fields) - set(GATEWAY_CONFIG_FIELDS)
    if unknown:
        raise ValidationError(f"Unknown gateway setting(s): {', '.join(sorted(unknown))}.")
    if "default_strategy" in fields:
        problem = dataplane_strategies.error_for(fields["default_strategy"])
        if problem:
            raise ValidationError({"default_strategy": problem})
        if fields["default_strategy"] == "smart":
            # The alias bn- keys would ask for: the one sent, else the org's (not "auto").
            saved = GatewayConfig.objects.filter(org=org).values_list("auto_model_alias", flat=True)
            alias = fields.get("auto_model_alias")
            if not isinstance(alias, str) or not alias.strip():
                alias = saved.first() or "auto"
            raise ValidationError(
                {
                    "default_strategy": "The default strategy orders one model's deployments; "
                    "for smart routing set smart_tiers (bn- keys then ask for the model "
                    f"{shown(alias.strip())})."
                }
            )
    if "cors_origins" in fields:
        fields["cors_origins"] = cors_origins_checked(fields["cors_origins"])
    if "auto_model_alias" in fields:
        if not isinstance(fields["auto_model_alias"], str | None):
            raise ValidationError(
                {"auto_model_alias": "The alias of smart routing is a name (text)."}
            )
        fields["auto_model_alias"] = name_checked(fields["auto_model_alias"], "auto_model_alias")
        if not fields["auto_model_alias"]:  # said before full_clean's "cannot be blank"
            raise ValidationError({"auto_model_alias": ALIAS_EMPTY})
    for name in ("enabled_providers", "fallback_models", "smart_tiers"):
        if name in fields:
            fields[name] = _names_checked(name, fields[name])
    if "smart_tiers" in fields and not fields["smart_tiers"] and "smart" not in fields:
        fields["smart"] = {}  # emptying the tiers turns smart routing off, settings and all
    config, _ = GatewayConfig.objects.get_or_create(org=org)
    before = {f: getattr(config, f) for f in GATEWAY_CONFIG_FIELDS}
    for name, value in fields.items():
        setattr(config, name, value)
    # smart is checked by its own rules first, which say what is wrong in its words (a date
    # read from a file for aggressiveness was "smart: Value must be valid JSON.").
    config.full_clean(exclude=["smart"])
    _smart_checked(config, before["smart"])
    config.full_clean()
    for name in ("org_rpm_limit", "org_tpm_limit", "default_key_rpm", "default_key_tpm"):
        if getattr(config, name) == 0:  # 0 would read as "no limit" to the gateway
            raise ValidationError(
                {name: f"{name}: must be at least 1; leave it empty for no limit."}
            )
    # The org's default key limit is the ceiling of its keys; the tier's is the ceiling of it.
    ceiling = key_limit_ceilings(org, GatewayConfig(org=org))["rpm"]
    _limit_checked("default_key_rpm", "rpm", config.default_key_rpm, ceiling)
    config.save()
    after = {f: getattr(config, f) for f in GATEWAY_CONFIG_FIELDS}
    record_config_change(
        actor=actor, org=org, entity="gateway_config", target=config, before=before, after=after
    )
    return config


def provider_test(*, provider: ProviderConnection) -> tuple[bool, str]:
    """Probe the provider (_provider_probe) and keep the result: the Overview's health
    shows the last test next to recent traffic."""
    ok, detail = _provider_probe(provider)
    ProviderConnection.objects.filter(pk=provider.pk).update(
        last_test_at=timezone.now(), last_test_ok=ok, last_test_message=detail[:300]
    )
    return ok, detail


def _provider_probe(provider: ProviderConnection) -> tuple[bool, str]:
    """Send the kind's probe (provider_kinds: a 1-token chat) to one of the provider's
    deployments; (ok, what happened).

    Goes straight to the provider (not through /v1): no usage row, no limits. Messages
    never include credentials."""
    import time

    from asgiref.sync import async_to_sync

    from .dataplane.upstream import UNREACHABLE, UpstreamError, Upstreams
    from .runtime import network_policy
    from .snapshot_builder import deployment_info

    kind = provider_kinds.get(provider.kind)
    if kind is None:
        return False, provider_kinds.unknown(provider.kind)
    deployment = provider.deployments.filter(is_active=True).order_by("priority").first()
    if deployment is None:
        return (
            False,
            "Add a deployment first: the test sends a 1-token request to one of its models.",
        )
    try:
        dep = deployment_info(deployment)
    except CredentialsUnreadable as exc:
        return False, str(exc)
    # The same adapter, credentials rule and network policy as /v1 would use.
    upstreams = Upstreams(
        passthrough=django_settings.GATEWAY_PASSTHROUGH,
        network=network_policy(),
        ambient_credentials=django_settings.PROVIDER_AMBIENT_CREDENTIALS,
    )

    async def ping():
        adapter = upstreams.for_deployment(dep)
        try:
            return await adapter.call(kind.probe.endpoint, dep, kind.probe.request(), 15.0)
        finally:
            await upstreams.http.close_loop_session()

    started = time.perf_counter()
    try:
        async_to_sync(ping)()
    except UpstreamError as exc:
        if exc.status is None:
            # Refused, timed out, no DNS, bad TLS, not HTTP, or an address the policy
            # refuses: one answer for all, or this button is a port scanner.
            return False, f"{dep.upstream_model} failed: {UNREACHABLE}."
        return False, f"{dep.upstream_model} failed: HTTP {exc.status}: {exc.detail or exc}"
    return (
        True,
        f"{dep.upstream_model} answered in {(time.perf_counter() - started) * 1000:.0f} ms.",
    )
