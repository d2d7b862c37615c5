"""An org default's A/B test saved with one key (before 2026-12-03) made whole as it was
served, so the org's settings form saves again (core.smart.ab_completed)."""

from django.db import migrations

from core.smart import ab_completed


def forwards(apps, schema_editor):
    GatewayConfig = apps.get_model("gateway", "GatewayConfig")
    for config in GatewayConfig.objects.exclude(smart={}).only("id", "smart").iterator():
        fixed = ab_completed(config.smart)
        if fixed is not None:
            GatewayConfig.objects.filter(pk=config.pk).update(smart=fixed)


class Migration(migrations.Migration):
    dependencies = [("gateway", "0013_key_retired_hash")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
