"""The platform-admin portal: the Django admin plus a System page (core.admin_mixins has the
base every ModelAdmin that writes uses, so the write goes through a service)."""

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.template.response import TemplateResponse
from django.urls import path, reverse


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

    def get_app_list(self, request, app_label=None):
        """The apps, and first a Platform section with the System page, so the System page
        is in the admin's navigation (the sidebar on every page), not only on the index."""
        apps = super().get_app_list(request, app_label)
        if app_label is not None:
            return apps
        url = reverse("admin:system", current_app=self.name)
        system = {
            "name": "System",
            "object_name": "System",
            "admin_url": url,
            "add_url": None,
            "view_only": True,
            "perms": {"add": False, "change": False, "delete": False, "view": True},
        }
        platform = {
            "name": "Platform",
            "app_label": "platform",
            "app_url": url,
            "has_module_perms": True,
            "models": [system],
        }
        return [platform, *apps]

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
