from django.contrib.admin.apps import AdminConfig


class BonitoAdminConfig(AdminConfig):
    default_site = "bonito.admin_site.BonitoAdminSite"
