from django.contrib import admin

from .models import Budget, Notification, TierLimit, UsageRecord


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "org",
        "model_requested",
        "model_used",
        "provider",
        "status",
        "input_tokens",
        "output_tokens",
        "cost",
        "latency_ms",
    ]
    list_filter = ["status", "source", "provider", "org"]
    search_fields = ["request_id", "model_requested"]
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(TierLimit)
class TierLimitAdmin(admin.ModelAdmin):
    """Platform admins set what each tier includes; gateways pick it up with the next snapshot."""

    list_display = ["tier", "monthly_requests", "monthly_spend_cap_usd"]

    def save_model(self, request, obj, form, change):
        from django.db import transaction

        from gateway.snapshot_builder import config_version_bump
        from governance.audit import Actor, audit_record

        with transaction.atomic():
            super().save_model(request, obj, form, change)
            audit_record(
                actor=Actor.from_request(request, via="admin"),
                org=None,
                action="tier_limit.update",
                target=obj,
                after={
                    "tier": obj.tier,
                    "monthly_requests": obj.monthly_requests,
                    "monthly_spend_cap_usd": str(obj.monthly_spend_cap_usd),
                },
            )
            config_version_bump()


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = ["org", "scope", "team", "key", "period", "amount_usd", "hard", "is_active"]
    list_filter = ["hard", "period", "scope", "org"]


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["created_at", "org", "level", "message", "read_at"]
    list_filter = ["level", "org"]
