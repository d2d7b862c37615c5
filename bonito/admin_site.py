"""The platform-admin portal: the Django admin plus a System page."""

from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import path


class BonitoAdminSite(admin.AdminSite):
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
        from .system import platform_counts

        context = {
            **self.each_context(request),
            "title": "System",
            "counts": platform_counts(),
            "services": system_status(),
        }
        return TemplateResponse(request, "admin/system.html", context)
