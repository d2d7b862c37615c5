"""VPC agents: the org's bt- tokens, the agents seen, ingest batches, and outage state."""

import hashlib
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from core import keys
from orgs.models import OrgScopedQuerySet

# An agent that called within this long counts as running: a rotation waits for it.
RECENT = timedelta(minutes=10)
# Status colours by the age of the org's newest heartbeat (the header indicator, alerts).
YELLOW_AFTER = timedelta(minutes=2)
RED_AFTER = timedelta(minutes=5)


def hash_org_token(raw: str) -> str:
    # Not KEY_HASH_SECRET: agents are handed that one (to check bn- keys locally).
    secret = hashlib.sha256(b"bonito-org-token:" + settings.SECRET_KEY.encode()).digest()
    return keys.digest(raw, secret)


class OrgTokenQuerySet(OrgScopedQuerySet):
    def usable(self, now=None):
        """Tokens an agent may call with: not revoked, and not past a rotation's grace."""
        now = now or timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(grace_until__isnull=True) | models.Q(grace_until__gt=now)
        )


class OrgToken(models.Model):
    """A bt- org token. Only its HMAC is kept; during a rotation the new token is also kept
    encrypted (``pending``) so the config pull can hand it to agents still on the old one,
    and wiped as soon as every agent seen recently calls with it."""

    org = models.ForeignKey(
        "orgs.Organization", on_delete=models.CASCADE, related_name="agent_tokens"
    )
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=12, editable=False)
    last4 = models.CharField(max_length=4, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Set on the old token when a new one replaces it: it keeps working until then, or
    # until every agent has called with the new one (then revoked_at is set).
    grace_until = models.DateTimeField(null=True, blank=True)
    replaced_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    pending = models.TextField(blank=True, editable=False)  # Fernet of the raw token
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = OrgTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.prefix}…{self.last4}"

    @property
    def masked(self) -> str:
        return f"{self.prefix}…{self.last4}"


class AgentQuerySet(OrgScopedQuerySet):
    def recent(self, now=None):
        now = now or timezone.now()
        return self.filter(last_seen_at__gte=now - RECENT)


class Agent(models.Model):
    """One agent process (replica) of an org, as it last reported itself."""

    org = models.ForeignKey("orgs.Organization", on_delete=models.CASCADE, related_name="agents")
    agent_id = models.UUIDField()
    token = models.ForeignKey(
        OrgToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    hostname = models.CharField(max_length=255, blank=True)
    version = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    uptime_s = models.FloatField(default=0)
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)  # any call
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    config_version = models.BigIntegerField(null=True, blank=True)  # what it reports running
    requests = models.BigIntegerField(default=0)  # since it started
    errors = models.BigIntegerField(default=0)
    error_rate = models.FloatField(default=0)
    request_rate = models.FloatField(default=0)  # per second, between its last two heartbeats
    providers = models.JSONField(default=list, blank=True)
    spool = models.JSONField(default=dict, blank=True)
    warnings = models.JSONField(default=list, blank=True)

    objects = AgentQuerySet.as_manager()

    class Meta:
        ordering = ["hostname", "agent_id"]
        constraints = [
            models.UniqueConstraint(fields=["org", "agent_id"], name="agent_unique_per_org")
        ]

    def __str__(self):
        return f"{self.hostname or self.agent_id} ({self.version or '?'})"


class IngestBatch(models.Model):
    """An ingest batch already answered: a replay gets the same answer and writes nothing."""

    org = models.ForeignKey("orgs.Organization", on_delete=models.CASCADE, related_name="+")
    batch_id = models.UUIDField()
    payload_sha256 = models.CharField(max_length=64)
    answer = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["org", "batch_id"], name="ingest_batch_unique_per_org")
        ]

    def __str__(self):
        return str(self.batch_id)


class AgentStatus(models.TextChoices):
    GREEN = "green", "Connected"
    YELLOW = "yellow", "Delayed"
    RED = "red", "Offline"
    GREY = "grey", "Never connected"


class OrgAgentState(models.Model):
    """Per VPC org: where its alerts go, and the outage being alerted (once per outage)."""

    org = models.OneToOneField(
        "orgs.Organization", on_delete=models.CASCADE, related_name="agent_state"
    )
    alert_webhook_url = models.URLField(
        max_length=1000, blank=True, help_text="Slack-compatible incoming webhook"
    )
    outage_since = models.DateTimeField(null=True, blank=True)  # set when the red alert went out
    recovered_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"agent state of {self.org_id}"


def status_for(last_heartbeat, now=None) -> str:
    """green < 2 min since the last heartbeat, yellow 2-5 min, red > 5 min, grey never."""
    if last_heartbeat is None:
        return AgentStatus.GREY
    age = (now or timezone.now()) - last_heartbeat
    if age < YELLOW_AFTER:
        return AgentStatus.GREEN
    return AgentStatus.YELLOW if age <= RED_AFTER else AgentStatus.RED
