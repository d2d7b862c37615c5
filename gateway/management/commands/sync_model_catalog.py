from django.core.management.base import BaseCommand

from gateway.catalog import model_catalog_sync


class Command(BaseCommand):
    help = "Refresh the model catalog from LiteLLM's bundled price map (no network)."

    def handle(self, *args, **opts):
        self.stdout.write(f"Model catalog: {model_catalog_sync()} models.")
