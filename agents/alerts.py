"""Missed-heartbeat detection: an org whose agents have all gone quiet for more than five
minutes alerts its admins (email, in-app notice, its webhook) and the platform admins
once per outage, and sends a recovery notice once heartbeats come back."""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from billing.budgets import email_org_admins, post_webhook
from billing.models import Notification
from core.text import one_line
from orgs.models import Organization, User

from .models import Agent, AgentStatus, IngestBatch, OrgAgentState, OrgToken, status_for

log = logging.getLogger("bonito.agents.alerts")


def agent_heartbeats_check(*, now=None) -> dict:
    """Run every minute (Celery beat). Returns how many outage and recovery notices went out."""
    now = now or timezone.now()
    last = dict(
        Agent.objects.values("org_id")
        .annotate(last=Max("last_heartbeat_at"))
        .values_list("org_id", "last")
    )
    _forget_handed_tokens(now)
    _prune(now)
    sent = {"outages": 0, "recoveries": 0}
    vpc = Organization.objects.filter(deployment_mode=Organization.DeploymentMode.VPC)
    for org in vpc:
        status = status_for(last.get(org.id), now)
        if status == AgentStatus.GREY:
            continue  # no agent ever reported: nothing went down
        kind = _transition(org, status, now)
        if kind:
            sent["outages" if kind == "outage" else "recoveries"] += 1
    _deliver_pending(now)
    return sent


def _forget_handed_tokens(now) -> None:
    """A rotated-to token is kept encrypted only while an old token may still ask for it:
    once every old one is past its grace or revoked, the copy is wiped."""
    waiting = OrgToken.objects.usable(now).filter(replaced_by__isnull=False)
    OrgToken.objects.exclude(pending="").exclude(pk__in=waiting.values("replaced_by_id")).update(
        pending=""
    )


# Agents not heard from for this long leave the Agents page (a replica replaced without
# its state directory comes back under a new id).
AGENT_KEPT = timedelta(days=7)


def _prune(now) -> None:
    """Forget agents long gone, and ingest batches too old to be replayed: a batch older
    than AGENT_INGEST_MAX_AGE_DAYS holds records the ingest refuses for their age anyway."""
    Agent.objects.filter(last_seen_at__lt=now - AGENT_KEPT).delete()
    kept = timedelta(days=settings.AGENT_INGEST_MAX_AGE_DAYS + 1)
    IngestBatch.objects.filter(created_at__lt=now - kept).delete()


CHANNELS = ("email", "webhook", "platform")
# A notice whose channels still fail after this long is given up (logged each try).
NOTICE_RETRY = timedelta(hours=1)


def _transition(org, status: str, now) -> str | None:
    """Record the outage's start or end once (under a row lock: two beat runs cannot both
    decide to send); the in-app notice is written with it, the other channels are
    delivered after commit."""
    with transaction.atomic():
        OrgAgentState.objects.get_or_create(org=org)
        state = OrgAgentState.objects.select_for_update().get(org=org)
        if status == AgentStatus.RED and state.outage_since is None:
            state.outage_since, kind = now, "outage"
        elif status != AgentStatus.RED and state.outage_since is not None:
            state.outage_since, state.recovered_at, kind = None, now, "recovery"
        else:
            return None
        state.notice, state.notice_at, state.notice_pending = kind, now, list(CHANNELS)
        state.save()
        Notification.objects.create(
            org=org, message=_text(org, kind)[:500], level="error" if kind == "outage" else "info"
        )
    return kind


def _text(org, kind: str) -> str:
    if kind == "outage":
        return (
            f"The Bonito agent of {org.name} is offline: no heartbeat for more than 5 minutes."
            " It keeps serving on its last config if only the link is down; usage is spooled"
            " and arrives when it reconnects."
        )
    return f"The Bonito agent of {org.name} is back: heartbeats are arriving again."


def _deliver_pending(now) -> None:
    """Send each pending notice on the channels it has not reached; each channel on its
    own, so one failing holds back neither the others nor a later run's retry."""
    waiting = OrgAgentState.objects.exclude(notice_pending=[]).filter(
        notice_at__gte=now - NOTICE_RETRY
    )
    for org_id in waiting.values_list("org_id", flat=True):
        with transaction.atomic():
            state = (
                OrgAgentState.objects.select_for_update(skip_locked=True)
                .select_related("org")
                .filter(org_id=org_id)
                .first()
            )
            if state is None or not state.notice_pending:
                continue  # another run has it
            state.notice_pending = [c for c in state.notice_pending if not _send(state, c)]
            state.save(update_fields=["notice_pending"])


def _send(state: OrgAgentState, channel: str) -> bool:
    """True when the channel is done with (sent, or nothing to send it to)."""
    org, kind = state.org, state.notice
    text = _text(org, kind)
    subject = one_line(f"Bonito agent {'offline' if kind == 'outage' else 'recovered'}: {org.name}")
    body = f"{text}\n\n{settings.PUBLIC_BASE_URL.rstrip('/')}/o/{org.slug}/agents/"
    try:
        if channel == "email":
            email_org_admins(org, subject, body)
        elif channel == "webhook":
            icon = ":red_circle:" if kind == "outage" else ":large_green_circle:"
            post_webhook(state.alert_webhook_url, text, icon)
        else:
            platform = list(
                User.objects.filter(is_staff=True, is_active=True).values_list("email", flat=True)
            )
            _email(platform, subject, body)
    except Exception as exc:  # logged; retried by the next run
        log.warning("agent %s notice for org %s: %s failed: %r", kind, org.id, channel, exc)
        return False
    return True


def _email(recipients: list[str], subject: str, text: str) -> bool:
    from django.core.mail import send_mail

    if not recipients:
        return False
    send_mail(subject=subject, message=text + "\n", from_email=None, recipient_list=recipients)
    return True
