"""A routing policy's A/B test saved with one key (before 2026-12-03) made whole as it was
served, so the policy saves again (core.smart.ab_completed)."""

from django.db import migrations

from core.smart import ab_completed


def forwards(apps, schema_editor):
    RoutingPolicy = apps.get_model("governance", "RoutingPolicy")
    for policy in RoutingPolicy.objects.exclude(smart={}).only("id", "smart").iterator():
        fixed = ab_completed(policy.smart)
        if fixed is not None:
            RoutingPolicy.objects.filter(pk=policy.pk).update(smart=fixed)


class Migration(migrations.Migration):
    dependencies = [("governance", "0007_plural_names")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
