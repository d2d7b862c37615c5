import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone


class OrgScopedQuerySet(models.QuerySet):
    """Every tenant-owned model uses this so views can only ever ask for one org's rows."""

    def for_org(self, org):
        return self.filter(org=org)


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create_user(self, email, password, **extra):
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.apply_platform_admin_list()
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email, password=None, **extra):
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email, password=None, **extra):
        extra["is_staff"] = True
        extra["is_superuser"] = True
        return self._create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    email = models.EmailField(unique=True)
    name = models.CharField(max_length=150, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    # True when the staff/superuser rights came from ADMIN_EMAILS, so that taking the
    # address off the list takes away exactly those rights and nothing granted by hand.
    admin_from_env = models.BooleanField(default=False, editable=False)
    weekly_digest = models.BooleanField(
        default=True, help_text="receive the weekly usage digest email"
    )
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        ordering = ["email"]

    def __str__(self):
        return self.email

    def get_full_name(self):
        return self.name or self.email

    def get_short_name(self):
        return self.name or self.email.split("@")[0]

    def apply_platform_admin_list(self) -> bool:
        """Grant or take back platform-admin rights from ADMIN_EMAILS; True if changed."""
        listed = self.email.lower() in settings.ADMIN_EMAILS
        before = (self.is_staff, self.is_superuser, self.admin_from_env)
        if listed:
            self.is_staff = self.is_superuser = True
            self.admin_from_env = True
        elif self.admin_from_env:
            self.is_staff = self.is_superuser = False
            self.admin_from_env = False
        return before != (self.is_staff, self.is_superuser, self.admin_from_env)


class Tier(models.TextChoices):
    """The pricing tiers: the one list (Organization.tier, orgs.TierLimit). What each one
    includes (requests a month, a spend cap, the key RPM ceiling) is a TierLimit row."""

    FREE = "free", "Free"
    PRO = "pro", "Pro"
    ENTERPRISE = "enterprise", "Enterprise"


class Organization(models.Model):
    Tier = Tier

    class DeploymentMode(models.TextChoices):
        SHARED = "shared", "Shared gateway"
        VPC = "vpc", "VPC agent"

    slug = models.SlugField(max_length=63, unique=True)
    name = models.CharField(max_length=200)
    tier = models.CharField(max_length=20, choices=Tier.choices, default=Tier.FREE)
    deployment_mode = models.CharField(
        max_length=20, choices=DeploymentMode.choices, default=DeploymentMode.SHARED
    )
    # Data residency: in VPC mode, the shared gateway refuses the org's keys (403
    # vpc_only) and only its agents serve them, so a leaked key or an app still pointed
    # at the hosted URL cannot send prompts through Bonito's network.
    vpc_only = models.BooleanField(
        default=False,
        db_default=False,  # rows written by raw SQL (bench/) get it too
        help_text="serve this org's keys only through its VPC agents (VPC mode only)",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def clean(self):
        if self.vpc_only and self.deployment_mode != self.DeploymentMode.VPC:
            raise ValidationError(
                {
                    "vpc_only": "Only an organization in VPC mode can serve its keys only "
                    "through its agents: switch to VPC agent first."
                }
            )


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


ROLE_RANK = {Role.VIEWER: 1, Role.MEMBER: 2, Role.ADMIN: 3}


class Team(models.Model):
    """A department inside an org; keys and usage are attributed to teams."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="teams")
    name = models.CharField(max_length=120)
    description = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["org", "name"], name="team_unique_name")]

    def __str__(self):
        return self.name


class Membership(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        ordering = ["user__email"]
        constraints = [
            models.UniqueConstraint(fields=["org", "user"], name="membership_unique_user")
        ]

    def __str__(self):
        return f"{self.user} in {self.org} ({self.role})"

    def has_role(self, needed: str) -> bool:
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(needed)]


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class InvitationQuerySet(OrgScopedQuerySet):
    def pending(self):
        return self.filter(
            accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now()
        )


class Invitation(models.Model):
    """An emailed, single-use, expiring invitation. Only the token's hash is stored."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = InvitationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.email} → {self.org}"

    @staticmethod
    def new_token() -> str:
        return "inv-" + secrets.token_urlsafe(32)

    @staticmethod
    def default_expiry():
        return timezone.now() + timedelta(days=settings.INVITATION_TTL_DAYS)

    @property
    def status(self) -> str:
        if self.accepted_at:
            return "accepted"
        if self.revoked_at:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "pending"


class PersonalAccessTokenQuerySet(models.QuerySet):
    def active(self):
        return self.filter(revoked_at__isnull=True)


class PersonalAccessToken(models.Model):
    """A user's token for the management REST API, tied to one org. Only its hash is stored."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tokens"
    )
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="tokens")
    name = models.CharField(max_length=120)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=12, editable=False)
    last4 = models.CharField(max_length=4, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = PersonalAccessTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} ({self.prefix}…{self.last4})"


class SSOConfig(models.Model):
    """An org's SAML 2.0 identity provider (Okta, Entra ID, Google Workspace, any SAML IdP),
    and the org's own SP key pair (its private key encrypted at rest)."""

    class Preset(models.TextChoices):
        OKTA = "okta", "Okta"
        AZURE_AD = "azure_ad", "Microsoft Entra ID (Azure AD)"
        GOOGLE = "google", "Google Workspace"
        CUSTOM = "custom", "Other SAML 2.0 IdP"

    org = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="sso")
    enabled = models.BooleanField(default=True)
    preset = models.CharField(max_length=10, choices=Preset.choices, default=Preset.CUSTOM)
    idp_entity_id = models.CharField("IdP entity id", max_length=500)
    idp_sso_url = models.URLField("IdP single sign-on URL", max_length=1000)
    idp_slo_url = models.URLField("IdP single logout URL", max_length=1000, blank=True)
    idp_x509_cert = models.TextField("IdP signing certificate (PEM or base64)")
    email_domains = models.JSONField(default=list, blank=True)
    # Attribute names in the assertion; empty means the preset's default.
    email_attribute = models.CharField(max_length=300, blank=True)
    name_attribute = models.CharField(max_length=300, blank=True)
    groups_attribute = models.CharField(max_length=300, blank=True)
    group_roles = models.JSONField(default=dict, blank=True)  # IdP group -> admin/member/viewer
    default_role = models.CharField(
        max_length=10, choices=Role.choices, blank=True
    )  # for users whose groups map to no role; empty: no access
    sso_required = models.BooleanField(default=False)
    break_glass_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="May still sign in with a password when SSO is required.",
    )
    allow_idp_initiated = models.BooleanField(default=False)
    # Logout messages from the IdP must carry its signature (query string or XML): an
    # unsigned LogoutRequest is a link anyone can send to log a user out.
    require_signed_logout = models.BooleanField(default=True)
    session_hours = models.PositiveSmallIntegerField(default=12)

    class SignatureScope(models.TextChoices):
        ASSERTION = "assertion", "The assertion (Okta, Entra ID)"
        RESPONSE = "response", "The whole response only (Google Workspace can)"
        EITHER = "either", "Either the assertion or the response"

    # What the IdP's signature must cover; every scope still refuses an unsigned response.
    signature_scope = models.CharField(
        max_length=10, choices=SignatureScope.choices, default=SignatureScope.ASSERTION
    )
    # This org's SP key pair: signs AuthnRequests and logout messages, decrypts assertions.
    # The private key is encrypted at rest (core.crypto); the previous pair stays
    # published and usable for decryption until sp_previous_until, so the IdP can roll over.
    sp_private_key = models.TextField(blank=True, editable=False)
    sp_certificate = models.TextField(blank=True, editable=False)
    sp_previous_private_key = models.TextField(blank=True, editable=False)
    sp_previous_certificate = models.TextField(blank=True, editable=False)
    sp_previous_until = models.DateTimeField(null=True, blank=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "SSO configuration"

    def __str__(self):
        return f"SSO for {self.org.slug} ({self.get_preset_display()})"


class SSODomain(models.Model):
    """An email domain verified as the org's: its IdP may sign in users of this domain
    (when the org also lists it). A platform admin or apply_config verifies it (or, with
    SSO_DOMAIN_VERIFICATION=trust, the org admin's claim); a domain is one org's at most."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="sso_domains")
    domain = models.CharField(max_length=253, unique=True)
    verified_at = models.DateTimeField(auto_now_add=True)

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        ordering = ["domain"]
        verbose_name = "verified SSO domain"

    def __str__(self):
        return self.domain


class SSOAuthnRequest(models.Model):
    """An AuthnRequest this SP sent: a response's InResponseTo must name one, once."""

    request_id = models.CharField(max_length=100, unique=True)
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    relay_state = models.CharField(max_length=1000, blank=True)
    # SHA-256 of a nonce in a cookie of the browser that started the sign-in (HTTPS only):
    # the response must come back through that browser (no login CSRF).
    browser_hash = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return self.request_id


class SSOAssertion(models.Model):
    """Assertion ids already consumed, kept until they expire, so a replay is refused."""

    assertion_id = models.CharField(max_length=200, unique=True)
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    not_on_or_after = models.DateTimeField(db_index=True)

    def __str__(self):
        return self.assertion_id


class SSOSession(models.Model):
    """A Bonito session opened by an SSO sign-in: an IdP's LogoutRequest names its NameID
    and SessionIndex, and ends the sessions recorded here, in whichever browser they are."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    name_id = models.CharField(max_length=500)
    session_index = models.CharField(max_length=200, blank=True)
    session_key = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(fields=["org", "name_id"])]

    def __str__(self):
        return f"{self.name_id} ({self.session_index or 'no index'})"


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


class TierLimit(models.Model):
    """What each pricing tier includes per month; edited by platform admins in the admin."""

    tier = models.CharField(max_length=20, unique=True, choices=Tier.choices)
    monthly_requests = models.PositiveIntegerField(
        null=True, blank=True, help_text="empty: unlimited"
    )
    monthly_spend_cap_usd = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="empty: none (orgs may still set their own)",
    )
    key_rpm = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="the most requests per minute any one key may make (orgs may set less); "
        "empty: no ceiling",
    )
    # How many of each an org of the tier may have: every one is held in every gateway's
    # memory, so no org can grow them without bound (orgs.services.quota_checked).
    max_keys = models.PositiveIntegerField(
        null=True, blank=True, help_text="active API keys an org may have; empty: no limit"
    )
    max_providers = models.PositiveIntegerField(
        null=True, blank=True, help_text="provider connections an org may have; empty: no limit"
    )
    max_deployments = models.PositiveIntegerField(
        null=True, blank=True, help_text="deployments an org may have; empty: no limit"
    )
    # A feature of the tier: smart routing's learned classifier (docs/smart-routing.md).
    learned_routing = models.BooleanField(
        null=True,
        blank=True,
        help_text="smart routing's learned classifier (as classifier or A/B arm); unknown: "
        "the tier's default (Pro and Enterprise yes, Free no)",
    )

    class Meta:
        ordering = ["tier"]

    def __str__(self):
        return f"{self.get_tier_display()} tier"


# The tiers whose orgs may use smart routing's learned classifier when their TierLimit row
# does not say (no row, or learned_routing empty): the product's rules for Free, Pro for Pro.
LEARNED_ROUTING_TIERS = frozenset({Tier.PRO.value, Tier.ENTERPRISE.value})


def tier_includes_learned(tier: str, limit: "TierLimit | None" = None, *, look_up=True) -> bool:
    """Whether orgs of ``tier`` may use the learned classifier: its TierLimit row's
    learned_routing (``limit``, else read when ``look_up``), else the tier's default."""
    if limit is None and look_up:
        limit = TierLimit.objects.filter(tier=tier).first()
    if limit is not None and limit.learned_routing is not None:
        return limit.learned_routing
    return tier in LEARNED_ROUTING_TIERS


def tiers_including_learned() -> list[str]:
    """The labels of the tiers whose orgs may use the learned classifier, in tier order."""
    limits = {t.tier: t for t in TierLimit.objects.all()}
    return [
        label
        for value, label in Tier.choices
        if tier_includes_learned(value, limits.get(value), look_up=False)
    ]


class SecretsFingerprint(models.Model):
    """One row: core.crypto.secrets_fingerprints() of the server that started last. A
    management command that writes keys or credentials the server could not read (run
    without the server's SECRET_KEY, say) is refused instead (orgs.secrets_check)."""

    key_hash = models.CharField(max_length=64)
    encryption = models.TextField()  # the encryption keys' digests, comma-separated
    recorded_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"secrets fingerprint recorded {self.recorded_at:%Y-%m-%d %H:%M}"
