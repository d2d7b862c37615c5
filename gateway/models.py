from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from core import keys, strategies
from orgs.models import OrgScopedQuerySet

from .dataplane import provider_kinds


def key_hash_secret() -> bytes:
    return settings.KEY_HASH_SECRET.encode()


class CredentialsUnreadable(ValueError):
    """A provider's stored credentials that this process's keys cannot decrypt."""

    def __init__(self, provider):
        self.provider_id = provider.pk
        super().__init__(
            f"The credentials of provider {provider.name} cannot be decrypted with this "
            "server's keys: they were written under another SECRET_KEY or ENCRYPTION_KEYS "
            "(a command run with other settings than the server's?). Run with the keys they "
            "were written with, or enter the credentials again (Providers, Edit)."
        )


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
    routing_policy = models.ForeignKey(
        "governance.RoutingPolicy",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="keys",
    )
    rpm_limit = models.PositiveIntegerField(null=True, blank=True)
    tpm_limit = models.PositiveIntegerField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # False: disabled (services.api_key_set_active), refused on /v1 like a revoked key but
    # reversibly: the key keeps its secret, settings, spend and history.
    is_active = models.BooleanField(default=True)
    # After a rotation with a grace period, the old secret's HMAC and when it stops working
    # (services.api_key_rotate); the data plane serves both secrets as this one key.
    previous_key_hash = models.CharField(max_length=64, blank=True, default="", editable=False)
    previous_masked = models.CharField(max_length=20, blank=True, default="", editable=False)
    previous_valid_until = models.DateTimeField(null=True, blank=True, editable=False)
    # The secret the last rotation's previous_key_hash replaced, kept so the gateways drop it
    # too: a grace that ended by the clock left it in their tables (refused) until then.
    retired_key_hash = models.CharField(max_length=64, blank=True, default="", editable=False)
    # The newest usage row's time, moved forward by the usage writer once per batch
    # (billing.usage_writer): the key list shows it without reading usage rows.
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} ({self.masked})"

    @property
    def masked(self) -> str:
        return f"{self.prefix}…{self.last4}"

    def previous_valid(self, now=None) -> bool:
        """Whether the secret replaced by the last rotation still works (its grace period)."""
        until = self.previous_valid_until
        return bool(self.previous_key_hash and until and until > (now or timezone.now()))

    def set_raw(self, raw: str) -> None:
        self.key_hash = keys.digest(raw, key_hash_secret())
        self.prefix, self.last4 = keys.display(raw)

    def matches(self, raw: str) -> bool:
        import hmac

        return hmac.compare_digest(self.key_hash, keys.digest(raw, key_hash_secret()))


class ProviderQuerySet(OrgScopedQuerySet):
    def with_active_deployments(self):
        """Annotates ``n_active``: a provider with none is one no request can reach; and
        ``n_deployments``, all of them (what deleting it deletes)."""
        return self.annotate(
            n_active=models.Count("deployments", filter=models.Q(deployments__is_active=True)),
            n_deployments=models.Count("deployments"),
        ).order_by("name")


class ProviderConnection(models.Model):
    """An org's account at a model provider. Credentials are encrypted at rest."""

    org = models.ForeignKey("orgs.Organization", on_delete=models.CASCADE, related_name="providers")
    name = models.SlugField(max_length=63)
    # One of the kinds in dataplane/provider_kinds.py (read at each use: adding a kind there
    # needs no migration).
    kind = models.CharField(
        max_length=provider_kinds.NAME_MAX_LENGTH, choices=provider_kinds.choices
    )
    api_base = models.URLField(max_length=500, blank=True)
    # Non-secret settings, per kind (provider_kinds.py): api_version (Azure), aws_region_name…
    settings = models.JSONField(default=dict, blank=True)
    credentials_encrypted = models.TextField(blank=True, editable=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The last "Test connection" (services.provider_test): part of the Overview's health.
    last_test_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_test_ok = models.BooleanField(null=True, blank=True, editable=False)
    last_test_message = models.CharField(max_length=300, blank=True, editable=False)

    objects = ProviderQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["org", "name"], name="provider_unique_name")]

    def __str__(self):
        return f"{self.name} ({self.get_kind_display()})"

    def set_credentials(self, credentials: dict) -> None:
        from .crypto import encrypt_json

        self.credentials_encrypted = encrypt_json(credentials) if credentials else ""

    def get_credentials(self) -> dict:
        """The decrypted credentials; CredentialsUnreadable where this process's keys cannot
        decrypt them (written under another SECRET_KEY or ENCRYPTION_KEYS)."""
        from cryptography.fernet import InvalidToken

        from .crypto import decrypt_json

        if not self.credentials_encrypted:
            return {}
        try:
            return decrypt_json(self.credentials_encrypted)
        except InvalidToken as exc:
            raise CredentialsUnreadable(self) from exc

    @property
    def credentials_readable(self) -> bool:
        """Whether stored credentials (if any) can be decrypted with this process's keys."""
        try:
            self.get_credentials()
        except CredentialsUnreadable:
            return False
        return True

    def readable_credentials(self) -> dict:
        """get_credentials, or {} where they cannot be decrypted: none that can be used, so
        a form asks for them again and a save replaces them."""
        try:
            return self.get_credentials()
        except CredentialsUnreadable:
            return {}

    @property
    def has_credentials(self) -> bool:
        return bool(self.credentials_encrypted)


class Deployment(models.Model):
    """A public model name served by one provider connection's upstream model."""

    org = models.ForeignKey(
        "orgs.Organization", on_delete=models.CASCADE, related_name="deployments"
    )
    model_name = models.CharField(max_length=200)
    provider = models.ForeignKey(
        ProviderConnection, on_delete=models.CASCADE, related_name="deployments"
    )
    upstream_model = models.CharField(max_length=200)
    region = models.CharField(max_length=50, blank=True)
    # USD per million tokens; empty means LiteLLM's price for the upstream model.
    input_price_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True
    )
    output_price_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True
    )
    # USD per unit for image and audio models: per image, per second of audio, per
    # character of speech input, per rerank search (the endpoint decides which); empty
    # means LiteLLM's price for the upstream model (docs/gateway.md, "Images, audio …").
    unit_price = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    weight = models.PositiveIntegerField(default=1)
    priority = models.PositiveIntegerField(default=0, help_text="failover order, lowest first")
    # Seconds one attempt on this deployment may take (to its first output for a stream)
    # before the request fails over; empty: its share of the org's request timeout only
    # (docs/gateway.md, "Time per attempt").
    timeout_s = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="seconds one attempt may take before failing over; empty: the org's timeout",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        ordering = ["model_name", "priority", "id"]

    def __str__(self):
        return f"{self.model_name} → {self.provider.name}/{self.upstream_model}"


class GatewayConfig(models.Model):
    """Org-level gateway settings (the seed's gateway_configs)."""

    org = models.OneToOneField(
        "orgs.Organization", on_delete=models.CASCADE, related_name="gateway_config"
    )
    # Across the deployments of one model; the strategies are dataplane.strategies's.
    default_strategy = models.CharField(
        max_length=strategies.NAME_MAX_LENGTH,
        choices=strategies.choices,
        default=strategies.DEFAULT,
    )
    enabled_providers = models.JSONField(default=list, blank=True, help_text="empty: all")
    fallback_models = models.JSONField(default=list, blank=True)
    org_rpm_limit = models.PositiveIntegerField(null=True, blank=True)
    org_tpm_limit = models.PositiveIntegerField(null=True, blank=True)
    default_key_rpm = models.PositiveIntegerField(
        null=True, blank=True, help_text="empty: the tier's default"
    )
    default_key_tpm = models.PositiveIntegerField(null=True, blank=True)
    request_timeout_s = models.PositiveIntegerField(default=120)
    # The org's default smart routing: a bn- key asking for the model `auto_model_alias`
    # gets the tier its prompt scores (docs/smart-routing.md). Off while smart_tiers is empty.
    smart_tiers = models.JSONField(
        default=list, blank=True, help_text="public model names, cheapest first; empty: off"
    )
    smart = models.JSONField(
        default=dict, blank=True, help_text="smart routing settings (core.smart.resolve)"
    )
    auto_model_alias = models.CharField(max_length=100, default="auto")
    # Browser pages on these origins may call /v1 with the org's keys (CORS); empty: none.
    cors_origins = models.JSONField(
        default=list, blank=True, help_text="scheme://host[:port] each, or *; empty: none"
    )

    objects = OrgScopedQuerySet.as_manager()

    def __str__(self):
        return f"gateway config of {self.org}"


class ModelCatalogEntry(models.Model):
    """LiteLLM's price map, loaded from the copy bundled with litellm (no network)."""

    name = models.CharField(max_length=255, unique=True)
    provider = models.CharField(max_length=100, blank=True)
    mode = models.CharField(max_length=50, blank=True)
    input_cost_per_token = models.FloatField(null=True, blank=True)
    output_cost_per_token = models.FloatField(null=True, blank=True)
    max_input_tokens = models.PositiveIntegerField(null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "model catalog"

    def __str__(self):
        return self.name
