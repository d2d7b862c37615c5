"""The platform admin for orgs, users and memberships. Every write goes through
orgs.services (audited, with the same checks as the dashboard and REST, via="admin")."""

from contextvars import ContextVar

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import AdminPasswordChangeForm
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db.models import Count

from core.admin_mixins import ReadOnlyAdminMixin, ServiceAdminMixin, ServiceModelAdmin

from . import services
from .audit import Actor
from .models import (
    AuditLog,
    Invitation,
    Membership,
    Organization,
    Role,
    SSOConfig,
    SSODomain,
    Team,
    TierLimit,
    User,
)
from .sso import CONFIG_FIELDS

# Roles are memberships; Django's groups and permissions are unused, so the admin offers
# no way to grant rights around the audited services.
admin.site.unregister(Group)


def _actor(request) -> Actor:
    return Actor.from_request(request, via="admin")


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ["user", "role", "team"]
    readonly_fields = ["user"]

    def has_add_permission(self, request, obj=None):
        return False  # added through the Membership admin, which picks the user


@admin.register(Organization)
class OrganizationAdmin(ServiceModelAdmin):
    list_display = ["name", "slug", "tier", "deployment_mode", "member_count", "created_at"]
    list_filter = ["tier", "deployment_mode"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_members=Count("memberships"))

    def get_readonly_fields(self, request, obj=None):
        return ["slug"] if obj else []  # URLs, SSO endpoints and the config file name it

    def get_prepopulated_fields(self, request, obj=None):
        return {} if obj else self.prepopulated_fields

    @admin.display(ordering="_members", description="Members")
    def member_count(self, obj):
        return obj._members

    def save_model(self, request, obj, form, change):
        if change:
            fields = {
                f: form.cleaned_data[f]
                for f in ("name", "tier", "deployment_mode")
                if f in form.cleaned_data
            }
            org = Organization.objects.get(pk=obj.pk)
            org = services.org_update(actor=_actor(request), org=org, **fields)
        else:
            org = services.org_create(
                actor=_actor(request),
                name=obj.name,
                slug=obj.slug,
                tier=obj.tier,
                deployment_mode=obj.deployment_mode,
            )
            obj.pk = org.pk
        if "vpc_only" in form.cleaned_data:
            services.org_vpc_only_set(
                actor=_actor(request), org=org, vpc_only=form.cleaned_data["vpc_only"]
            )

    def save_formset(self, request, form, formset, change):
        """Role and team changes and removals from the inline, each through its service."""
        deleted = [f for f in formset.initial_forms if f in formset.deleted_forms]
        changed = [
            f
            for f in formset.initial_forms
            if f not in formset.deleted_forms and f.instance.pk and f.has_changed()
        ]
        # Promotions first, so handing the admin role over in one save is not refused.
        changed.sort(key=lambda f: f.cleaned_data["role"] != Role.ADMIN)
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for f in changed:
            membership = services.membership_set_role(
                actor=_actor(request),
                membership=Membership.objects.get(pk=f.instance.pk),
                role=f.cleaned_data["role"],
                team=f.cleaned_data.get("team"),
            )
            formset.changed_objects.append((membership, f.changed_data))
        for f in deleted:
            membership = Membership.objects.get(pk=f.instance.pk)
            services.membership_remove(actor=_actor(request), membership=membership)
            formset.deleted_objects.append(membership)

    def delete_model(self, request, obj):
        services.org_delete(actor=_actor(request), org=obj)

    def get_deleted_objects(self, objs, request):
        # The org's keys and usage cannot be deleted one by one in the admin, but org_delete
        # removes them with the org (audited): list them without asking for those rights.
        deleted, counts, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, set(), protected


# Who is changing a password: Django builds the password form without the request.
_password_actor: ContextVar[Actor] = ContextVar("admin_password_actor")


class AuditedPasswordChangeForm(AdminPasswordChangeForm):
    def save(self, commit=True):
        usable = self.cleaned_data.get("set_usable_password", True)
        return services.user_set_password(
            actor=_password_actor.get(),
            user=self.user,
            password=self.cleaned_data["password1"] if usable else None,
        )


@admin.register(User)
class UserAdmin(ServiceAdminMixin, BaseUserAdmin):
    change_password_form = AuditedPasswordChangeForm
    ordering = ["email"]
    list_display = [
        "email",
        "name",
        "is_staff",
        "is_superuser",
        "admin_from_env",
        "is_active",
        "date_joined",
    ]
    list_filter = ["is_staff", "is_superuser", "is_active"]
    search_fields = ["email", "name"]
    readonly_fields = ["admin_from_env", "last_login", "date_joined"]
    fieldsets = [
        (None, {"fields": ["email", "password"]}),
        ("Profile", {"fields": ["name"]}),
        ("Permissions", {"fields": ["is_active", "is_staff", "is_superuser", "admin_from_env"]}),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
    ]
    add_fieldsets = [(None, {"classes": ["wide"], "fields": ["email", "password1", "password2"]})]
    filter_horizontal = []

    def save_model(self, request, obj, form, change):
        if change:
            fields = {
                f: form.cleaned_data[f] for f in services.USER_FIELDS if f in form.changed_data
            }
            services.user_update(actor=_actor(request), user=User.objects.get(pk=obj.pk), **fields)
        else:
            created = services.user_create(
                actor=_actor(request),
                email=form.cleaned_data["email"],
                password=form.cleaned_data.get("password1") or None,
            )
            obj.pk = created.pk

    def user_change_password(self, request, id, form_url=""):
        token = _password_actor.set(_actor(request))
        try:
            return super().user_change_password(request, id, form_url)
        finally:
            _password_actor.reset(token)

    def delete_model(self, request, obj):
        services.user_delete(actor=_actor(request), user=obj)

    def get_deleted_objects(self, objs, request):
        # user_delete removes the user's memberships and tokens with it (audited).
        deleted, counts, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, set(), protected


@admin.register(Membership)
class MembershipAdmin(ServiceModelAdmin):
    list_display = ["user", "org", "role", "team", "created_at"]
    list_filter = ["role", "org"]
    search_fields = ["user__email", "org__name"]
    autocomplete_fields = ["user", "org", "team"]

    def get_readonly_fields(self, request, obj=None):
        return ["user", "org"] if obj else []  # a membership changes role or team, not owner

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if change:
            # The form has already set the new values on obj: hand the service the stored row.
            services.membership_set_role(
                actor=_actor(request),
                membership=Membership.objects.get(pk=obj.pk),
                role=data["role"],
                team=data.get("team"),
            )
        else:
            created = services.membership_add(
                actor=_actor(request),
                org=data["org"],
                user=data["user"],
                role=data["role"],
                team=data.get("team"),
            )
            obj.pk = created.pk

    def delete_model(self, request, obj):
        services.membership_remove(
            actor=_actor(request), membership=Membership.objects.get(pk=obj.pk)
        )


@admin.register(Team)
class TeamAdmin(ServiceModelAdmin):
    list_display = ["name", "org", "created_at"]
    list_filter = ["org"]
    search_fields = ["name", "org__name"]

    def get_readonly_fields(self, request, obj=None):
        return ["org"] if obj else []

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if change:
            services.team_update(
                actor=_actor(request),
                team=Team.objects.get(pk=obj.pk),
                name=data["name"],
                description=data.get("description", ""),
            )
        else:
            created = services.team_create(
                actor=_actor(request),
                org=data["org"],
                name=data["name"],
                description=data.get("description", ""),
            )
            obj.pk = created.pk

    def delete_model(self, request, obj):
        services.team_delete(actor=_actor(request), team=obj)


@admin.register(Invitation)
class InvitationAdmin(ServiceModelAdmin):
    """Read-only but for revoking: invitations are sent from the org's Team page, where
    the link is emailed."""

    list_display = ["email", "org", "role", "status", "created_at", "expires_at"]
    list_filter = ["role", "org"]
    search_fields = ["email"]
    exclude = ["token_hash"]
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead: the row stays as the record of who was invited

    @admin.action(description="Revoke selected pending invitations")
    def revoke(self, request, queryset):
        for invitation in queryset.pending():
            services.invitation_revoke(actor=_actor(request), invitation=invitation)


class SSOConfigAdminForm(forms.ModelForm):
    # Not a model field: the org's SSODomain rows, set through sso_domains_verify/unverify.
    verified_domains = forms.CharField(
        required=False,
        help_text="Email domains you have checked this organization owns (comma- or "
        "space-separated). Its IdP signs in only users of domains both listed above and "
        "verified here; a domain is verified for one organization at most.",
    )

    class Meta:
        model = SSOConfig
        fields = ["org", "break_glass_user", *CONFIG_FIELDS]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.org_id:
            from .sso import verified_domains

            self.initial["verified_domains"] = ", ".join(verified_domains(self.instance.org))

    def clean_verified_domains(self):
        from .sso import normalize_domains

        try:
            return ", ".join(normalize_domains(self.cleaned_data["verified_domains"]))
        except ValidationError as exc:
            raise forms.ValidationError(exc.messages) from exc

    def clean(self):
        from .sso import sso_config_prepare

        data = super().clean()
        org = data.get("org") or (self.instance.org if self.instance.org_id else None)
        if org is not None and not self.errors:
            glass = data.get("break_glass_user")
            try:
                sso_config_prepare(
                    org,
                    glass.email if glass else "",
                    **{f: data[f] for f in CONFIG_FIELDS if f in data},
                )
            except ValidationError as exc:
                raise forms.ValidationError(exc.messages) from exc
        return data


@admin.register(SSOConfig)
class SSOConfigAdmin(ServiceModelAdmin):
    """Platform admins can set an org's IdP here; saves go through the same validated,
    audited service as the dashboard and apply_config."""

    form = SSOConfigAdminForm
    list_display = (
        "org",
        "preset",
        "enabled",
        "sso_required",
        "email_domains",
        "domains_verified",
        "updated_at",
    )
    actions = ["verify_listed_domains", "rotate_sp_key"]
    list_filter = ("preset", "enabled", "sso_required")
    search_fields = ("org__slug", "org__name", "idp_entity_id")
    autocomplete_fields = ("org",)
    raw_id_fields = ("break_glass_user",)

    def get_readonly_fields(self, request, obj=None):
        return ["org"] if obj else []  # a configuration belongs to its org

    def has_delete_permission(self, request, obj=None):
        return False  # switch it off with "enabled"; the change is audited

    @admin.action(description="Rotate the SP key pair of the selected configurations")
    def rotate_sp_key(self, request, queryset):
        from .sso import sp_key_rotate

        for config in queryset:
            sp_key_rotate(actor=_actor(request), config=config)
        self.message_user(
            request,
            f"Rotated {len(queryset)} SP key pair(s); the old certificates stay in the SP "
            "metadata for the grace period so each IdP can take the new one.",
        )

    def save_model(self, request, obj, form, change):
        from .sso import sso_config_save

        data = form.cleaned_data
        glass = data.get("break_glass_user")
        saved = sso_config_save(
            actor=_actor(request),
            org=data.get("org") or obj.org,
            break_glass_email=glass.email if glass else "",
            **{f: data[f] for f in CONFIG_FIELDS if f in data},
        )
        obj.pk = saved.pk
        if "verified_domains" in form.changed_data:
            self._set_verified(request, saved.org, data.get("verified_domains") or "")

    def _set_verified(self, request, org, text):
        from .sso import (
            normalize_domains,
            sso_domains_unverify,
            sso_domains_verify,
            verified_domains,
        )

        wanted = set(normalize_domains(text))
        gone = set(verified_domains(org)) - wanted
        sso_domains_unverify(actor=_actor(request), org=org, domains=sorted(gone))
        sso_domains_verify(actor=_actor(request), org=org, domains=sorted(wanted))

    @admin.display(description="Verified domains")
    def domains_verified(self, obj):
        return ", ".join(d.domain for d in obj.org.sso_domains.all()) or "none"

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("org__sso_domains")

    @admin.action(description="Verify the listed email domains of the selected organizations")
    def verify_listed_domains(self, request, queryset):
        from .sso import sso_domains_verify

        for config in queryset.select_related("org"):
            added = sso_domains_verify(
                actor=_actor(request), org=config.org, domains=config.email_domains
            )
            if added:
                self.message_user(request, f"{config.org.slug}: verified {', '.join(added)}.")


@admin.register(SSODomain)
class SSODomainAdmin(ReadOnlyAdminMixin, ServiceModelAdmin):
    """Which org owns which email domain, read-only: verify and take back verification on
    the org's SSO configuration (audited)."""

    list_display = ("domain", "org", "verified_at")
    search_fields = ("domain", "org__slug", "org__name")
    list_filter = ("org",)


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "created_at",
        "actor_label",
        "via",
        "org",
        "action",
        "target_type",
        "target_repr",
        "ip",
    ]
    list_filter = ["action", "via", "target_type", "org", "created_at"]
    search_fields = ["actor_label", "action", "target_repr", "target_id"]
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]


@admin.register(TierLimit)
class TierLimitAdmin(ServiceModelAdmin):
    """Platform admins set what each tier includes; gateways pick it up with the next snapshot."""

    list_display = [
        "tier",
        "monthly_requests",
        "monthly_spend_cap_usd",
        "key_rpm",
        "max_keys",
        "max_providers",
        "max_deployments",
        "learned_routing",
    ]

    def get_readonly_fields(self, request, obj=None):
        return ["tier"] if obj else []

    def has_delete_permission(self, request, obj=None):
        return False  # empty the fields for "unlimited"; the change is audited

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        saved = services.tier_limit_set(
            actor=_actor(request),
            tier=obj.tier,
            monthly_requests=data.get("monthly_requests"),
            monthly_spend_cap_usd=data.get("monthly_spend_cap_usd"),
            key_rpm=data.get("key_rpm"),
            max_keys=data.get("max_keys"),
            max_providers=data.get("max_providers"),
            max_deployments=data.get("max_deployments"),
            learned_routing=data.get("learned_routing"),
        )
        obj.pk = saved.pk
