from django.db import migrations


def seed(apps, schema_editor):
    from gateway.catalog import model_catalog_sync

    apps.get_model("gateway", "ConfigVersion").objects.get_or_create(pk=1, defaults={"version": 1})
    model_catalog_sync(apps.get_model("gateway", "ModelCatalogEntry"))


class Migration(migrations.Migration):
    dependencies = [("gateway", "0002_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
