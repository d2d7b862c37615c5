"""Writes to orgs, users, memberships, teams and invitations. Each one audits itself."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.text import slugify

from core.config_version import ORG, ORG_ONLY, config_version_bump
from core.text import distinct_checked, name_checked
from orgs.audit import Actor, audit_record, record_config_change

from .access import members_changed
from .models import (
    Invitation,
    Membership,
    Organization,
    PersonalAccessToken,
    Role,
    SSOConfig,
    Team,
    Tier,
    TierLimit,
    User,
    hash_token,
)


def _org_summary(org):
    return {
        "slug": org.slug,
        "name": org.name,
        "tier": org.tier,
        "deployment_mode": org.deployment_mode,
    }


@transaction.atomic
def org_create(
    *,
    actor: Actor,
    name: str,
    slug: str = "",
    tier: str = "free",
    deployment_mode: str = "shared",
    owner: User | None = None,
) -> Organization:
    name = name_checked(name)
    org = Organization(
        name=name, slug=slug or slugify(name), tier=tier, deployment_mode=deployment_mode
    )
    org.full_clean()
    org.save()
    audit_record(actor=actor, org=org, action="org.create", target=org, after=_org_summary(org))
    config_version_bump(ORG, org_id=org.id)
    if owner is not None:
        membership_add(actor=actor, org=org, user=owner, role=Role.ADMIN)
    return org


@transaction.atomic
def org_update(*, actor: Actor, org: Organization, **fields) -> Organization:
    before = _org_summary(org)
    for name, value in fields.items():
        if name not in ("name", "tier", "deployment_mode"):
            raise ValidationError(f"{name} cannot be changed here.")
        if name == "name":
            value = name_checked(value)
        setattr(org, name, value)
    # Back on the shared gateway, something must serve the org's keys.
    vpc_only_ended = org.vpc_only and org.deployment_mode != Organization.DeploymentMode.VPC
    if vpc_only_ended:
        org.vpc_only = False
    org.full_clean()
    org.save()
    after = _org_summary(org)
    if vpc_only_ended:
        _audit_vpc_only(actor, org)
    if after != before:
        audit_record(
            actor=actor, org=org, action="org.update", target=org, before=before, after=after
        )
    if after != before or vpc_only_ended:
        # name, tier and deployment mode are the org's settings; no key field reads them
        config_version_bump(ORG_ONLY, org_id=org.id)
    return org


@transaction.atomic
def org_vpc_only_set(*, actor: Actor, org: Organization, vpc_only: bool) -> Organization:
    """Serve the org's keys only through its VPC agents (the shared gateway answers them
    403 vpc_only), or on the shared gateway too again. Only in VPC mode."""
    if not isinstance(vpc_only, bool):
        raise ValidationError({"vpc_only": "Must be true or false."})
    org = Organization.objects.select_for_update().get(pk=org.pk)
    if org.vpc_only == vpc_only:
        return org
    org.vpc_only = vpc_only
    org.clean()
    org.save(update_fields=["vpc_only"])
    _audit_vpc_only(actor, org)
    config_version_bump(ORG_ONLY, org_id=org.id)
    return org


def _audit_vpc_only(actor: Actor, org: Organization) -> None:
    audit_record(
        actor=actor,
        org=org,
        action="org.vpc_only",
        target=org,
        before={"vpc_only": not org.vpc_only},
        after={"vpc_only": org.vpc_only},
    )


@transaction.atomic
def org_delete(*, actor: Actor, org: Organization) -> None:
    """Delete an org and everything it owns (keys, usage, budgets); its audit rows stay."""
    audit_record(actor=actor, org=None, action="org.delete", target=org, before=_org_summary(org))
    members_changed([org.id])
    config_version_bump(ORG, org_id=org.id)
    org.delete()


@transaction.atomic
def user_create(*, actor: Actor, email: str, password: str | None = None, name: str = "") -> User:
    email = User.objects.normalize_email(email).lower()
    if User.objects.filter(email__iexact=email).exists():
        raise ValidationError(f"A user with email {email} already exists.")
    user = User.objects.create_user(email=email, password=password, name=name_checked(name))
    audit_record(
        actor=actor,
        org=None,
        action="user.create",
        target=user,
        after={"email": user.email, "platform_admin": user.is_superuser},
    )
    return user


USER_FIELDS = ("email", "name", "is_active", "is_staff", "is_superuser", "weekly_digest")


def _refuse_if_last_admin(user: User) -> None:
    """An org must keep an admin who can sign in: refuse to delete, deactivate or take the
    password of a user who is the only active admin of some org, or the break-glass owner
    of an org that requires SSO."""
    for membership in user.memberships.select_related("org"):
        if _last_admin(membership, active_only=True):
            raise ValidationError(
                f"{user.email} is the only admin of {membership.org.name}; "
                "make someone else an admin first."
            )
    config = (
        SSOConfig.objects.filter(break_glass_user=user, sso_required=True)
        .select_related("org")
        .first()
    )
    if config is not None:
        # Its members sign in through the IdP only: the break-glass owner is the way in
        # when the IdP fails (docs/sso.md).
        raise ValidationError(
            f"{user.email} is the break-glass owner of {config.org.name}, which requires "
            "single sign-on; name another break-glass owner in its SSO settings first."
        )


@transaction.atomic
def user_update(*, actor: Actor, user: User, **fields) -> User:
    """Change a user's profile, whether they may sign in, or their platform-admin rights."""
    unknown = set(fields) - set(USER_FIELDS)
    if unknown:
        raise ValidationError(f"{', '.join(sorted(unknown))} cannot be changed here.")
    if "email" in fields:
        fields["email"] = User.objects.normalize_email(fields["email"]).lower()
        if User.objects.filter(email__iexact=fields["email"]).exclude(pk=user.pk).exists():
            raise ValidationError(f"A user with email {fields['email']} already exists.")
    if "name" in fields:  # shown beside their email on Team pages and in audit rows
        fields["name"] = name_checked(fields["name"])
    if user.is_active and "is_active" in fields and not fields["is_active"]:
        _refuse_if_last_admin(user)
    before = {f: getattr(user, f) for f in fields}
    for name, value in fields.items():
        setattr(user, name, value)
    user.full_clean(exclude=["password"])
    user.save()
    after = {f: getattr(user, f) for f in fields}
    changed = [f for f in fields if before[f] != after[f]]
    if changed:
        audit_record(
            actor=actor,
            org=None,
            action="user.update",
            target=user,
            before={f: before[f] for f in changed},
            after={f: after[f] for f in changed},
        )
    if "is_active" in changed:
        members_changed(user.memberships.values_list("org_id", flat=True))
    return user


@transaction.atomic
def user_set_password(*, actor: Actor, user: User, password: str | None) -> User:
    """Set a user's password (None: no password sign-in). Their other sessions end, and
    their open live-tail sockets close."""
    if password is None:
        if user.has_usable_password():
            _refuse_if_last_admin(user)
        user.set_unusable_password()
    else:
        user.set_password(password)
    user.save(update_fields=["password"])
    audit_record(
        actor=actor,
        org=None,
        action="user.password_set",
        target=user,
        after={"password_sign_in": password is not None},
    )
    members_changed(user.memberships.values_list("org_id", flat=True))
    return user


@transaction.atomic
def user_delete(*, actor: Actor, user: User) -> None:
    _refuse_if_last_admin(user)
    memberships = list(user.memberships.select_related("org"))
    audit_record(
        actor=actor,
        org=None,
        action="user.delete",
        target=user,
        before={"email": user.email, "orgs": sorted(m.org.slug for m in memberships)},
    )
    members_changed(m.org_id for m in memberships)
    user.delete()


def user_sync_platform_admin(*, user: User) -> None:
    """Apply ADMIN_EMAILS at login: grant, or take back rights the list once gave."""
    with transaction.atomic():
        before = user.is_superuser
        if user.apply_platform_admin_list():
            user.save(update_fields=["is_staff", "is_superuser", "admin_from_env"])
            audit_record(
                actor=Actor(via="ADMIN_EMAILS"),
                org=None,
                action="user.platform_admin." + ("grant" if user.is_superuser else "revoke"),
                target=user,
                before={"platform_admin": before},
                after={"platform_admin": user.is_superuser},
            )


@transaction.atomic
def membership_add(
    *,
    actor: Actor,
    org: Organization,
    user: User,
    role: str = Role.MEMBER,
    team: Team | None = None,
) -> Membership:
    if team is not None and team.org_id != org.id:
        raise ValidationError("That team belongs to another organization.")
    membership, created = Membership.objects.get_or_create(
        org=org, user=user, defaults={"role": role, "team": team}
    )
    if not created:
        return membership_set_role(actor=actor, membership=membership, role=role, team=team)
    audit_record(
        actor=actor,
        org=org,
        action="membership.add",
        target=membership,
        after={"user": user.email, "role": role, "team": team.name if team else None},
    )
    members_changed([org.id])
    return membership


def _last_admin(membership: Membership, *, active_only: bool = False) -> bool:
    """Whether no other admin is left in the org (with active_only, no other admin who can
    still sign in: a deactivated admin does not keep an org running)."""
    if membership.role != Role.ADMIN:
        return False
    # The org's admin rows stay locked until the caller's transaction ends, so two demotions
    # at once cannot both see "another admin is left" (callers are atomic).
    admins = (
        Membership.objects.for_org(membership.org)
        .filter(role=Role.ADMIN)
        .order_by("pk")
        .select_for_update(of=("self",))
        .values_list("pk", "user__is_active")
    )
    return all(pk == membership.pk or (active_only and not active) for pk, active in admins)


def _refuse_if_keeps_no_admin(membership: Membership) -> None:
    """Refuse to demote or remove an org's last admin, its last admin who can sign in (an
    active user: beside deactivated admins only, the org would be left with none), or the
    admin its SSO settings name as break-glass owner."""
    if _last_admin(membership):
        raise ValidationError("An organization must keep at least one admin.")
    if membership.user.is_active and _last_admin(membership, active_only=True):
        raise ValidationError(
            "An organization must keep an admin who can sign in: its other admins are "
            "deactivated. Make someone else an admin first."
        )
    if (
        membership.role == Role.ADMIN
        and SSOConfig.objects.filter(
            org_id=membership.org_id, break_glass_user_id=membership.user_id
        ).exists()
    ):
        # docs/sso.md: the break-glass owner is an org admin named in the SSO settings,
        # who signs in with a password when the IdP cannot.
        raise ValidationError(
            f"{membership.user.email} is the break-glass owner of {membership.org.name}'s "
            "single sign-on; name another break-glass owner in the SSO settings first."
        )


@transaction.atomic
def membership_set_role(
    *, actor: Actor, membership: Membership, role: str, team: Team | None = None
) -> Membership:
    if role not in Role.values:
        raise ValidationError(f"Unknown role {role!r}; use admin, member or viewer.")
    if role != Role.ADMIN:
        _refuse_if_keeps_no_admin(membership)
    if team is not None and team.org_id != membership.org_id:
        raise ValidationError("That team belongs to another organization.")
    before = {"role": membership.role, "team": membership.team.name if membership.team else None}
    membership.role = role
    membership.team = team
    membership.save(update_fields=["role", "team"])
    after = {"role": role, "team": team.name if team else None}
    if before != after:
        audit_record(
            actor=actor,
            org=membership.org,
            action="membership.update",
            target=membership,
            before=before,
            after=after,
        )
        if before["role"] != role:
            members_changed([membership.org_id])
    return membership


@transaction.atomic
def membership_remove(*, actor: Actor, membership: Membership) -> None:
    _refuse_if_keeps_no_admin(membership)
    audit_record(
        actor=actor,
        org=membership.org,
        action="membership.remove",
        target=membership,
        before={"user": membership.user.email, "role": membership.role},
    )
    members_changed([membership.org_id])
    # Their personal access tokens for this org end with the membership: left active, one
    # would work again (with the new role's rights) the day the person rejoins.
    tokens = PersonalAccessToken.objects.filter(
        org_id=membership.org_id, user_id=membership.user_id, revoked_at__isnull=True
    ).select_related("org")
    for token in tokens:
        pat_revoke(actor=actor, token=token)
    membership.delete()


def _team_name_distinct(team: Team) -> None:
    """Keys, members and budgets are put on a team by picking its name: "Research" beside
    "research" (or a full-width "Ｒesearch") is refused like the same name twice."""
    others = set(Team.objects.for_org(team.org).exclude(pk=team.pk).values_list("name", flat=True))
    if team.name in others:
        raise ValidationError({"name": TEAM_NAME_TAKEN})
    distinct_checked(team.name, others, what="team")


TEAM_NAME_TAKEN = "A team with this name exists in this organization."


@transaction.atomic
def team_create(*, actor: Actor, org: Organization, name: str, description: str = "") -> Team:
    # The description is shown beside the name: it follows the rule of names too.
    team = Team(
        org=org, name=name_checked(name), description=name_checked(description, "description")
    )
    _team_name_distinct(team)
    team.full_clean()
    team.save()
    audit_record(actor=actor, org=org, action="team.create", target=team, after={"name": team.name})
    return team


@transaction.atomic
def team_update(*, actor: Actor, team: Team, name: str, description: str = "") -> Team:
    before = {"name": team.name, "description": team.description}
    team.name = name_checked(name)
    team.description = name_checked(description, "description")
    _team_name_distinct(team)
    team.full_clean()
    team.save()
    after = {"name": team.name, "description": team.description}
    if after != before:
        audit_record(
            actor=actor, org=team.org, action="team.update", target=team, before=before, after=after
        )
    return team


@transaction.atomic
def team_delete(*, actor: Actor, team: Team) -> None:
    # Budgets live in billing (a higher layer): reach them through the reverse relation.
    if team.budgets.exists():
        raise ValidationError(
            f"Team {team.name} still has budgets; delete or move its budgets first."
        )
    audit_record(
        actor=actor, org=team.org, action="team.delete", target=team, before={"name": team.name}
    )
    config_version_bump(ORG, org_id=team.org_id)  # its keys lose their team
    team.delete()


@transaction.atomic
def invitation_create(
    *,
    actor: Actor,
    org: Organization,
    email: str,
    role: str = Role.MEMBER,
    team: Team | None = None,
    base_url: str | None = None,
) -> tuple[Invitation, str]:
    """Create an invitation and email its link; returns (invitation, raw token)."""
    email = User.objects.normalize_email(email).lower()
    if role not in Role.values:
        raise ValidationError(f"Unknown role {role!r}; use admin, member or viewer.")
    if Membership.objects.for_org(org).filter(user__email__iexact=email).exists():
        raise ValidationError(f"{email} is already a member of {org.name}.")
    raw = Invitation.new_token()
    invitation = Invitation.objects.create(
        org=org,
        email=email,
        role=role,
        team=team,
        token_hash=hash_token(raw),
        invited_by=actor.user,
        expires_at=Invitation.default_expiry(),
    )
    audit_record(
        actor=actor,
        org=org,
        action="invitation.create",
        target=invitation,
        after={"email": email, "role": role, "team": team.name if team else None},
    )
    link = f"{(base_url or settings.PUBLIC_BASE_URL).rstrip('/')}/invite/{raw}/"
    from core.tasks import enqueue

    from .tasks import invitation_send

    # The raw token travels only inside the task message and the email itself.
    transaction.on_commit(lambda: enqueue(invitation_send, invitation.id, link, actor.label))
    return invitation, raw


class InvitationError(Exception):
    """An invitation link that cannot be used; the message is shown to the visitor."""


def invitation_lookup(raw: str) -> Invitation:
    invitation = Invitation.objects.select_related("org").filter(token_hash=hash_token(raw)).first()
    if invitation is None:
        raise InvitationError(
            "This invitation link is not valid. Ask an admin of the organization for a new one."
        )
    if invitation.accepted_at:
        raise InvitationError(
            "This invitation has already been used. Each invitation link works once."
        )
    if invitation.revoked_at:
        raise InvitationError("This invitation was revoked by an admin of the organization.")
    if invitation.expires_at <= timezone.now():
        raise InvitationError(
            "This invitation has expired. Ask an admin of the organization for a new one."
        )
    return invitation


@transaction.atomic
def invitation_accept(
    *,
    actor: Actor,
    raw_token: str,
    user: User | None = None,
    password: str | None = None,
    name: str = "",
) -> Membership:
    """Accept an invitation as the signed-in user, or by creating the invited user."""
    # Lock the row so two clicks on the same link cannot both succeed.
    invitation = invitation_lookup(raw_token)
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.accepted_at:
        raise InvitationError(
            "This invitation has already been used. Each invitation link works once."
        )
    if user is None:
        user = User.objects.filter(email__iexact=invitation.email).first()
        if user is None:
            user = user_create(actor=actor, email=invitation.email, password=password, name=name)
        elif password is not None:
            raise InvitationError(
                "An account with this email exists; sign in first, then open the link again."
            )
    elif user.email.lower() != invitation.email.lower():
        raise InvitationError(
            f"This invitation is for {invitation.email}, but you are signed in as {user.email}."
        )
    if Membership.objects.for_org(invitation.org).filter(user=user).exists():
        # An invitation is for joining. Accepted by a member it would set its role: a
        # second pending link could undo an admin's demotion of its holder.
        raise InvitationError(
            f"You are already a member of {invitation.org.name}; this invitation changes "
            "nothing. Ask an admin of the organization to change your role."
        )
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    membership = membership_add(
        actor=Actor(user=user, ip=actor.ip, via=actor.via),
        org=invitation.org,
        user=user,
        role=invitation.role,
        team=invitation.team,
    )
    audit_record(
        actor=Actor(user=user, ip=actor.ip),
        org=invitation.org,
        action="invitation.accept",
        target=invitation,
        after={"email": invitation.email, "role": invitation.role},
    )
    return membership


@transaction.atomic
def invitation_revoke(*, actor: Actor, invitation: Invitation) -> None:
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    audit_record(
        actor=actor,
        org=invitation.org,
        action="invitation.revoke",
        target=invitation,
        before={"email": invitation.email},
    )


@transaction.atomic
def invitation_resend(
    *, actor: Actor, invitation: Invitation, base_url: str | None = None
) -> tuple[Invitation, str]:
    """Email a pending (or expired) invitation again with a new link and a new expiry;
    returns (invitation, raw token). Only the token's hash is stored, so the old link
    cannot be sent again: it stops working, and the new one is the only one that works.
    An accepted or revoked invitation is not resent (invite the person again)."""
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.accepted_at or invitation.revoked_at:
        raise ValidationError(
            f"The invitation to {invitation.email} was {invitation.status}; "
            "send a new invitation instead."
        )
    raw = Invitation.new_token()
    before = {"email": invitation.email, "expires_at": invitation.expires_at.isoformat()}
    invitation.token_hash = hash_token(raw)
    invitation.expires_at = Invitation.default_expiry()
    invitation.save(update_fields=["token_hash", "expires_at"])
    audit_record(
        actor=actor,
        org=invitation.org,
        action="invitation.resend",
        target=invitation,
        before=before,
        after={"email": invitation.email, "expires_at": invitation.expires_at.isoformat()},
    )
    link = f"{(base_url or settings.PUBLIC_BASE_URL).rstrip('/')}/invite/{raw}/"
    from core.tasks import enqueue

    from .tasks import invitation_send

    transaction.on_commit(lambda: enqueue(invitation_send, invitation.id, link, actor.label))
    return invitation, raw


@transaction.atomic
def pat_create(
    *, actor: Actor, user: User, org: Organization, name: str
) -> tuple[PersonalAccessToken, str]:
    """A personal access token for the REST API; returns (token, raw). Shown once."""
    from core import keys

    if not Membership.objects.filter(org=org, user=user).exists():
        raise ValidationError("Tokens are only for members of the organization.")
    raw = keys.generate("pat-")
    prefix, last4 = keys.display(raw)
    token = PersonalAccessToken(
        user=user,
        org=org,
        name=name_checked(name) or "token",
        token_hash=hash_token(raw),
        prefix=prefix,
        last4=last4,
    )
    token.full_clean()  # the name's length: the dashboard passes it unchecked
    token.save()
    audit_record(
        actor=actor, org=org, action="token.create", target=token, after={"name": token.name}
    )
    return token, raw


@transaction.atomic
def pat_revoke(*, actor: Actor, token: PersonalAccessToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        # Who may read the org changed: a live tail opened with this token closes now,
        # not at its next periodic re-check.
        members_changed([token.org_id])
        audit_record(
            actor=actor,
            org=token.org,
            action="token.revoke",
            target=token,
            before={"name": token.name},
        )


def _tier_summary(limit) -> dict:
    cap = limit.monthly_spend_cap_usd
    return {
        "tier": limit.tier,
        "monthly_requests": limit.monthly_requests,
        "monthly_spend_cap_usd": str(cap) if cap is not None else None,
        "key_rpm": limit.key_rpm,
        **{name: getattr(limit, name) for name, _ in QUOTAS.values()},
        "learned_routing": limit.learned_routing,
    }


# What an org holds, by what a tier limits: (TierLimit field, what the message calls them).
QUOTAS = {
    "keys": ("max_keys", "active API keys"),
    "providers": ("max_providers", "provider connections"),
    "deployments": ("max_deployments", "deployments"),
}
_KEEP = object()


def quota_checked(org: Organization, what: str, held) -> None:
    """Refuse one more of ``what`` (a QUOTAS name) when the org's tier allows no more than
    ``held`` (a queryset of what the org has now). Called in the transaction that adds it:
    the org's row is written first (an UPDATE that changes nothing: a row lock on
    PostgreSQL, the write lock on SQLite, where SELECT … FOR UPDATE is no lock), so two
    requests at once cannot both take the last place."""
    field, label = QUOTAS[what]
    limit = TierLimit.objects.filter(tier=org.tier).values_list(field, flat=True).first()
    if limit is None:
        return
    Organization.objects.filter(pk=org.pk).update(id=F("id"))
    if held.count() >= limit:
        tier = Tier(org.tier).label if org.tier in Tier.values else org.tier
        raise ValidationError(
            f"The {tier} tier includes at most {limit} {label} per organization, and this "
            f"one has {limit}: remove one first, or ask a platform admin to raise the "
            "tier's limit."
        )


@transaction.atomic
def tier_limit_set(
    *,
    actor: Actor,
    tier: str,
    monthly_requests,
    monthly_spend_cap_usd,
    key_rpm,
    max_keys=_KEEP,
    max_providers=_KEEP,
    max_deployments=_KEEP,
    learned_routing=_KEEP,
):
    """What a tier includes per month, the most requests per minute one key of it may make,
    and how many keys, providers and deployments an org of it may hold (None: unlimited;
    a quota not passed is kept); every gateway enforces it with the next snapshot."""
    limit = TierLimit.objects.filter(tier=tier).first()
    before = _tier_summary(limit) if limit else None
    limit = limit or TierLimit(tier=tier)
    limit.monthly_requests, limit.monthly_spend_cap_usd = monthly_requests, monthly_spend_cap_usd
    if key_rpm is not None and key_rpm < 1:  # 0 would read as "no ceiling" to the gateway
        raise ValidationError({"key_rpm": "key_rpm: at least 1; leave it empty for none."})
    limit.key_rpm = key_rpm
    quotas = (max_keys, max_providers, max_deployments)
    for (name, _), value in zip(QUOTAS.values(), quotas, strict=True):
        if value is not _KEEP:
            setattr(limit, name, value)
    if learned_routing is not _KEEP:  # None: the tier's default (orgs.models)
        limit.learned_routing = learned_routing
    limit.full_clean()
    limit.save()
    record_config_change(
        actor=actor,
        org=None,
        entity="tier_limit",
        target=limit,
        before=before,
        after=_tier_summary(limit),
    )
    return limit
