from datetime import UTC, datetime

from django.db import migrations, models
from django.db.models import Count
from django.db.models.functions import TruncDay, TruncHour


def count_rejected_this_month(apps, schema_editor, now=None):
    """Rollups made before this migration hold 0 in `rejected`. A tier's request allowance
    reads them from now on, for this month: so this month's rollups of the orgs on a tier
    with an allowance get their count from the raw rows (a small set: those orgs are
    refused past a small allowance), for the hours and whole days readers take from rollups
    (before the hourly watermark); what comes after is recomputed by the rollup task anyway.
    Other orgs' older rollups keep 0 (docs/usage-data.md)."""
    RollupState = apps.get_model("billing", "RollupState")
    UsageRecord = apps.get_model("billing", "UsageRecord")
    UsageRollup = apps.get_model("billing", "UsageRollup")
    TierLimit = apps.get_model("orgs", "TierLimit")
    Organization = apps.get_model("orgs", "Organization")
    state = RollupState.objects.filter(period="hour").first()
    tiers = list(TierLimit.objects.exclude(monthly_requests=None).values_list("tier", flat=True))
    if state is None or not tiers:
        return
    now = now or datetime.now(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    kept = RollupState.objects.filter(period="raw").first()
    if kept is not None:
        start = max(start, kept.rolled_until)
    mark = state.rolled_until
    orgs = Organization.objects.filter(tier__in=tiers).values("id")
    fields = ("bucket", "org_id", "key_id", "team_id", "model_used", "model_requested", "provider")
    for period, trunc, end in (
        ("hour", TruncHour, mark),
        ("day", TruncDay, mark.replace(hour=0, minute=0, second=0, microsecond=0)),
    ):
        if end <= start:
            continue
        groups = (
            UsageRecord.objects.filter(
                org_id__in=orgs, status="rejected", created_at__gte=start, created_at__lt=end
            )
            .order_by()
            .annotate(bucket=trunc("created_at"))
            .values(*fields)
            .annotate(n=Count("id"))
        )
        for g in groups:
            # Several rollup rows can match one group: a deleted team or key is set to NULL
            # on the rows and the rollups alike. The count is spread over them, each row
            # given at most its own requests, so the rows' sum is the group's count.
            left = g["n"]
            for row in UsageRollup.objects.filter(
                period=period,
                bucket_start=g["bucket"],
                org_id=g["org_id"],
                key_id=g["key_id"],
                team_id=g["team_id"],
                model=g["model_used"],
                model_requested=g["model_requested"],
                provider=g["provider"],
            ).order_by("-requests", "pk"):
                share = min(left, row.requests)
                UsageRollup.objects.filter(pk=row.pk).update(rejected=share)
                left -= share


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0016_usage_units"),
        ("orgs", "0009_tierlimit_moved_from_billing"),
    ]

    operations = [
        migrations.AddField(
            model_name="usagerollup",
            name="rejected",
            # db_default: the previous release's rollup task, still running while this
            # migration is applied (a rolling upgrade), inserts rows without the column.
            field=models.PositiveIntegerField(db_default=0, default=0),
        ),
        migrations.RunPython(count_rejected_this_month, migrations.RunPython.noop, elidable=True),
    ]
