from datetime import UTC, datetime, timedelta

from django.core.management.base import BaseCommand, CommandError

from billing.services import rollup_window


def _day(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    except ValueError as exc:
        raise CommandError(f"'{value}' is not a date like 2026-11-01.") from exc


class Command(BaseCommand):
    help = "Rebuild hourly and daily usage rollups for a range of days (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--since", required=True, help="first day, YYYY-MM-DD (UTC)")
        parser.add_argument("--until", help="last day, inclusive (default: today)")

    def handle(self, *args, **opts):
        since = _day(opts["since"])
        until = _day(opts["until"]) if opts["until"] else datetime.now(UTC)
        end = until.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        if end <= since:
            raise CommandError("--until must not be before --since.")
        day, hours, days = since, 0, 0
        while day < end:  # a day at a time keeps each transaction small
            hours += rollup_window(period="hour", start=day, end=day + timedelta(days=1))
            days += rollup_window(period="day", start=day, end=day + timedelta(days=1))
            day += timedelta(days=1)
        self.stdout.write(
            f"Rebuilt {hours} hourly and {days} daily rollup rows from {since:%Y-%m-%d} to {until:%Y-%m-%d}."
        )
