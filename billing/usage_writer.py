"""The control plane's usage writer: batches of records from the sink into gateway_requests."""

import json
import logging
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction

from .live import publish_usage
from .models import UsageRecord
from .services import mark_dirty_hours

log = logging.getLogger("bonito.billing.usage")
FIELDS = UsageRecord._meta.concrete_fields


def _created(value) -> datetime:
    return (
        datetime.fromtimestamp(value, UTC)
        if isinstance(value, int | float)
        else datetime.fromisoformat(value)
    )


@cache
def _columns(vendor: str) -> list[tuple]:
    """(attname, default when missing, converter or None) per column, built once.

    Plain ints and strings pass straight through: this runs for every row while the
    event loop serves requests, so the less Python per row, the less GIL it takes."""
    ops = connection.ops
    special = {
        "id": (lambda v: uuid.UUID(v).hex) if vendor == "sqlite" else uuid.UUID,
        "created_at": lambda v: ops.adapt_datetimefield_value(_created(v)),
        "cost": lambda v: ops.adapt_decimalfield_value(Decimal(repr(float(v or 0))), 14, 8),
    }
    return [
        (f.attname, None if f.null else f.get_default(), special.get(f.attname)) for f in FIELDS
    ]


def _row(record: dict, columns) -> list:
    row = []
    for name, default, convert in columns:
        value = record.get(name)
        if value is None:
            value = default
        row.append(convert(value) if convert is not None and value is not None else value)
    return row


@cache
def _insert_sql(vendor: str, rows: int) -> str:
    """One multi-row INSERT per batch. The ORM compiles SQL per row (a quarter of a worker's
    CPU under load), and executemany steps the database once per row, taking the GIL back
    each time: with the event loop busy, that convoy let the writer fall behind by minutes
    (docs/benchmarks.md). One statement is one step."""
    qn = connection.ops.quote_name
    columns = ", ".join(qn(f.column) for f in FIELDS)
    row = "(" + ", ".join(["%s"] * len(FIELDS)) + ")"
    values = ", ".join([row] * rows)
    table = qn(UsageRecord._meta.db_table)
    # Only identifiers from the model's own metadata go into the string; values are parameters.
    if vendor == "sqlite":
        return f"INSERT OR IGNORE INTO {table} ({columns}) VALUES {values}"  # noqa: S608
    return f"INSERT INTO {table} ({columns}) VALUES {values} ON CONFLICT ({qn('id')}) DO NOTHING"  # noqa: S608


ROWS_PER_STATEMENT = 500  # 21 columns: well under SQLite's and PostgreSQL's parameter limits


def _insert(records: list[dict]) -> None:
    columns = _columns(connection.vendor)
    with transaction.atomic(), connection.cursor() as cursor:
        for start in range(0, len(records), ROWS_PER_STATEMENT):
            chunk = records[start : start + ROWS_PER_STATEMENT]
            params = [value for r in chunk for value in _row(r, columns)]
            cursor.execute(_insert_sql(connection.vendor, len(chunk)), params)


def _mark_late(records: list[dict]) -> None:
    """Rows for hours that may already be rolled up (long requests, replayed spools)."""
    cutoff = time.time() - settings.USAGE_ROLLUP_GRACE_S
    late = []
    for record in records:
        value = record.get("created_at")
        if value is None:
            continue
        moment = value if isinstance(value, int | float) else _created(value).timestamp()
        if moment < cutoff:
            late.append(datetime.fromtimestamp(moment, UTC))
    if late:
        mark_dirty_hours(late)


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
        _mark_late(records)
        publish_usage(records)
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
        else:
            _mark_late([record])
            publish_usage([record])
