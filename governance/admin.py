"""The platform admin for policies and routing policies; writes
go through governance.services (audited, via="admin", config version bumped)."""

from django.contrib import admin

from core.admin_mixins import ServiceModelAdmin, readonly_except
from orgs.audit import Actor

from . import services
from .models import Policy, RoutingPolicy


def _actor(request) -> Actor:
    return Actor.from_request(request, via="admin")


@admin.register(Policy)
class PolicyAdmin(ServiceModelAdmin):
    list_display = ["org", "monthly_spend_cap_usd", "updated_at"]

    def get_readonly_fields(self, request, obj=None):
        return readonly_except(self.model, *services.POLICY_FIELDS)

    def has_add_permission(self, request):
        return False  # every org has one, made on first use

    def has_delete_permission(self, request, obj=None):
        return False  # empty the lists instead; the change is audited

    def save_model(self, request, obj, form, change):
        stored = Policy.objects.get(pk=obj.pk)
        data = form.cleaned_data
        services.policy_set(
            actor=_actor(request),
            org=stored.org,
            **{f: data[f] for f in services.POLICY_FIELDS if f in data},
        )


@admin.register(RoutingPolicy)
class RoutingPolicyAdmin(ServiceModelAdmin):
    list_display = ["name", "org", "strategy", "model_names", "is_active"]
    list_filter = ["strategy", "org"]

    def get_readonly_fields(self, request, obj=None):
        return readonly_except(
            self.model, "strategy", "model_names", "weights", "smart", "is_active"
        )

    def has_add_permission(self, request):
        return False  # added on the org's Routing page or with apply_config

    def save_model(self, request, obj, form, change):
        stored = RoutingPolicy.objects.get(pk=obj.pk)
        data = form.cleaned_data
        services.routing_policy_save(
            actor=_actor(request),
            org=stored.org,
            name=stored.name,
            strategy=data["strategy"],
            models=data["model_names"] or [],
            weights=data.get("weights") or {},
            smart=data.get("smart") or {},
            is_active=data["is_active"],
        )

    def delete_model(self, request, obj):
        services.routing_policy_delete(actor=_actor(request), routing_policy=obj)
