from django import forms
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.core.exceptions import ValidationError
from django.db.models import Count

from governance.audit import Actor

from . import services
from .models import Invitation, Membership, Organization, SSOConfig, Team, User
from .sso import CONFIG_FIELDS


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    fields = ["user", "role", "team"]

    def has_add_permission(self, request, obj=None):
        return False  # added through the Membership admin so the change is audited


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "tier", "deployment_mode", "member_count", "created_at"]
    list_filter = ["tier", "deployment_mode"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_members=Count("memberships"))

    @admin.display(ordering="_members", description="Members")
    def member_count(self, obj):
        return obj._members

    def save_model(self, request, obj, form, change):
        actor = Actor.from_request(request, via="admin")
        if change:
            fields = {
                f: form.cleaned_data[f]
                for f in ("name", "tier", "deployment_mode")
                if f in form.cleaned_data
            }
            services.org_update(actor=actor, org=Organization.objects.get(pk=obj.pk), **fields)
        else:
            created = services.org_create(
                actor=actor,
                name=obj.name,
                slug=obj.slug,
                tier=obj.tier,
                deployment_mode=obj.deployment_mode,
            )
            obj.pk = created.pk


@admin.register(User)
class UserAdmin(BaseUserAdmin):
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


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "org", "role", "team", "created_at"]
    list_filter = ["role", "org"]
    search_fields = ["user__email", "org__name"]
    autocomplete_fields = ["user", "org", "team"]

    def save_model(self, request, obj, form, change):
        actor = Actor.from_request(request, via="admin")
        if change:
            services.membership_set_role(actor=actor, membership=obj, role=obj.role, team=obj.team)
        else:
            created = services.membership_add(
                actor=actor, org=obj.org, user=obj.user, role=obj.role, team=obj.team
            )
            obj.pk = created.pk

    def delete_model(self, request, obj):
        services.membership_remove(actor=Actor.from_request(request, via="admin"), membership=obj)


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "org", "created_at"]
    list_filter = ["org"]
    search_fields = ["name", "org__name"]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
        else:
            created = services.team_create(
                actor=Actor.from_request(request, via="admin"),
                org=obj.org,
                name=obj.name,
                description=obj.description,
            )
            obj.pk = created.pk

    def delete_model(self, request, obj):
        services.team_delete(actor=Actor.from_request(request, via="admin"), team=obj)


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "org", "role", "status", "created_at", "expires_at"]
    list_filter = ["role", "org"]
    search_fields = ["email"]
    readonly_fields = [
        "org",
        "email",
        "role",
        "team",
        "invited_by",
        "created_at",
        "expires_at",
        "accepted_at",
        "accepted_by",
        "revoked_at",
    ]
    exclude = ["token_hash"]

    def has_add_permission(self, request):
        return False  # invitations are sent from the org's Team page so the link is emailed


class SSOConfigAdminForm(forms.ModelForm):
    class Meta:
        model = SSOConfig
        fields = ["org", "break_glass_user", *CONFIG_FIELDS]

    def clean(self):
        from .sso import sso_config_prepare

        data = super().clean()
        org = data.get("org")
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
class SSOConfigAdmin(admin.ModelAdmin):
    """Platform admins can set an org's IdP here; saves go through the same validated,
    audited service as the dashboard and apply_config."""

    form = SSOConfigAdminForm
    list_display = ("org", "preset", "enabled", "sso_required", "updated_at")
    list_filter = ("preset", "enabled", "sso_required")
    search_fields = ("org__slug", "org__name", "idp_entity_id")
    autocomplete_fields = ("org",)
    raw_id_fields = ("break_glass_user",)

    def save_model(self, request, obj, form, change):
        from .sso import sso_config_save

        data = form.cleaned_data
        glass = data.get("break_glass_user")
        saved = sso_config_save(
            actor=Actor.from_request(request, via="admin"),
            org=data["org"],
            break_glass_email=glass.email if glass else "",
            **{f: data[f] for f in CONFIG_FIELDS if f in data},
        )
        obj.pk = saved.pk
