"""Missed-heartbeat detection: an org whose agents have all gone quiet for more than five
minutes alerts its admins (email, in-app notice, its webhook) and the platform admins
once per outage, and sends a recovery notice once heartbeats come back."""

import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from billing.budgets import email_org_admins, post_webhook
from billing.models import Notification
from core.text import one_line
from orgs.models import Organization, User

from .models import Agent, AgentStatus, OrgAgentState, OrgToken, status_for

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
    sent = {"outages": 0, "recoveries": 0}
    vpc = Organization.objects.filter(deployment_mode=Organization.DeploymentMode.VPC)
    for org in vpc:
        status = status_for(last.get(org.id), now)
        if status == AgentStatus.GREY:
            continue  # no agent ever reported: nothing went down
        kind = _transition(org, status, now)
        if kind:
            sent["outages" if kind == "outage" else "recoveries"] += 1
    return sent


def _forget_handed_tokens(now) -> None:
    """A rotated-to token is kept encrypted only while an old token may still ask for it:
    once every old one is past its grace or revoked, the copy is wiped."""
    waiting = OrgToken.objects.usable(now).filter(replaced_by__isnull=False)
    OrgToken.objects.exclude(pending="").exclude(pk__in=waiting.values("replaced_by_id")).update(
        pending=""
    )


def _transition(org, status: str, now) -> str | None:
    """Record the outage's start or end once (under a row lock: two beat runs cannot both
    send), then deliver after commit."""
    with transaction.atomic():
        OrgAgentState.objects.get_or_create(org=org)
        state = OrgAgentState.objects.select_for_update().get(org=org)
        if status == AgentStatus.RED and state.outage_since is None:
            state.outage_since, kind = now, "outage"
        elif status != AgentStatus.RED and state.outage_since is not None:
            state.outage_since, state.recovered_at, kind = None, now, "recovery"
        else:
            return None
        state.save(update_fields=["outage_since", "recovered_at"])
        text = _text(org, kind)
        Notification.objects.create(
            org=org, message=text[:500], level="error" if kind == "outage" else "info"
        )
        webhook = state.alert_webhook_url
        transaction.on_commit(lambda: _deliver(org, kind, text, webhook))
    return kind


def _text(org, kind: str) -> str:
    if kind == "outage":
        return (
            f"The Bonito agent of {org.name} is offline: no heartbeat for more than 5 minutes."
            " It keeps serving on its last config if only the link is down; usage is spooled"
            " and arrives when it reconnects."
        )
    return f"The Bonito agent of {org.name} is back: heartbeats are arriving again."


def _deliver(org, kind: str, text: str, webhook: str) -> None:
    """Each channel on its own: one failing does not hold back the others."""
    subject = one_line(f"Bonito agent {'offline' if kind == 'outage' else 'recovered'}: {org.name}")
    url = f"{settings.PUBLIC_BASE_URL.rstrip('/')}/o/{org.slug}/agents/"
    body = f"{text}\n\n{url}"
    platform = list(
        User.objects.filter(is_staff=True, is_active=True).values_list("email", flat=True)
    )
    channels = (
        ("email", lambda: email_org_admins(org, subject, body)),
        (
            "webhook",
            lambda: post_webhook(
                webhook, text, ":red_circle:" if kind == "outage" else ":large_green_circle:"
            ),
        ),
        ("platform email", lambda: _email(platform, subject, body)),
    )
    for channel, deliver in channels:
        try:
            deliver()
        except Exception as exc:  # logged; the other channels still go out
            log.warning("agent %s notice for org %s: %s failed: %r", kind, org.id, channel, exc)


def _email(recipients: list[str], subject: str, text: str) -> bool:
    from django.core.mail import send_mail

    if not recipients:
        return False
    send_mail(subject=subject, message=text + "\n", from_email=None, recipient_list=recipients)
    return True
