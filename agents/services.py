"""Writes of the agents app: deployment mode, bt- tokens (create, rotate, revoke), alert
settings, and what the agent API records (agents seen, ingest batches). Each write that
matters to governance is audited in its transaction; no token ever reaches an audit row."""

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from core import keys
from core.crypto import decrypt_json, encrypt_json
from orgs.audit import Actor, audit_record
from orgs.models import Organization
from orgs.services import org_update

from .models import Agent, OrgAgentState, OrgToken, hash_org_token

PREFIX = "bt-"


def _token_create(*, actor: Actor, org, pending: bool) -> tuple[OrgToken, str]:
    raw = keys.generate(PREFIX)
    prefix, last4 = keys.display(raw)
    token = OrgToken.objects.create(
        org=org,
        token_hash=hash_org_token(raw),
        prefix=prefix,
        last4=last4,
        created_by=actor.user if getattr(actor.user, "pk", None) else None,
        # Kept (encrypted) only while agents on the old token still need to be handed it.
        pending=encrypt_json({"token": raw}) if pending else "",
    )
    return token, raw


@transaction.atomic
def vpc_enable(*, actor: Actor, org: Organization) -> str:
    """Switch the org to VPC mode and create its first bt- token (returned once)."""
    org = Organization.objects.select_for_update().get(pk=org.pk)
    if (
        org.deployment_mode == Organization.DeploymentMode.VPC
        and OrgToken.objects.for_org(org).usable().exists()
    ):
        raise ValidationError("This organization is already in VPC mode: rotate its token instead.")
    org_update(actor=actor, org=org, deployment_mode=Organization.DeploymentMode.VPC)
    OrgAgentState.objects.get_or_create(org=org)
    token, raw = _token_create(actor=actor, org=org, pending=False)
    audit_record(
        actor=actor, org=org, action="agent_token.create", target=token, after={"id": token.masked}
    )
    return raw


@transaction.atomic
def vpc_disable(*, actor: Actor, org: Organization) -> None:
    """Back to the shared gateway: every bt- token stops working at once."""
    org = Organization.objects.select_for_update().get(pk=org.pk)
    _revoke_all(actor=actor, org=org)
    org_update(actor=actor, org=org, deployment_mode=Organization.DeploymentMode.SHARED)


@transaction.atomic
def deployment_mode_set(*, actor: Actor, org: Organization, deployment_mode: str) -> Organization:
    """A config file's switch of the org's mode, by the dashboard's rules: back to the shared
    gateway revokes every org token (vpc_disable). Into VPC mode makes no token, since a file
    cannot show it once: `bonito agent token rotate` or Settings → Deployment mode does."""
    if deployment_mode == Organization.DeploymentMode.SHARED:
        vpc_disable(actor=actor, org=org)
    else:
        org_update(actor=actor, org=org, deployment_mode=deployment_mode)
        if org.deployment_mode == Organization.DeploymentMode.VPC:
            OrgAgentState.objects.get_or_create(org=org)
    return Organization.objects.get(pk=org.pk)


def _revoke_all(*, actor: Actor, org) -> int:
    now = timezone.now()
    tokens = list(OrgToken.objects.for_org(org).filter(revoked_at__isnull=True))
    for token in tokens:
        audit_record(
            actor=actor,
            org=org,
            action="agent_token.revoke",
            target=token,
            before={"id": token.masked},
        )
    OrgToken.objects.filter(pk__in=[t.pk for t in tokens]).update(revoked_at=now, pending="")
    return len(tokens)


@transaction.atomic
def org_token_rotate(*, actor: Actor, org: Organization) -> tuple[OrgToken, str]:
    """A new bt- token (returned once). The tokens in use keep working for
    AGENT_TOKEN_GRACE_HOURS or until every agent seen recently calls with the new one,
    whichever is first; meanwhile the config pull hands the new token to agents calling
    with an old one, so a rotation needs no redeploy. With no usable token (revoked), the
    new one simply replaces it."""
    org = Organization.objects.select_for_update().get(pk=org.pk)
    if org.deployment_mode != Organization.DeploymentMode.VPC:
        raise ValidationError("Switch the organization to VPC mode first.")
    now = timezone.now()
    old = list(OrgToken.objects.for_org(org).usable(now))
    token, raw = _token_create(actor=actor, org=org, pending=bool(old))
    grace = now + timedelta(hours=settings.AGENT_TOKEN_GRACE_HOURS)
    for previous in old:
        previous.replaced_by = token
        previous.grace_until = previous.grace_until or grace
        previous.pending = ""  # only the newest token is handed out
        previous.save(update_fields=["replaced_by", "grace_until", "pending"])
    audit_record(
        actor=actor,
        org=org,
        action="agent_token.rotate",
        target=token,
        before={"ids": [t.masked for t in old]},
        after={"id": token.masked, "old_valid_until": grace.isoformat() if old else None},
    )
    return token, raw


@transaction.atomic
def org_token_revoke(*, actor: Actor, org: Organization) -> int:
    """Revoke every bt- token of the org now: the agents' calls get 401 (they keep serving
    on their last config). The org stays in VPC mode; a rotation issues a new token."""
    return _revoke_all(actor=actor, org=org)


@transaction.atomic
def agent_alerts_set(*, actor: Actor, org: Organization, webhook_url: str) -> OrgAgentState:
    """Where agent outage alerts go besides the admins' email and the in-app notice."""
    from gateway.services import url_check

    webhook_url = (webhook_url or "").strip()
    longest = OrgAgentState._meta.get_field("alert_webhook_url").max_length
    if len(webhook_url) > longest:  # PostgreSQL refuses it at the write: a 500
        raise ValidationError({"webhook_url": f"A webhook URL has at most {longest} characters."})
    if webhook_url:
        url_check(webhook_url, "webhook_url")
    state, _ = OrgAgentState.objects.select_for_update().get_or_create(org=org)
    before = {"webhook": "set" if state.alert_webhook_url else "none"}
    state.alert_webhook_url = webhook_url
    state.save(update_fields=["alert_webhook_url"])
    after = {"webhook": "set" if webhook_url else "none"}  # the URL carries its secret
    if after != before or webhook_url:
        audit_record(
            actor=actor,
            org=org,
            action="agent_alerts.update",
            target=state,
            before=before,
            after=after,
        )
    return state


def rotation_token_for(token: OrgToken) -> str | None:
    """The new raw token to hand an agent still calling with ``token`` (None otherwise)."""
    if token.replaced_by_id is None:
        return None
    newest = OrgToken.objects.filter(pk=token.replaced_by_id, revoked_at__isnull=True).first()
    if newest is None or not newest.pending:
        return None
    return decrypt_json(newest.pending)["token"]


@transaction.atomic
def agent_seen(*, token: OrgToken, agent_id, version: str) -> Agent:
    """Record a call from an agent, and finish a rotation once every agent seen recently
    calls with the newest token: the old tokens stop working and the encrypted copy of
    the new one is wiped."""
    now = timezone.now()
    agent, _ = Agent.objects.get_or_create(org_id=token.org_id, agent_id=agent_id)
    agent.token = token
    agent.last_seen_at = now
    if version:
        agent.version = version[:64]
    agent.save(update_fields=["token", "last_seen_at", "version"])
    if token.last_used_at is None or now - token.last_used_at > timedelta(seconds=60):
        OrgToken.objects.filter(pk=token.pk).update(last_used_at=now)
    if token.pending and token.replaced_by_id is None:
        behind = Agent.objects.for_org(token.org_id).recent(now).exclude(token=token).exists()
        if not behind:
            _rotation_finish(token, now)
    return agent


def _rotation_finish(token: OrgToken, now) -> None:
    old = OrgToken.objects.for_org(token.org_id).filter(replaced_by=token, revoked_at__isnull=True)
    masked = [t.masked for t in old]
    old.update(revoked_at=now)
    OrgToken.objects.filter(pk=token.pk).update(pending="")
    token.pending = ""
    if masked:
        audit_record(
            actor=Actor(via="agent"),
            org=token.org,
            action="agent_token.rotation_done",
            target=token,
            before={"ids": masked},
            after={"id": token.masked},
        )


def agent_heartbeat(*, agent: Agent, beat: dict) -> None:
    """Store what an agent reports about itself (metadata only: no content ever)."""
    now = timezone.now()
    previous_at, previous_requests = agent.last_heartbeat_at, agent.requests
    requests = beat["requests"]
    if previous_at is not None and requests >= previous_requests and now > previous_at:
        agent.request_rate = (requests - previous_requests) / (now - previous_at).total_seconds()
    elif previous_at is None or requests < previous_requests:  # first beat, or a restart
        # Over at least a second: a tiny reported uptime makes no absurd (or infinite) rate.
        agent.request_rate = requests / max(beat["uptime_s"], 1.0)
    agent.hostname = beat["hostname"]
    agent.version = beat["version"] or agent.version
    agent.started_at = beat["started_at"]
    agent.uptime_s = beat["uptime_s"]
    agent.config_version = beat["config_version"]
    agent.requests, agent.errors, agent.error_rate = requests, beat["errors"], beat["error_rate"]
    agent.providers = beat["providers"]
    agent.spool = beat["spool"]
    agent.warnings = beat["warnings"]
    agent.last_heartbeat_at = agent.last_seen_at = now
    agent.save()
