from django.conf import settings
from django.db import models

from gateway.dataplane import strategies
from orgs.models import OrgScopedQuerySet


class AuditLogQuerySet(OrgScopedQuerySet):
    def update(self, **kwargs):
        raise TypeError("Audit rows are immutable.")

    def delete(self):
        raise TypeError("Audit rows are immutable.")


class AuditLog(models.Model):
    """One immutable row per governance-relevant change, written in the change's transaction."""

    org = models.ForeignKey(
        "orgs.Organization", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Who did it, kept as text so the row still reads right after the user is deleted.
    actor_label = models.CharField(max_length=254)
    # Where the change came from: web (dashboard), api, admin, cli, apply_config, sso, ...
    via = models.CharField(max_length=32, blank=True, db_index=True)
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=254, blank=True)
    changes = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = AuditLogQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["org", "-created_at"])]

    def __str__(self):
        return f"{self.actor_label} {self.action} {self.target_type}:{self.target_id}"

    def save(self, *args, **kwargs):
        # Immutability is a property of the audit trail, not of any one caller.
        if not self._state.adding:
            raise TypeError("Audit rows are immutable.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("Audit rows are immutable.")


class Policy(models.Model):
    """An org's gateway policy. Empty allow-lists allow everything; a deny always wins."""

    org = models.OneToOneField("orgs.Organization", on_delete=models.CASCADE, related_name="policy")
    allowed_models = models.JSONField(default=list, blank=True)
    denied_models = models.JSONField(default=list, blank=True)
    allowed_providers = models.JSONField(default=list, blank=True)
    denied_providers = models.JSONField(default=list, blank=True)
    allowed_regions = models.JSONField(default=list, blank=True)
    monthly_spend_cap_usd = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True
    )
    # Used to reserve spend for a request that sets no max_tokens.
    default_max_tokens_estimate = models.PositiveIntegerField(default=1024)
    updated_at = models.DateTimeField(auto_now=True)

    objects = OrgScopedQuerySet.as_manager()

    def __str__(self):
        return f"policy of {self.org}"


class RoutingPolicy(models.Model):
    """A named strategy over an ordered list of models; rt- keys route through one."""

    org = models.ForeignKey(
        "orgs.Organization", on_delete=models.CASCADE, related_name="routing_policies"
    )
    name = models.SlugField(max_length=63)
    strategy = models.CharField(
        max_length=strategies.NAME_MAX_LENGTH,
        choices=strategies.choices,
        default=strategies.DEFAULT,
    )
    model_names = models.JSONField(default=list, help_text="public model names, in failover order")
    weights = models.JSONField(
        default=dict,
        blank=True,
        help_text='model → weight (a whole number), for weighted: {"a": 90, "b": 10} sends '
        "90 % of requests to a first; a model without a weight only after the weighted ones",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["org", "name"], name="routing_policy_unique_name")
        ]

    def __str__(self):
        return self.name
