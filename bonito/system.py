"""Platform-wide numbers for the admin System page."""

from pathlib import Path

from django.conf import settings
from django.utils import timezone

from orgs.models import Organization, User


def platform_counts() -> dict:
    from billing.models import UsageRecord
    from gateway.models import ApiKey

    start_of_day = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "organizations": Organization.objects.count(),
        "users": User.objects.count(),
        "active API keys": ApiKey.objects.active().count(),
        "requests today": UsageRecord.objects.filter(created_at__gte=start_of_day).count(),
    }


def _lines(files: list[Path]) -> int:
    total = 0
    for path in files:
        try:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    total += chunk.count(b"\n")
        except OSError:
            continue  # replayed and removed meanwhile
    return total


def _jsonl(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jsonl")) if folder.is_dir() else []


def usage_pipeline() -> dict:
    """Usage records on this server's disk that are not (yet) rows: batches spooled while
    the database was unreachable (replayed by the writers on their own), records the
    database refused for their content (set aside for a person to look at), and the
    journals of server processes (a stopped process's journal is replayed at the next
    start). The folders are per server: with several replicas, each has its own."""
    spool = _jsonl(settings.GATEWAY_SPOOL_DIR)
    dead = _jsonl(settings.GATEWAY_DEAD_LETTER_DIR)
    journals = _jsonl(settings.GATEWAY_USAGE_JOURNAL_DIR)
    return {
        "spooled": {
            "records": _lines(spool),
            "files": len(spool),
            "folder": settings.GATEWAY_SPOOL_DIR,
        },
        "dead_letters": {
            "records": _lines(dead),
            "files": [p.name for p in dead],
            "folder": settings.GATEWAY_DEAD_LETTER_DIR,
        },
        "journals": {
            "files": len(journals),
            "folder": settings.GATEWAY_USAGE_JOURNAL_DIR,
            "enabled": settings.GATEWAY_USAGE_JOURNAL,
        },
    }
