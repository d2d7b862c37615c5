from django.apps import AppConfig


class OrgsConfig(AppConfig):
    name = "orgs"
    verbose_name = "Organizations and users"

    def ready(self):
        from . import signals  # noqa: F401
