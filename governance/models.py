from django.conf import settings
from django.db import models

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
