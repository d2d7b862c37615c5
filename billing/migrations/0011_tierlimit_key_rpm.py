from django.db import migrations, models

# The per-key RPM ceilings the gateway had as a constant (proxy.TIER_KEY_RPM) until the
# tier table held them: the same numbers, so every org keeps the limits it had.
KEY_RPM = {"free": 30, "pro": 300, "enterprise": None}


def fill(apps, schema_editor):
    TierLimit = apps.get_model("billing", "TierLimit")
    for tier, key_rpm in KEY_RPM.items():
        TierLimit.objects.filter(tier=tier).update(key_rpm=key_rpm)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0010_budgetalert_sent_per_channel"),
    ]

    operations = [
        migrations.AddField(
            model_name="tierlimit",
            name="key_rpm",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="the most requests per minute any one key may make (orgs may set less); "
                "empty: no ceiling",
                null=True,
            ),
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
    ]
