from django.contrib import admin

from governance.audit import Actor

from . import services
from .models import ApiKey, Deployment, GatewayConfig, ModelCatalogEntry, ProviderConnection


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "org",
        "masked",
        "kind",
        "team",
        "created_at",
        "expires_at",
        "revoked_at",
    ]
    list_filter = ["kind", "org"]
    search_fields = ["name", "prefix", "last4", "org__name"]
    exclude = ["key_hash"]
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields if f.name != "key_hash"]

    def has_add_permission(self, request):
        return False  # keys are created where the raw key can be shown once

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        for key in queryset:
            services.api_key_revoke(actor=Actor.from_request(request, via="admin"), key=key)


@admin.register(ProviderConnection)
class ProviderConnectionAdmin(admin.ModelAdmin):
    """Read-only here: credentials are write-only and set from the org's Providers page or
    apply_config, so the admin never renders them."""

    list_display = ["name", "org", "kind", "api_base", "is_active", "has_credentials", "created_at"]
    list_filter = ["kind", "is_active", "org"]
    search_fields = ["name", "org__name"]
    exclude = ["credentials_encrypted"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields if f.name != "credentials_encrypted"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = [
        "model_name",
        "org",
        "provider",
        "upstream_model",
        "region",
        "priority",
        "weight",
        "is_active",
    ]
    list_filter = ["is_active", "org"]
    search_fields = ["model_name", "upstream_model", "org__name"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(GatewayConfig)
class GatewayConfigAdmin(admin.ModelAdmin):
    list_display = ["org", "default_strategy", "org_rpm_limit", "org_tpm_limit", "default_key_rpm"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(ModelCatalogEntry)
class ModelCatalogEntryAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "provider",
        "mode",
        "input_cost_per_token",
        "output_cost_per_token",
        "max_input_tokens",
    ]
    list_filter = ["mode", "provider"]
    search_fields = ["name"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]
