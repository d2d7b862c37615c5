from django.conf import settings
from django.db import models
from django.utils import timezone

from orgs.models import OrgScopedQuerySet

from . import keys


def key_hash_secret() -> bytes:
    return settings.KEY_HASH_SECRET.encode()


class ApiKeyQuerySet(OrgScopedQuerySet):
    def active(self):
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class ApiKey(models.Model):
    """A bn- key (or an rt- key bound to a routing policy). Only its HMAC is stored."""

    class Kind(models.TextChoices):
        STANDARD = "bn", "bn- key"
        ROUTING = "rt", "rt- routing key"

    org = models.ForeignKey("orgs.Organization", on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=2, choices=Kind.choices, default=Kind.STANDARD)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=12, editable=False)
    last4 = models.CharField(max_length=4, editable=False)
    allowed_models = models.JSONField(default=list, blank=True)
    allowed_providers = models.JSONField(default=list, blank=True)
    team = models.ForeignKey("orgs.Team", null=True, blank=True, on_delete=models.SET_NULL)
    rpm_limit = models.PositiveIntegerField(null=True, blank=True)
    tpm_limit = models.PositiveIntegerField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} ({self.masked})"

    @property
    def masked(self) -> str:
        return f"{self.prefix}…{self.last4}"

    def set_raw(self, raw: str) -> None:
        self.key_hash = keys.digest(raw, key_hash_secret())
        self.prefix, self.last4 = keys.display(raw)

    def matches(self, raw: str) -> bool:
        import hmac

        return hmac.compare_digest(self.key_hash, keys.digest(raw, key_hash_secret()))
