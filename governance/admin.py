from django.contrib import admin

from .models import AuditLog, Policy, RoutingPolicy


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
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

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    list_display = ["org", "monthly_spend_cap_usd", "updated_at"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(RoutingPolicy)
class RoutingPolicyAdmin(admin.ModelAdmin):
    list_display = ["name", "org", "strategy", "model_names", "is_active"]
    list_filter = ["strategy", "org"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False
