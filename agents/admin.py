"""Platform admin → Agents: every VPC agent across orgs, read-only (agents write them)."""

from django.contrib import admin

from core.admin_mixins import ReadOnlyAdminMixin

from .models import Agent, status_for


@admin.register(Agent)
class AgentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "org",
        "hostname",
        "agent_id",
        "status",
        "version",
        "config_version",
        "request_rate",
        "error_rate",
        "last_heartbeat_at",
    ]
    list_filter = ["org", "version"]
    search_fields = ["hostname", "org__slug", "org__name"]
    list_select_related = ["org"]

    @admin.display(description="status")
    def status(self, obj):
        return status_for(obj.last_heartbeat_at)
