"""The platform admin for usage (read-only), tier limits and budgets. Writes go through
billing.budgets: audited (via="admin") and seen by every gateway with the next snapshot."""

from django.contrib import admin

from core.admin_mixins import ReadOnlyAdminMixin, ServiceModelAdmin
from orgs.audit import Actor

from . import budgets
from .models import Budget, Notification, UsageRecord


def _actor(request) -> Actor:
    return Actor.from_request(request, via="admin")


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: usage rows are what bills, budgets and rollups are computed from."""

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


@admin.register(Budget)
class BudgetAdmin(ServiceModelAdmin):
    list_display = ["org", "scope", "team", "key", "period", "amount_usd", "hard", "is_active"]
    list_filter = ["hard", "period", "scope", "org"]
    autocomplete_fields = ["org", "team"]
    raw_id_fields = ["key"]

    def get_readonly_fields(self, request, obj=None):
        return ["org"] if obj else []  # a budget stays with its org

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        stored = Budget.objects.get(pk=obj.pk) if change else None
        saved = budgets.budget_save(
            actor=_actor(request),
            org=stored.org if stored else data["org"],
            budget=stored,
            amount_usd=data["amount_usd"],
            scope=data["scope"],
            team=data.get("team"),
            key=data.get("key"),
            period=data["period"],
            hard=data["hard"],
            thresholds=data.get("thresholds") or None,
            webhook_url=data.get("webhook_url", ""),
            is_active=data["is_active"],
        )
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        budgets.budget_delete(actor=_actor(request), budget=obj)


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: notices are written by budget checks and read on the org's Overview."""

    list_display = ["created_at", "org", "level", "message", "read_at"]
    list_filter = ["level", "org"]
