"""The learned smart routing classifier is a feature of the tier (the product: rules is the
Free tier's, learned is Pro): a TierLimit flag platform admins can change, set on the rows
there are to each tier's default."""

from django.db import migrations, models

LEARNED = {"free": False, "pro": True, "enterprise": True}


def fill(apps, schema_editor):
    TierLimit = apps.get_model("orgs", "TierLimit")
    for tier, learned in LEARNED.items():
        TierLimit.objects.filter(tier=tier).update(learned_routing=learned)


class Migration(migrations.Migration):
    dependencies = [
        ("orgs", "0011_organization_vpc_only"),
    ]

    operations = [
        migrations.AddField(
            model_name="tierlimit",
            name="learned_routing",
            field=models.BooleanField(
                blank=True,
                help_text="smart routing's learned classifier (as classifier or A/B arm); "
                "unknown: the tier's default (Pro and Enterprise yes, Free no)",
                null=True,
            ),
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
    ]
