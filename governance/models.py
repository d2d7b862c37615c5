from django.db import models

from core import strategies
from orgs.models import OrgScopedQuerySet


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

    class Meta:
        verbose_name_plural = "policies"

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
    # With strategy "smart": the model_names are its tiers, cheapest first, and this its
    # settings (core.smart.resolve checks them; docs/smart-routing.md).
    smart = models.JSONField(
        default=dict,
        blank=True,
        help_text='smart routing: {"classifier": "rules", "aggressiveness": 0.5} or '
        '{"thresholds": [...]}, optional "ab", "keywords", "within"',
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "routing policies"
        constraints = [
            models.UniqueConstraint(fields=["org", "name"], name="routing_policy_unique_name")
        ]

    def __str__(self):
        return self.name
