"""The control plane's usage writer: batches of records from the sink into gateway_requests."""

import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache

import orjson
from django.conf import settings
from django.db import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    InternalError,
    OperationalError,
    ProgrammingError,
    connection,
    transaction,
)

from core.text import name_safe
from gateway.models import ApiKey

from .budgets import hard_budgets_reached
from .live import publish_usage
from .models import RollupState, UsageRecord
from .services import RAW_KEPT_FROM, mark_dirty_hours

log = logging.getLogger("bonito.billing.usage")
FIELDS = UsageRecord._meta.concrete_fields


def _created(value) -> datetime:
    try:
        return (
            datetime.fromtimestamp(value, UTC)
            if isinstance(value, int | float)
            else datetime.fromisoformat(value)
        )
    except (OverflowError, OSError) as exc:  # a timestamp no calendar holds
        raise ValueError(f"created_at {value!r} is out of range") from exc


# PostgreSQL text holds no NUL; Python strings may hold lone surrogates no driver encodes.
_NUL = "\x00"


def _text(max_length: int):
    def clean(value) -> str:
        if not isinstance(value, str):
            value = str(value)
        if _NUL in value:
            value = value.replace(_NUL, "")
        if not value.isascii():
            value = value.encode("utf-8", "replace").decode("utf-8")
        return value[:max_length] if len(value) > max_length else value

    return clean


def _integer(low: int, high: int):
    def clamp(value) -> int:
        if type(value) is not int:
            value = int(value)  # a float, a numeric string; anything else is refused
        return low if value < low else high if value > high else value

    return clamp


COST_LIMIT = 999_999.99999999  # DecimalField(max_digits=14, decimal_places=8)


def _cost(ops):
    def convert(value):
        value = float(value or 0)
        if value != value:  # NaN: no price can be derived from it
            value = 0.0
        value = max(-COST_LIMIT, min(COST_LIMIT, value))
        return ops.adapt_decimalfield_value(Decimal(repr(value)), 14, 8)

    return convert


def _float(value) -> float | None:
    value = float(value)  # a number or a numeric string; anything else is refused
    return value if value == value and abs(value) != float("inf") else None


def _uuid(vendor: str):
    def convert(value):
        value = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
        return value.hex if vendor == "sqlite" else value

    return convert


@cache
def _columns(vendor: str) -> list[tuple]:
    """(attname, default when missing, converter or None) per column, built once.

    Every value is made storable here, in the writer thread, so the request path does no
    cleaning: text loses NUL and unencodable characters and is cut to the column's length,
    integers are clamped to the column's range. A value that cannot be converted at all
    (an id that is not a uuid) raises, and the sink sets that record aside."""
    ops = connection.ops
    special = {
        "id": _uuid(vendor),
        "created_at": lambda v: ops.adapt_datetimefield_value(_created(v)),
        "cost": _cost(ops),
    }
    columns = []
    for f in FIELDS:
        convert = special.get(f.attname)
        kind = f.get_internal_type()
        if convert is None and kind == "CharField":
            convert = _text(f.max_length)
        elif convert is None and kind.endswith("IntegerField"):
            convert = _integer(*ops.integer_field_range(kind))
        elif convert is None and kind == "DecimalField":
            convert = _cost(ops)
        elif convert is None and kind == "FloatField":
            convert = _float
        default = None if f.null or f.attname == "id" else f.get_default()
        columns.append((f.attname, default, convert))
    return columns


def _row(record: dict, columns) -> list:
    row = []
    for name, default, convert in columns:
        value = record.get(name)
        if value is None:
            value = uuid.uuid4() if name == "id" else default
        row.append(convert(value) if convert is not None and value is not None else value)
    return row


@cache
def _insert_sql(vendor: str, rows: int) -> str:
    """One statement per batch (of up to ROWS_PER_STATEMENT rows). The ORM compiles SQL per
    row (a quarter of a worker's CPU under load), and executemany steps the database once
    per row, taking the GIL back each time: with the event loop busy, that convoy let the
    writer fall behind by minutes (docs/benchmarks.md). One statement is one step.

    PostgreSQL gets the batch as one JSON document (``json_populate_recordset`` over the
    table's own row type): one parameter, encoded by orjson, and the same short statement
    for every batch. A multi-row VALUES has 27 parameters a row, which the driver parsed
    anew for every batch and adapted one by one in Python: three times the CPU, held
    while the event loop waits for the GIL (docs/benchmarks.md). SQLite gets a multi-row
    VALUES."""
    qn = connection.ops.quote_name
    columns = ", ".join(qn(f.column) for f in FIELDS)
    table = qn(UsageRecord._meta.db_table)
    # Only identifiers from the model's own metadata go into the string; values are
    # parameters.
    if vendor == "postgresql":
        # No conflict target: the primary key is (id, created_at) on the partitioned table
        # (PostgreSQL wants the partition key in it) and id alone on an unpartitioned one.
        # A replayed record carries its first created_at, so either key catches it.
        return (
            f"INSERT INTO {table} ({columns}) SELECT {columns}"  # noqa: S608
            f" FROM json_populate_recordset(NULL::{table}, %s) ON CONFLICT DO NOTHING"
        )
    row = "(" + ", ".join(["%s"] * len(FIELDS)) + ")"
    values = ", ".join([row] * rows)
    if vendor == "sqlite":
        return f"INSERT OR IGNORE INTO {table} ({columns}) VALUES {values}"  # noqa: S608
    return f"INSERT INTO {table} ({columns}) VALUES {values} ON CONFLICT DO NOTHING"  # noqa: S608


ROWS_PER_STATEMENT = 500  # 27 columns: well under SQLite's and PostgreSQL's parameter limits


@cache
def _column_names() -> tuple[str, ...]:
    return tuple(f.column for f in FIELDS)


def _params(vendor: str, chunk: list[dict], columns) -> list:
    """The statement's parameters. For PostgreSQL, every column of every row is in the
    document (json_populate_recordset gives a missing key NULL, not the column's default):
    uuids and times as orjson writes them, money as the Decimal's exact text."""
    if vendor == "postgresql":
        names = _column_names()
        rows = [dict(zip(names, _row(r, columns), strict=True)) for r in chunk]
        return [orjson.dumps(rows, default=_exact).decode()]
    return [value for r in chunk for value in _row(r, columns)]


def _exact(value):
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a column value")


# Retention keeps at least this much (billing.partitions.MIN_RETENTION_DAYS): a record
# younger than it cannot fall before the raw rows' kept-from mark, and costs no query.
KEPT_AT_LEAST_S = 35 * 86400


class ExpiredRecord(ValueError):
    """A record older than the raw rows kept: refused, so the sink sets it aside."""


def _moment(value) -> float:
    """A record's created_at (epoch seconds or ISO text) as epoch seconds."""
    return value if isinstance(value, int | float) else _created(value).timestamp()


def _moments(records: list[dict]) -> list[float]:
    return [_moment(r["created_at"]) for r in records if r.get("created_at") is not None]


def _refuse_expired(records: list[dict]) -> None:
    """Refuse records whose time retention has already removed (docs/usage-data.md,
    *Records older than the rows kept*). Their range was dropped once its rollups held all
    its rows, and ids can no longer be compared: a replay (journal, spool, dead letters) of
    a record written then would be counted twice, so it is set aside, never guessed at.
    The mark is read locked (retention moves it under the same lock), so a removal cannot
    slip between this check and the insert."""
    horizon = time.time() - KEPT_AT_LEAST_S
    old = {}
    for record in records:
        value = record.get("created_at")
        if value is not None:
            moment = _moment(value)
            if moment < horizon:
                old[record.get("id")] = moment
    if not old:
        return
    state = RollupState.objects.select_for_update().filter(period=RAW_KEPT_FROM).first()
    if state is None:
        return
    kept_from = state.rolled_until.timestamp()
    expired = [rid for rid, moment in old.items() if moment < kept_from]
    if expired:
        raise ExpiredRecord(
            f"usage record {expired[0]} is older than the raw rows kept (from"
            f" {state.rolled_until.isoformat()}, USAGE_RETENTION_DAYS): its range was removed"
            " after being rolled up, so it may be counted already"
        )


def _insert(records: list[dict]) -> None:
    vendor = connection.vendor
    columns = _columns(vendor)
    moments = _moments(records)
    # The usual batch (recent rows, one statement) is one statement in autocommit: no
    # BEGIN and COMMIT round trips. Late rows, old rows and big batches take a transaction:
    # the late rows' hour marks must land with them, an old row's check holds a lock.
    # Inside a caller's transaction, a savepoint keeps a refused batch from spoiling it.
    simple = (
        len(records) <= ROWS_PER_STATEMENT
        and (not moments or min(moments) >= time.time() - settings.USAGE_ROLLUP_GRACE_S)
        and not connection.in_atomic_block
    )
    with (
        contextlib.nullcontext() if simple else transaction.atomic(),
        connection.cursor() as cursor,
    ):
        if not simple:
            _refuse_expired(records)  # first: the lock order retention uses (mark, then table)
        for start in range(0, len(records), ROWS_PER_STATEMENT):
            chunk = records[start : start + ROWS_PER_STATEMENT]
            rows = 0 if vendor == "postgresql" else len(chunk)  # one statement for any size
            cursor.execute(_insert_sql(vendor, rows), _params(vendor, chunk, columns))
        if not simple:
            # In the same transaction: retention (billing.partitions) drops a range only when
            # no hour of it is marked, and must never see a late row without its mark.
            _mark_late(records)


def _mark_late(records: list[dict]) -> None:
    """Rows for hours that may already be rolled up (long requests, replayed spools)."""
    cutoff = time.time() - settings.USAGE_ROLLUP_GRACE_S
    late = []
    for record in records:
        value = record.get("created_at")
        if value is None:
            continue
        moment = _moment(value)
        if moment < cutoff:
            late.append(datetime.fromtimestamp(moment, UTC))
    if late:
        mark_dirty_hours(late)


def is_refusal(exc: BaseException) -> bool:
    """True when the database refuses these rows for their content (the sink splits the
    batch and sets the refused rows aside); False when it is unreachable or not ready
    (the sink spools the batch and retries)."""
    if isinstance(exc, OperationalError | InterfaceError | InternalError):
        return False  # connection gone, server shutting down, locked, out of resources
    if isinstance(exc, ProgrammingError):
        # An unmigrated schema (undefined table or column: SQLSTATE class 42) is not the
        # rows' fault; a value the driver cannot send is.
        sqlstate = getattr(exc.__cause__, "sqlstate", None) or ""
        return not sqlstate.startswith("42")
    if isinstance(exc, DatabaseError):
        return True  # DataError, IntegrityError, NotSupportedError
    # Raised while converting or sending a value: the row's content.
    return isinstance(exc, ValueError | TypeError | ArithmeticError | UnicodeError)


KEYS_PER_STATEMENT = 500


def keys_last_used(records: list[dict]) -> None:
    """Move each key's ``last_used_at`` forward to its newest record in the batch: the key
    list shows it without reading usage rows; a replayed or late record never moves it
    back. On PostgreSQL one statement per 500 keys, in autocommit (it was four round trips
    and two ORM compilations per batch: the usage writer's largest cost), locking the rows
    in id order first, so writers of other processes updating the same keys wait in turn
    rather than deadlock, and inserts of usage rows (whose foreign-key checks share-lock
    the same keys) never wait for it. SQLite has one writer at a time."""
    newest: dict[int, float] = {}
    for record in records:
        key_id, value = record.get("key_id"), record.get("created_at")
        if key_id is None or value is None:
            continue
        moment = _moment(value)
        if moment > newest.get(key_id, float("-inf")):
            newest[key_id] = moment
    ids = sorted(newest)
    ops = connection.ops
    postgresql = connection.vendor == "postgresql"
    # PostgreSQL: one statement per chunk, in autocommit. SQLite: one statement per key,
    # all in one transaction (one commit, not one a key).
    with (
        contextlib.nullcontext() if postgresql else transaction.atomic(),
        connection.cursor() as cursor,
    ):
        for start in range(0, len(ids), KEYS_PER_STATEMENT):
            chunk = ids[start : start + KEYS_PER_STATEMENT]
            when = [ops.adapt_datetimefield_value(_created(newest[k])) for k in chunk]
            if postgresql:
                cursor.execute(_last_used_sql(connection.vendor), [chunk, when])
            else:
                cursor.executemany(
                    _last_used_sql(connection.vendor),
                    [(w, k, w) for k, w in zip(chunk, when, strict=True)],
                )


@cache
def _last_used_sql(vendor: str) -> str:
    qn = connection.ops.quote_name
    table, pk = qn(ApiKey._meta.db_table), qn(ApiKey._meta.pk.column)
    column = qn(ApiKey._meta.get_field("last_used_at").column)
    if vendor == "postgresql":
        # MATERIALIZED: the locking CTE runs whole, in id order, before the update. NO KEY
        # UPDATE (the lock an UPDATE of a non-key column takes anyway): the usage rows'
        # foreign-key checks of other writers' inserts take KEY SHARE on the same keys in
        # any order, and FOR UPDATE would conflict with them (a deadlock, found by the test).
        return (
            f"WITH v AS (SELECT * FROM unnest(%s::bigint[], %s::timestamptz[]) AS v(id, at)),"  # noqa: S608
            f" locked AS MATERIALIZED (SELECT k.{pk} FROM {table} k JOIN v ON v.id = k.{pk}"
            f" ORDER BY k.{pk} FOR NO KEY UPDATE OF k)"
            f" UPDATE {table} k SET {column} = v.at FROM v"
            f" WHERE k.{pk} = v.id AND k.{pk} IN (SELECT {pk} FROM locked)"
            f" AND (k.{column} IS NULL OR k.{column} < v.at)"
        )
    return (
        f"UPDATE {table} SET {column} = %s WHERE {pk} = %s"  # noqa: S608
        f" AND ({column} IS NULL OR {column} < %s)"
    )


def _displayable(records: list[dict]) -> list[dict]:
    """``records`` with the model each client asked for made safe to show: it is the
    client's own text (a /v1 body, an agent's batch), read by the Logs page, the live tail,
    the CSV export, the REST API and the CLI, so a control, bidi or zero-width character
    in it is stored as its escape (``gpt\\u202e4o``, core.text.name_safe). Real model
    names follow the names rule and are stored as sent; printable ASCII costs one check."""
    out = None
    for i, record in enumerate(records):
        value = record.get("model_requested")
        if isinstance(value, str) and not (value.isascii() and value.isprintable()):
            safe = name_safe(value)
            if safe != value:
                if out is None:
                    out = list(records)
                out[i] = {**record, "model_requested": safe}
    return records if out is None else out


def write_usage(records: list[dict]) -> None:
    """Insert a batch; ids make a replayed batch a no-op for rows already written.

    Raises when the database is unreachable (the sink spools and retries) or refuses a
    row's content (`is_refusal`: the sink isolates the row and sets it aside). A row
    whose key or team was deleted meanwhile is stored without them, as the foreign keys'
    SET_NULL would have done."""
    records = _displayable(records)
    # This thread keeps its connection between batches; an error drops it so the next
    # batch reconnects.
    try:
        try:
            _insert(records)
        except IntegrityError:
            if len(records) != 1 or not (records[0].get("key_id") or records[0].get("team_id")):
                raise
            _insert([{**records[0], "key_id": None, "team_id": None}])
    except Exception as exc:
        if not is_refusal(exc):
            connection.close()  # reconnect on the next batch
        raise
    publish_usage(records)
    try:
        keys_last_used(records)
    except Exception:  # the rows are stored; a key's "last used" catches up with the next batch
        log.warning("moving the keys' last use after a usage batch failed", exc_info=True)
        connection.close()
    try:
        hard_budgets_reached(records)
    except Exception:  # the rows are stored; the minute's budget check still runs
        log.warning("checking hard budgets after a usage batch failed", exc_info=True)


# A client may name its requests (x-request-id), so one id can be many rows (its retries,
# or an app sending the same id with every request): a rating updates at most this many,
# the newest, so one feedback call is never a write to millions of rows.
FEEDBACK_MAX_ROWS = 10


def record_feedback(org_id: int, request_id: str, score: float) -> int:
    """POST /v1/feedback: the app's rating (0-1) on its org's usage rows of that request id
    (not on other feedback calls; the newest FEEDBACK_MAX_ROWS); how many rows it rated.
    Runs in a worker thread."""
    try:
        newest = list(
            UsageRecord.objects.filter(org_id=org_id, request_id=request_id)
            .exclude(endpoint="feedback")
            .order_by("-created_at")
            .values_list("id", flat=True)[:FEEDBACK_MAX_ROWS]
        )
        if not newest:
            return 0
        return UsageRecord.objects.filter(org_id=org_id, id__in=newest).update(feedback_score=score)
    finally:
        connection.close()  # a worker thread of the event loop's: no connection left open
