from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"
    verbose_name = "Gateway"

    def ready(self):
        from core import config_version
        from governance import services as governance_services

        from . import services, snapshot_builder

        # Each committed change's delta is built once and stored for every worker.
        config_version.on_committed(snapshot_builder.share_deltas)
        # A routing policy may not list the smart routing alias, a name no model may take.
        governance_services.smart_alias_of = services.smart_alias
