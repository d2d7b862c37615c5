"""The platform admin for usage (read-only), tier limits and budgets. Writes go through
billing.budgets: audited (via="admin") and seen by every gateway with the next snapshot."""

from django import forms
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


class BudgetAdminForm(forms.ModelForm):
    """The webhook URL is write-only, as on the dashboard and over the API (it carries its
    secret): never shown; left empty it keeps the stored one; a checkbox removes it."""

    webhook_url = forms.CharField(
        label="Webhook URL",
        required=False,
        help_text="Slack-compatible incoming webhook. Never shown (it carries its secret): "
        "leave empty to keep the one set.",
    )
    clear_webhook = forms.BooleanField(required=False, label="Remove the webhook")

    class Meta:
        model = Budget
        fields = [
            "org",
            "scope",
            "team",
            "key",
            "period",
            "amount_usd",
            "hard",
            "thresholds",
            "webhook_url",
            "is_active",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial["webhook_url"] = ""
        stored = bool(self.instance.pk and self.instance.webhook_url)
        self.fields["webhook_url"].widget.attrs["placeholder"] = (
            "set (kept unless you enter another)" if stored else "https://hooks.slack.com/…"
        )


@admin.register(Budget)
class BudgetAdmin(ServiceModelAdmin):
    form = BudgetAdminForm
    list_display = ["org", "scope", "team", "key", "period", "amount_usd", "hard", "is_active"]
    list_filter = ["hard", "period", "scope", "org"]
    autocomplete_fields = ["org", "team"]
    raw_id_fields = ["key"]

    def get_readonly_fields(self, request, obj=None):
        return ["org"] if obj else []  # a budget stays with its org

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        stored = Budget.objects.get(pk=obj.pk) if change else None
        webhook_url = data.get("webhook_url", "")
        if stored and not webhook_url and not data.get("clear_webhook"):
            webhook_url = stored.webhook_url  # never shown: kept
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
            webhook_url=webhook_url,
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
