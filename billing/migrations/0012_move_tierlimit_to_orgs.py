"""TierLimit moves to orgs, next to the one list of tiers (the gateway reads it, and the
gateway sits below billing): the table is renamed here, and orgs 0009 takes the model over
in Django's state."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0011_tierlimit_key_rpm"),
    ]

    operations = [
        migrations.AlterModelTable(name="tierlimit", table="orgs_tierlimit"),
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="TierLimit")],
        ),
    ]
