from django.db import migrations

# The seed product's pricing: Free includes 1K requests a month; Pro and Enterprise are
# unlimited (Enterprise limits are set per customer).
TIERS = [("free", 1000, None), ("pro", None, None), ("enterprise", None, None)]


def seed(apps, schema_editor):
    TierLimit = apps.get_model("billing", "TierLimit")
    for tier, requests, spend in TIERS:
        TierLimit.objects.get_or_create(tier=tier, defaults={"monthly_requests": requests,
                                                             "monthly_spend_cap_usd": spend})


class Migration(migrations.Migration):
    dependencies = [("billing", "0006_tierlimit")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
