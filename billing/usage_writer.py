"""The control plane's usage writer: batches of records from the sink into gateway_requests."""

import json
import logging
import time
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import DatabaseError, IntegrityError, close_old_connections, connection, transaction

from .models import UsageRecord

log = logging.getLogger("bonito.billing.usage")
FIELDS = {f.attname for f in UsageRecord._meta.concrete_fields}


def _row(record: dict) -> UsageRecord:
    values = {k: v for k, v in record.items() if k in FIELDS}
    values["cost"] = Decimal(str(values.get("cost") or 0))
    if isinstance(values.get("created_at"), str):
        values["created_at"] = datetime.fromisoformat(values["created_at"])
    return UsageRecord(**values)


def _dead_letter(record: dict, exc: Exception) -> None:
    """A record the database will never take (say, its org was deleted): keep it aside, loudly."""
    folder = settings.GATEWAY_SPOOL_DIR.parent / "dead"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"usage-{time.strftime('%Y%m%d')}.jsonl", "a") as f:
        f.write(
            json.dumps({"record": record, "error": f"{type(exc).__name__}: {exc}"}, default=str)
            + "\n"
        )
    log.error("usage record %s cannot be stored (%s); kept in %s", record.get("id"), exc, folder)


def write_usage(records: list[dict]) -> None:
    """Insert a batch; ids make a replayed batch a no-op for rows already written.

    Raises only when the database is unreachable, so the sink spools and retries; a row
    the database refuses for its content goes to a dead-letter file instead of blocking
    every later batch."""
    close_old_connections()
    try:
        UsageRecord.objects.bulk_create(
            [_row(r) for r in records], ignore_conflicts=True, batch_size=500
        )
        return
    except IntegrityError:
        pass
    except DatabaseError:
        connection.close()  # reconnect on the next batch
        raise
    for record in records:
        try:
            with transaction.atomic():
                UsageRecord.objects.bulk_create([_row(record)], ignore_conflicts=True)
        except IntegrityError as exc:
            _dead_letter(record, exc)
