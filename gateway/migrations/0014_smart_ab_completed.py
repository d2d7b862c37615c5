"""An org default's A/B test saved with one key (before 2026-12-03) made whole as it was
served, so the org's settings form saves again (core.smart.ab_completed)."""

from django.db import migrations

from core.smart import ab_complete_rows


def forwards(apps, schema_editor):
    ab_complete_rows(apps.get_model("gateway", "GatewayConfig"))


class Migration(migrations.Migration):
    dependencies = [("gateway", "0013_key_retired_hash")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
