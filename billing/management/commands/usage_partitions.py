from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from billing.partitions import usage_partitions_maintain


class Command(BaseCommand):
    help = (
        "Create the coming gateway_requests partitions (PostgreSQL) and remove raw usage rows"
        " older than USAGE_RETENTION_DAYS that the rollups hold. What the hourly schedule runs;"
        " safe to run at any time."
    )

    def handle(self, *args, **opts):
        try:
            report = usage_partitions_maintain(now=timezone.now())
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        created, dropped, days = report["created"], report["dropped"], report["deleted_days"]
        self.stdout.write(
            f"Created {len(created)} partitions{': ' if created else ''}{', '.join(created)}."
        )
        self.stdout.write(
            f"Dropped {len(dropped)} partitions{': ' if dropped else ''}{', '.join(dropped)}."
        )
        if days:
            self.stdout.write(f"Deleted the raw rows of {len(days)} days: {days[0]} to {days[-1]}.")
        if report["folded"]:
            self.stdout.write(f"Folded {report['folded']} late rows into the rollups.")
        if report["kept_from"]:
            self.stdout.write(f"Raw rows are kept from {report['kept_from']}.")
