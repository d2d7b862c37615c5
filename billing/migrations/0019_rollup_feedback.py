from django.db import migrations, models
from django.db.models.functions import TruncHour


def mark_hours_with_feedback(apps, schema_editor):
    """Rollups made before this migration count POST /v1/feedback calls among the requests
    of their group: every hour whose raw rows hold one is marked dirty, so the next rollup
    run recomputes it (and its day) with the feedback calls apart. Hours whose raw rows
    retention removed keep their rollups as they are (docs/usage-data.md)."""
    UsageRecord = apps.get_model("billing", "UsageRecord")
    RollupDirtyHour = apps.get_model("billing", "RollupDirtyHour")
    hours = (
        UsageRecord.objects.filter(endpoint="feedback")
        .order_by()
        .annotate(hour=TruncHour("created_at"))
        .values_list("hour", flat=True)
        .distinct()
    )
    RollupDirtyHour.objects.bulk_create(
        [RollupDirtyHour(bucket_start=h) for h in hours], ignore_conflicts=True
    )


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0018_dirty_hour_token"),
    ]

    operations = [
        migrations.AddField(
            model_name="usagerollup",
            name="feedback",
            # db_default: the previous release's rollup task, still running while this
            # migration is applied (a rolling upgrade), inserts rows without the column.
            field=models.BooleanField(db_default=False, default=False),
        ),
        migrations.RunPython(mark_hours_with_feedback, migrations.RunPython.noop, elidable=True),
    ]
