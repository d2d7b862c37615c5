from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"
    verbose_name = "Gateway"

    def ready(self):
        from core import config_version

        from . import snapshot_builder

        # Each committed change's delta is built once and stored for every worker.
        config_version.on_committed(snapshot_builder.share_deltas)
