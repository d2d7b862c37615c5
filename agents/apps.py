from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "VPC agents"

    def ready(self):
        # Agents sit above orgs: a config file's switch of deployment mode takes the
        # dashboard's path (leaving VPC mode revokes the org tokens).
        from orgs import config

        from . import services

        config.use_deployment_mode_setter(services.deployment_mode_set)
