"""The control plane's usage writer: batches of records from the sink into gateway_requests."""

import json
import logging
import time
from datetime import UTC, datetime
from decimal import Decimal

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction

from .models import UsageRecord

log = logging.getLogger("bonito.billing.usage")
FIELDS = UsageRecord._meta.concrete_fields


def _value(field, record: dict):
    value = record.get(field.attname)
    if value is None and field.attname not in record or (value is None and not field.null):
        value = field.get_default()
    if field.attname == "cost":
        value = Decimal(str(value or 0))
    elif field.attname == "created_at":
        value = (
            datetime.fromtimestamp(value, UTC)
            if isinstance(value, int | float)
            else datetime.fromisoformat(value)
        )
    return field.get_db_prep_save(value, connection)


def _insert_sql() -> str:
    """One prepared INSERT for the whole batch: the ORM compiles SQL per row, which cost
    a quarter of a gateway worker's CPU under load (docs/benchmarks.md)."""
    qn = connection.ops.quote_name
    columns = ", ".join(qn(f.column) for f in FIELDS)
    marks = ", ".join(["%s"] * len(FIELDS))
    table = qn(UsageRecord._meta.db_table)
    # Only identifiers from the model's own metadata go into the string; values are parameters.
    if connection.vendor == "sqlite":
        return f"INSERT OR IGNORE INTO {table} ({columns}) VALUES ({marks})"  # noqa: S608
    return f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT ({qn('id')}) DO NOTHING"  # noqa: S608


def _insert(records: list[dict]) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(_insert_sql(), [[_value(f, r) for f in FIELDS] for r in records])


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
    # This thread keeps its connection between batches; an error drops it so the next
    # batch reconnects.
    try:
        _insert(records)
        return
    except IntegrityError:
        pass
    except DatabaseError:
        connection.close()  # reconnect on the next batch
        raise
    for record in records:
        try:
            _insert([record])
        except IntegrityError as exc:
            _dead_letter(record, exc)
