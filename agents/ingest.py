"""POST /api/agent/ingest: an agent's batch of usage records into gateway_requests.

The records are the ones the data plane hands its usage sink; they go through the same
writer as the shared gateway's (billing.usage_writer), so rollups, late hours, partitions
and retention behave the same, with source=vpc_agent whatever the record says. Nothing
but metadata is accepted: a field the writer does not know (messages, prompt, output...)
refuses the whole batch."""

import hashlib
import json
import math
import uuid
import zlib
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction

from billing.models import UsageRecord
from billing.usage_writer import is_refusal, write_usage
from core.text import name_safe
from gateway.models import ApiKey
from orgs.models import Team

from .models import IngestBatch

FIELDS = {f.attname: f for f in UsageRecord._meta.concrete_fields}
STATUSES = set(UsageRecord.Status.values)
FUTURE_SKEW = timedelta(minutes=5)
ERRORS_SHOWN = 50


class AgentError(Exception):
    """An answer other than 2xx: {"detail", "code"} (and "errors" for 422)."""

    def __init__(self, status: int, code: str, detail: str, errors=None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.errors = status, code, detail, errors

    def body(self) -> dict:
        out = {"detail": self.detail, "code": self.code}
        if self.errors is not None:
            out["errors"] = self.errors[:ERRORS_SHOWN]
        return out


def _mib(n: int) -> str:
    return f"{n} bytes ({n / 1048576:g} MiB)"


def decoded_body(raw: bytes, encoding: str) -> bytes:
    """The body, decompressed within AGENT_INGEST_MAX_DECOMPRESSED_BYTES: a gzip bomb is
    stopped at the limit, never inflated in memory."""
    limit = settings.AGENT_INGEST_MAX_BYTES
    if len(raw) > limit:
        raise AgentError(413, "too_large", f"The compressed body exceeds {_mib(limit)}.")
    out_limit = settings.AGENT_INGEST_MAX_DECOMPRESSED_BYTES
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        data = raw
    elif encoding == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(raw, out_limit + 1)
            if len(data) <= out_limit:
                data += inflater.flush()
        except zlib.error as exc:
            raise AgentError(400, "bad_gzip", f"The body is not valid gzip ({exc}).") from None
        if not inflater.eof and len(data) <= out_limit:
            raise AgentError(400, "bad_gzip", "The gzip body is truncated.")
    else:
        raise AgentError(
            400, "bad_encoding", f"Content-Encoding {encoding!r}: use gzip or identity."
        )
    if len(data) > out_limit:
        raise AgentError(413, "too_large", f"The decompressed body exceeds {_mib(out_limit)}.")
    return data


def parsed_batch(data: bytes) -> tuple[uuid.UUID, list]:
    limit = settings.AGENT_INGEST_MAX_RECORDS
    # Records are flat objects of a few dozen fields: a body with far more objects or values
    # than AGENT_INGEST_MAX_RECORDS of them can hold is refused before parsing would build
    # millions of Python objects (16 MiB of "{}," is 5M dicts, ~400 MB). Generous: braces
    # and commas inside strings are counted too.
    if data.count(b"{") > 4 * limit + 16 or data.count(b",") > 64 * (limit + 1):
        raise AgentError(413, "too_many_records", f"A batch holds at most {limit} records.")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise AgentError(400, "bad_json", f"The body is not JSON ({str(exc)[:200]}).") from None
    if not isinstance(doc, dict) or set(doc) - {"batch_id", "records"}:
        raise AgentError(
            400, "invalid", 'The body must be {"batch_id": "<uuid>", "records": [...]}.'
        )
    try:
        batch_id = uuid.UUID(str(doc.get("batch_id")))
    except ValueError:
        raise AgentError(400, "invalid", "batch_id must be a UUID.") from None
    records = doc.get("records")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise AgentError(400, "invalid", "records must be a list of objects.")
    if len(records) > limit:
        raise AgentError(413, "too_many_records", f"A batch holds at most {limit} records.")
    return batch_id, records


def _is_int(value) -> bool:
    return type(value) is int


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _moment(value) -> datetime:
    if _is_number(value):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError("an ISO 8601 time needs its UTC offset")
        return moment
    raise ValueError("not a time")


def _record_problem(
    record: dict, org_id: int, foreign_keys: set, foreign_teams: set, now: datetime
) -> str:
    """Why this record is refused ("" when it is not)."""
    unknown = sorted(set(record) - FIELDS.keys())
    if unknown:
        return f"fields not accepted (only usage metadata is): {', '.join(unknown)[:200]}"
    try:
        uuid.UUID(str(record.get("id")))
    except ValueError:
        return "id must be a UUID"
    if "org_id" in record and record["org_id"] != org_id:
        return "org_id is not this token's organization"
    key_id = record.get("key_id")
    if key_id is not None and (not _is_int(key_id) or key_id in foreign_keys):
        return "key_id is not a key of this token's organization"
    team_id = record.get("team_id")
    if team_id is not None and (not _is_int(team_id) or team_id in foreign_teams):
        return "team_id is not a team of this token's organization"
    try:
        moment = _moment(record.get("created_at"))
    except (ValueError, OverflowError, OSError):
        return "created_at must be epoch seconds or an ISO 8601 time with its offset"
    if moment > now + FUTURE_SKEW:
        return "created_at is more than 5 minutes in the future"
    if moment < now - timedelta(days=settings.AGENT_INGEST_MAX_AGE_DAYS):
        return f"created_at is older than {settings.AGENT_INGEST_MAX_AGE_DAYS} days"
    if record.get("status") not in STATUSES:
        return f"status must be one of {', '.join(sorted(STATUSES))}"
    for name, value in record.items():
        if value is None or name in ("id", "org_id", "key_id", "team_id", "created_at"):
            continue
        problem = _value_problem(name, FIELDS[name], value)
        if problem:
            return problem
    return ""


# The largest value each integer column holds (PostgreSQL's ranges; SQLite would store
# more, then overflow in the dashboards' sums).
INT_MAX = {"PositiveSmallIntegerField": 2**15 - 1, "PositiveIntegerField": 2**31 - 1}
UNIT_INTERVAL = {"route_score", "feedback_score"}  # scores: 0 to 1


def _value_problem(name: str, field, value) -> str:
    """Why this value cannot go into this column ("" when it can): the type, finite, not
    negative (a negative cost would lower the org's recorded spend), within the column."""
    kind = field.get_internal_type()
    if kind == "CharField":
        return "" if isinstance(value, str) else f"{name} must be a string"
    if kind.endswith("IntegerField"):
        top = INT_MAX.get(kind, 2**63 - 1)
        if not (_is_int(value) and 0 <= value <= top):
            return f"{name} must be a whole number from 0 to {top}"
        return ""
    if kind in ("DecimalField", "FloatField"):
        if not (_is_number(value) and math.isfinite(value) and value >= 0):
            return f"{name} must be a finite number, not negative"
        if name in UNIT_INTERVAL and value > 1:
            return f"{name} must be between 0 and 1"
        if kind == "DecimalField" and value >= 10 ** (field.max_digits - field.decimal_places):
            return f"{name} must be below {10 ** (field.max_digits - field.decimal_places):,}"
    return ""


def _foreign(model, org, ids: set) -> set:
    """The ids among ``ids`` that are rows of another org."""
    found = set()
    listed = [i for i in ids if -(2**63) <= i < 2**63]  # beyond: no row has it
    for start in range(0, len(listed), 500):
        found.update(
            model.objects.filter(id__in=listed[start : start + 500])
            .exclude(org=org)
            .values_list("id", flat=True)
        )
    return found


def _answer_of(org, batch_id, digest: str) -> dict | None:
    seen = IngestBatch.objects.filter(org=org, batch_id=batch_id).first()
    if seen is None:
        return None
    if seen.payload_sha256 != digest:
        raise AgentError(
            422, "batch_id_reused", "This batch_id was already used for another payload.", []
        )
    return seen.answer


def ingest(org, raw: bytes, encoding: str) -> dict:
    """Write a batch once; the same batch again returns its first answer."""
    data = decoded_body(raw, encoding)
    digest = hashlib.sha256(data).hexdigest()
    batch_id, records = parsed_batch(data)
    answer = _answer_of(org, batch_id, digest)
    if answer is not None:
        return answer
    # Another org's key or team refuses the batch; one deleted since the request is stored
    # without it, as the writer does for the shared gateway (money is never dropped).
    key_ids = {r.get("key_id") for r in records if _is_int(r.get("key_id"))}
    team_ids = {r.get("team_id") for r in records if _is_int(r.get("team_id"))}
    keys = _foreign(ApiKey, org, key_ids)
    teams = _foreign(Team, org, team_ids)
    now = datetime.now(UTC)
    errors = []
    for index, record in enumerate(records):
        problem = _record_problem(record, org.id, keys, teams, now)
        if problem:
            errors.append({"index": index, "reason": problem})
    if errors:
        raise AgentError(
            422, "records_refused", f"{len(errors)} record(s) refused; nothing was written.", errors
        )
    try:
        with transaction.atomic():
            return _write(org, batch_id, digest, records)
    except IntegrityError:
        # The same batch, sent twice at once: the other request wrote it first.
        answer = _answer_of(org, batch_id, digest)
        if answer is None:
            raise
        return answer


def _write(org, batch_id, digest: str, records: list) -> dict:
    # The batch row first: a concurrent replay waits on its unique key, then finds it.
    batch = IngestBatch.objects.create(org=org, batch_id=batch_id, payload_sha256=digest, answer={})
    live_keys = set(ApiKey.objects.filter(org=org).values_list("id", flat=True))
    live_teams = set(Team.objects.filter(org=org).values_list("id", flat=True))
    fresh, ids = [], set()
    for record in records:
        rid = uuid.UUID(str(record["id"]))
        if rid not in ids:
            ids.add(rid)
            # Text an agent sends is shown on the Logs page, in exports and REST: every
            # control, bidi or zero-width character is stored as its escape (name_safe).
            row = {k: name_safe(v) if isinstance(v, str) else v for k, v in record.items()}
            row.update(id=rid, org_id=org.id, source="vpc_agent")
            if row.get("key_id") not in live_keys:
                row["key_id"] = None
            if row.get("team_id") not in live_teams:
                row["team_id"] = None
            fresh.append(row)
    existing, taken = set(), set()
    listed = list(ids)
    for start in range(0, len(listed), 500):
        for rid, owner in UsageRecord.objects.filter(
            id__in=listed[start : start + 500]
        ).values_list("id", "org_id"):
            (existing if owner == org.id else taken).add(rid)
    if taken:  # another org's row has this id: never "accepted" and silently not written
        errors = [
            {"index": i, "reason": "id is another organization's record"}
            for i, r in enumerate(records)
            if uuid.UUID(str(r["id"])) in taken
        ]
        raise AgentError(
            422, "records_refused", f"{len(errors)} record(s) refused; nothing was written.", errors
        )
    fresh = [r for r in fresh if r["id"] not in existing]
    if fresh:
        try:
            write_usage(fresh)
        except Exception as exc:
            if is_refusal(exc):
                raise AgentError(
                    422,
                    "records_refused",
                    f"The database refused the batch ({exc.__class__.__name__}).",
                    [],
                ) from exc
            raise AgentError(503, "unavailable", "The database is unavailable; retry.") from exc
    answer = {
        "batch_id": str(batch_id),
        "accepted": len(fresh),
        "duplicates": len(records) - len(fresh),
    }
    batch.answer = answer
    batch.save(update_fields=["answer"])
    return answer
