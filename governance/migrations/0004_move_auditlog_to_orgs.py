"""AuditLog moves to orgs (the lowest layer that writes audit rows): the table is renamed
here, and orgs 0008 takes the model over in Django's state."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0003_auditlog_via"),
    ]

    operations = [
        migrations.AlterModelTable(name="auditlog", table="orgs_auditlog"),
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="AuditLog")],
        ),
    ]
