"""A routing policy's A/B test saved with one key (before 2026-12-03) made whole as it was
served, so the policy saves again (core.smart.ab_completed)."""

from django.db import migrations

from core.smart import ab_complete_rows


def forwards(apps, schema_editor):
    ab_complete_rows(apps.get_model("governance", "RoutingPolicy"))


class Migration(migrations.Migration):
    dependencies = [("governance", "0007_plural_names")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
