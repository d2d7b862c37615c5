from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The lowest layer: helpers every app may use, and the config version counter."""

    name = "core"
