from django.contrib import admin

from .models import ApiKey


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

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields if f.name != "key_hash"]

    def has_add_permission(self, request):
        return False  # keys are created where the raw key can be shown once
