from django.contrib.admin.apps import AdminConfig


class BonitoAdminConfig(AdminConfig):
    default_site = "core.admin_site.BonitoAdminSite"
