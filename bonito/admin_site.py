"""The platform-admin portal: the Django admin plus a System page (core.admin_mixins has the
base every ModelAdmin that writes uses, so the write goes through a service)."""

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.template.response import TemplateResponse
from django.urls import path


class AdminLoginForm(AdminAuthenticationForm):
    # Sign-in matches the email whatever its case (orgs.backends); only the password is not.
    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "invalid_login": "Please enter the correct email and password for a staff account. "
        "Note that the password is case-sensitive.",
    }


class BonitoAdminSite(admin.AdminSite):
    login_form = AdminLoginForm
    site_header = "Bonito platform admin"
    site_title = "Bonito admin"
    index_title = "Platform"
    index_template = "admin/bonito_index.html"

    def get_urls(self):
        return [
            path("system/", self.admin_view(self.system_view), name="system")
        ] + super().get_urls()

    def system_view(self, request):
        from .health import system_status
        from .system import platform_counts, usage_pipeline

        context = {
            **self.each_context(request),
            "title": "System",
            "counts": platform_counts(),
            "services": system_status(),
            "usage": usage_pipeline(),
        }
        return TemplateResponse(request, "admin/system.html", context)
