"""The platform admin for keys, providers, deployments and gateway settings. Writes go
through gateway.services: audited (via="admin") and seen by every worker within seconds."""

from django.contrib import admin

from core.admin_mixins import ReadOnlyAdminMixin, ServiceModelAdmin, readonly_except
from orgs.audit import Actor

from . import services
from .models import ApiKey, Deployment, GatewayConfig, ModelCatalogEntry, ProviderConnection


def _actor(request) -> Actor:
    return Actor.from_request(request, via="admin")


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdminMixin, ServiceModelAdmin):
    """Read-only but for revoking: keys are created where the raw key can be shown once,
    and a revoked key stays as the record its usage points to."""

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

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        for key in queryset:
            services.api_key_revoke(actor=_actor(request), key=key)


@admin.register(ProviderConnection)
class ProviderConnectionAdmin(ServiceModelAdmin):
    """Credentials are write-only and set from the org's Providers page or apply_config,
    so the admin never renders them; it can switch a connection off or repoint one that
    holds no stored credentials (provider_save refuses sending them to a new endpoint)."""

    list_display = ["name", "org", "kind", "api_base", "is_active", "has_credentials", "created_at"]
    list_filter = ["kind", "is_active", "org"]
    search_fields = ["name", "org__name"]
    exclude = ["credentials_encrypted"]

    def get_readonly_fields(self, request, obj=None):
        return readonly_except(self.model, "credentials_encrypted", "api_base", "is_active")

    def has_add_permission(self, request):
        return False

    def save_model(self, request, obj, form, change):
        stored = ProviderConnection.objects.get(pk=obj.pk)
        services.provider_save(
            actor=_actor(request),
            org=stored.org,
            name=stored.name,
            kind=stored.kind,
            api_base=form.cleaned_data["api_base"],
            settings=stored.settings,
            credentials=None,  # keep the stored ones
            is_active=form.cleaned_data["is_active"],
        )

    def delete_model(self, request, obj):
        services.provider_delete(actor=_actor(request), provider=obj)


@admin.register(Deployment)
class DeploymentAdmin(ServiceModelAdmin):
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
        return readonly_except(self.model, "priority", "weight", "timeout_s", "is_active")

    def has_add_permission(self, request):
        return False  # added on the org's Providers page, where the provider is chosen

    def save_model(self, request, obj, form, change):
        stored = Deployment.objects.select_related("provider").get(pk=obj.pk)
        data = form.cleaned_data
        services.deployment_save(
            actor=_actor(request),
            org=stored.org,
            deployment=stored,
            model_name=stored.model_name,
            provider=stored.provider,
            upstream_model=stored.upstream_model,
            region=stored.region,
            input_price_per_mtok=stored.input_price_per_mtok,
            output_price_per_mtok=stored.output_price_per_mtok,
            unit_price=stored.unit_price,
            weight=data["weight"],
            priority=data["priority"],
            timeout_s=data["timeout_s"],
            is_active=data["is_active"],
        )

    def delete_model(self, request, obj):
        services.deployment_delete(actor=_actor(request), deployment=obj)


@admin.register(GatewayConfig)
class GatewayConfigAdmin(ServiceModelAdmin):
    list_display = ["org", "default_strategy", "org_rpm_limit", "org_tpm_limit", "default_key_rpm"]

    def get_readonly_fields(self, request, obj=None):
        return readonly_except(self.model, *services.GATEWAY_CONFIG_FIELDS)

    def has_add_permission(self, request):
        return False  # every org has one, made on first use

    def has_delete_permission(self, request, obj=None):
        return False  # set the fields back instead; the change is audited

    def save_model(self, request, obj, form, change):
        stored = GatewayConfig.objects.get(pk=obj.pk)
        data = form.cleaned_data
        services.gateway_config_set(
            actor=_actor(request),
            org=stored.org,
            **{f: data[f] for f in services.GATEWAY_CONFIG_FIELDS if f in data},
        )


@admin.register(ModelCatalogEntry)
class ModelCatalogEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: `manage.py sync_model_catalog` loads it from LiteLLM's bundled price map."""

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
