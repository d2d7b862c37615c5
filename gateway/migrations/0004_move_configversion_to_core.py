"""ConfigVersion moves to core (every app bumps it): the table is renamed here, and core
0001 takes the model over in Django's state."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0003_seed"),
    ]

    operations = [
        migrations.AlterModelTable(name="configversion", table="core_configversion"),
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="ConfigVersion")],
        ),
    ]
