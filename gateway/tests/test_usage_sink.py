"""The usage sink off the request path: batching, spool and replay, housekeeping; and the
heap trim it runs between bursts."""

import io
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from gateway.dataplane.memory import release_free_memory
from gateway.dataplane.usage import UsageSink
from gateway.tests.conftest import ACTOR

ROOT = Path(__file__).resolve().parents[2]


class Writer:
    def __init__(self):
        self.rows: list[dict] = []
        self.fail = False
        self.lock = threading.Lock()

    def __call__(self, batch):
        if self.fail:
            raise ConnectionError("database is down")
        with self.lock:
            self.rows.extend(batch)


def wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_spooled_batches_replay_in_order_once_the_writer_is_back(tmp_path):
    writer = Writer()
    writer.fail = True
    sink = UsageSink(writer, tmp_path, batch_size=2, flush_interval=0.01, retry_interval=0.02)
    try:
        for i in range(5):
            sink.submit({"n": i})
        assert sink.flush()
        assert writer.rows == [] and sink.spooled == 5
        assert list(tmp_path.glob("*.jsonl"))
        writer.fail = False
        assert wait_for(lambda: len(writer.rows) == 5)
        assert [r["n"] for r in writer.rows] == [0, 1, 2, 3, 4]
        assert wait_for(lambda: not list(tmp_path.glob("*.jsonl")))
    finally:
        sink.stop()


def test_records_trickling_in_within_the_linger_are_one_write(tmp_path):
    batches = []
    sink = UsageSink(batches.append, tmp_path, flush_interval=0.01, linger=0.5, batch_size=4)
    try:
        for i in range(6):  # 20 ms apart: one write of 4 (batch_size), then one of 2
            sink.submit({"n": i})
            time.sleep(0.02)
        assert sink.flush()
        assert [[r["n"] for r in b] for b in batches] == [[0, 1, 2, 3], [4, 5]]
    finally:
        sink.stop()


def test_a_flush_does_not_wait_out_the_linger(tmp_path):
    # A flush (a test, a shutdown) wants what is queued written now: the linger is for
    # collecting more records, not for making a flush wait. A lone record with a 60 s linger
    # is written within the flush's own 5 s timeout, once, and the marker that woke the
    # writer is never a record.
    batches = []
    sink = UsageSink(batches.append, tmp_path, flush_interval=0.01, linger=60.0)
    try:
        sink.submit({"n": 0})
        time.sleep(0.05)  # the writer has the record and lingers
        assert sink.flush(timeout=5.0)
        assert batches == [[{"n": 0}]]
        sink.submit({"n": 1})
        assert sink.flush(timeout=5.0)
        assert batches == [[{"n": 0}], [{"n": 1}]]
    finally:
        sink.stop()


def test_without_linger_a_lone_record_is_written_at_once(tmp_path):
    batches = []
    sink = UsageSink(batches.append, tmp_path, flush_interval=0.01)
    try:
        sink.submit({"n": 0})
        assert wait_for(lambda: batches, timeout=0.5)
    finally:
        sink.stop()


def test_housekeeping_runs_while_traffic_flows_and_when_it_pauses(tmp_path):
    writer, calls, idle = Writer(), [], []
    sink = UsageSink(
        writer,
        tmp_path,
        flush_interval=0.01,
        on_idle=lambda: idle.append(time.monotonic()),
        on_housekeeping=lambda: calls.append(time.monotonic()),
        housekeeping_interval=0.05,
    )
    try:
        # Steady traffic for 0.4 s: no pause long enough to go idle.
        end = time.monotonic() + 0.4
        while time.monotonic() < end:
            sink.submit({"t": time.monotonic()})
            last = time.monotonic()  # the pause starts at the last submit, not at `end`
            time.sleep(0.002)
        during = len(calls)
        assert during >= 3, calls  # periodic, not only at the end
        # and once at the pause. A loaded machine may stall the submitting thread past the
        # flush interval mid-traffic (an honest idle then, and after the last submit the
        # sleep may outlast `end`); after the traffic, exactly one.
        assert wait_for(lambda: [t for t in idle if t >= last] and len(calls) > during)
        time.sleep(0.1)
        assert len([t for t in idle if t >= last]) == 1, idle
        assert sink.flush() and len(writer.rows) == sink.written
    finally:
        sink.stop()


def test_a_failing_housekeeping_hook_loses_no_usage(tmp_path):
    writer = Writer()

    def broken():
        raise RuntimeError("boom")

    sink = UsageSink(
        writer, tmp_path, flush_interval=0.01, on_housekeeping=broken, housekeeping_interval=0
    )
    try:
        for i in range(50):
            sink.submit({"n": i})
        assert sink.flush()
        assert wait_for(lambda: len(writer.rows) == 50)
        sink.submit({"n": 50})
        assert sink.flush() and len(writer.rows) == 51
    finally:
        sink.stop()


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim")
def test_release_free_memory_gives_freed_heap_back_to_the_os():
    # 60k blocks of 1 KB go through malloc (not Python's small-object allocator); one
    # allocated after them pins the top of the heap, so only a real trim can free them.
    blocks = [bytes(1000) + bytes([i % 256]) for i in range(60_000)]
    pin = bytes(1000) + b"pin"
    del blocks
    before = _rss_mb()
    assert release_free_memory() is True
    after = _rss_mb()
    assert before - after > 30, (before, after)
    assert pin.endswith(b"pin")


# -- no poison record: a refused record is set aside, never blocks the ones behind it ---
class Refusing(Writer):
    """A target that refuses records marked bad (as a database refuses a row's content)."""

    def __call__(self, batch):
        if any(r.get("bad") for r in batch):
            raise ValueError("refused: bad content")
        super().__call__(batch)


def refused(exc):
    return isinstance(exc, ValueError)


def _dead(folder):
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.open()]


def test_a_refused_record_is_set_aside_and_the_rest_of_its_batch_is_written(tmp_path):
    writer = Refusing()
    sink = UsageSink(
        writer, tmp_path / "spool", batch_size=100, flush_interval=0.01, is_refusal=refused
    )
    try:
        for i in range(40):
            sink.submit({"n": i, "bad": i == 17})
        assert sink.flush()
        assert [r["n"] for r in writer.rows] == [i for i in range(40) if i != 17]
        dead = _dead(tmp_path / "dead")
        assert [d["record"]["n"] for d in dead] == [17]
        assert dead[0]["error"] == "ValueError: refused: bad content"
        assert sink.dead_lettered == 1 and not list((tmp_path / "spool").glob("*"))
    finally:
        sink.stop()


def test_a_spooled_file_holding_a_refused_record_blocks_nothing(tmp_path):
    spool = tmp_path / "spool"
    writer = Refusing()
    writer.fail = True  # the database is down: everything spools, the bad record too
    sink = UsageSink(writer, spool, flush_interval=0.01, retry_interval=0.02, is_refusal=refused)
    try:
        for i in range(10):
            sink.submit({"n": i, "bad": i == 3})
        assert sink.flush() and sink.spooled == 10
        writer.fail = False  # back, but it refuses record 3 for its content
        for i in range(10, 30):
            sink.submit({"n": i})
        assert wait_for(lambda: len(writer.rows) == 29)
        assert sorted(r["n"] for r in writer.rows) == [i for i in range(30) if i != 3]
        assert [d["record"]["n"] for d in _dead(tmp_path / "dead")] == [3]
        assert wait_for(lambda: not list(spool.glob("*.jsonl")))
    finally:
        sink.stop()


# -- the journal: on disk before submit returns, replayed after a crash -----------------
def test_a_record_is_in_the_journal_when_submit_returns(tmp_path):
    gate = threading.Event()
    sink = UsageSink(
        lambda batch: gate.wait(), tmp_path / "spool", journal_dir=tmp_path / "journal"
    )
    try:
        sink.submit({"id": "r1", "model_requested": "m\x00\ud800"})  # even unencodable text
        (journal,) = (tmp_path / "journal").glob("*.jsonl")
        assert [json.loads(line) for line in journal.read_bytes().splitlines()] == [
            {"id": "r1", "model_requested": "m\x00\ud800"}
        ]
    finally:
        gate.set()
        sink.stop()


def test_the_journal_goes_once_its_records_are_stored(tmp_path):
    writer, journal = Writer(), tmp_path / "journal"
    sink = UsageSink(
        writer,
        tmp_path / "spool",
        flush_interval=0.01,
        journal_dir=journal,
        journal_segment_bytes=300,  # a new segment every few records
    )
    try:
        for i in range(100):
            sink.submit({"id": f"r{i}"})
        assert sink.flush() and len(writer.rows) == 100
        assert wait_for(lambda: not list(journal.glob("*.jsonl")))  # idle: nothing kept
        sink.submit({"id": "r100"})
        assert len(list(journal.glob("*.jsonl"))) == 1
    finally:
        sink.stop()
    assert not list(journal.glob("*.jsonl")) and len(writer.rows) == 101


JOURNALING_PROCESS = """
import sys, threading
from pathlib import Path
from gateway.dataplane.usage import UsageSink

never = threading.Event()
folder = Path(sys.argv[1])
sink = UsageSink(lambda batch: never.wait(), folder / "spool", journal_dir=folder / "journal",
                 journal_segment_bytes=int(sys.argv[3]))
for i in range(int(sys.argv[2])):
    sink.submit({"id": f"r{i}", "n": i})
print("submitted", flush=True)
sys.stdin.read()
"""


def _journaling_process(folder, records, segment_bytes=1 << 20):
    """A process that journals `records` and whose database never answers, until killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", JOURNALING_PROCESS, str(folder), str(records), str(segment_bytes)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "submitted"
    return proc


def test_a_live_process_journal_is_left_alone_and_replayed_once_it_is_killed(tmp_path):
    proc = _journaling_process(tmp_path, 50, segment_bytes=500)
    writer = Writer()
    sink = UsageSink(
        writer,
        tmp_path / "spool",
        flush_interval=0.01,
        journal_dir=tmp_path / "journal",
        orphan_scan_interval=0.05,
    )
    try:
        sink.start()
        time.sleep(0.3)
        assert writer.rows == []  # alive: its journal is its own
        proc.kill()
        proc.wait()
        assert wait_for(lambda: len(writer.rows) == 50)
        assert sorted(r["n"] for r in writer.rows) == list(range(50))
        assert not list((tmp_path / "journal").glob("*.jsonl"))
    finally:
        proc.kill()
        sink.stop()


def test_sinks_starting_together_replay_a_dead_journal_once_and_skip_a_torn_line(tmp_path):
    proc = _journaling_process(tmp_path, 200)
    proc.kill()
    proc.wait()
    (journal,) = (tmp_path / "journal").glob("*.jsonl")
    with open(journal, "ab") as f:
        f.write(b'{"id": "r200", "n": 2')  # killed in the middle of a line
    writer = Writer()  # both processes write to the same database
    sinks = [
        UsageSink(writer, tmp_path / "spool", flush_interval=0.01, journal_dir=journal.parent)
        for _ in range(2)
    ]
    try:
        for sink in sinks:
            sink.start()
        assert wait_for(lambda: len(writer.rows) >= 200)
        time.sleep(0.2)
        assert sorted(r["n"] for r in writer.rows) == list(range(200))
        assert sum(s.replayed for s in sinks) == 200
        assert not list(journal.parent.glob("*.jsonl"))
    finally:
        for sink in sinks:
            sink.stop()


# -- the control plane's writer: repairs what it can, refuses the rest (set aside) ------
def _record(org, **fields):
    return {
        "id": str(uuid.uuid4()),
        "org_id": org.pk,
        "model_requested": "chat-small",
        "status": "success",
        "http_status": 200,
        "created_at": time.time(),
        **fields,
    }


@pytest.mark.django_db
def test_the_writer_repairs_values_the_database_cannot_hold(org_a):
    from billing.models import UsageRecord
    from billing.usage_writer import write_usage

    record = _record(
        org_a,
        model_requested="chat\x00small",  # PostgreSQL text holds no NUL
        model_used="gpt\ud800",  # a lone surrogate: no driver can encode it
        provider="p" * 500,  # longer than the column
        error_type="e\x00" * 80,
        input_tokens=2**70,  # beyond any integer column
        output_tokens=-5,  # a positive column
        cached_tokens=3.0,
        http_status=99_999,  # a small integer column
        cost=float("nan"),
    )
    write_usage([record])
    row = UsageRecord.objects.get(pk=record["id"])
    assert row.model_requested == "chat\\x00small"  # a client's text: escaped (name_safe)
    assert row.model_used == "gpt?"
    assert row.provider == "p" * 100
    assert row.error_type == "e" * 80
    assert row.input_tokens >= 2_147_483_647 and row.output_tokens == 0
    assert row.cached_tokens == 3
    assert row.http_status >= 32_767
    assert row.cost == 0


@pytest.mark.django_db(transaction=True)
def test_a_batch_written_in_autocommit_stores_every_value_exactly(org_a):
    """The usual batch (recent rows) is one statement outside any transaction; on
    PostgreSQL its rows travel as one JSON document. Text that JSON and SQL both escape,
    money at the column's limits and precision, times given either way, and the repairs
    above arrive exactly; a late row in the same batch takes the transaction that marks
    its hour (billing.services.mark_dirty_hours)."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from billing.models import RollupDirtyHour, UsageRecord
    from billing.usage_writer import write_usage
    from gateway import services

    key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="k")
    tricky = 'it\'s "quoted" \\ back\\slash {"json": [1, null]} \u00e9\u20ac \U0001f600 $1 %s \t\n'
    now = time.time()
    iso = datetime.fromtimestamp(now - 1, UTC).isoformat()
    records = [
        # In a column the data plane writes (the model a client asked for is stored with
        # its control characters escaped: test_model_requested_safe).
        _record(org_a, key_id=key.id, deployment=tricky, cost=0.00000001, created_at=now),
        _record(
            org_a,
            key_id=key.id,
            cost=999_999.99999999,
            route_score=0.125,
            units=2.5,
            created_at=now - 2,
        ),
        _record(org_a, cost=123.45678901, created_at=iso, ttft_ms=None, cost_top_tier=9.5),
        _record(org_a, cost=1.2e-9, model_used="gpt\ud800", input_tokens=2**70, output_tokens=-1),
    ]
    write_usage(records)
    rows = {str(r.id): r for r in UsageRecord.objects.all()}
    first, top, dated, repaired = (rows[r["id"]] for r in records)
    assert first.deployment == tricky and first.cost == Decimal("0.00000001")
    assert first.created_at == datetime.fromtimestamp(now, UTC)
    assert top.cost == Decimal("999999.99999999") and top.model_requested == "chat-small"
    assert (top.route_score, top.units, top.endpoint, top.ttft_ms) == (0.125, 2.5, "", None)
    assert dated.cost == Decimal("123.45678901") and dated.cost_top_tier == Decimal("9.5")
    assert dated.created_at == datetime.fromisoformat(iso) and dated.key_id is None
    assert repaired.model_used == "gpt?" and repaired.cost == 0
    assert repaired.input_tokens >= 2_147_483_647 and repaired.output_tokens == 0
    key.refresh_from_db()
    assert key.last_used_at == datetime.fromtimestamp(now, UTC)
    assert not RollupDirtyHour.objects.exists()

    late = _record(org_a, key_id=key.id, created_at=now - 3 * 3600, cost=0.5)
    write_usage([_record(org_a, key_id=key.id), late])
    assert UsageRecord.objects.count() == 6
    assert RollupDirtyHour.objects.exists()  # the late row's hour is marked with it
    write_usage(records)  # a replay: nothing twice
    assert UsageRecord.objects.count() == 6


@pytest.mark.django_db(transaction=True)
def test_a_batch_over_one_statement_is_stored_whole_and_once(org_a):
    """Over ROWS_PER_STATEMENT rows a batch takes several statements in one transaction:
    every row once, and a replay of the whole batch adds none."""
    from billing.models import UsageRecord
    from billing.usage_writer import ROWS_PER_STATEMENT, write_usage

    records = [_record(org_a, input_tokens=i) for i in range(ROWS_PER_STATEMENT * 2 + 7)]
    write_usage(records)
    write_usage(records[ROWS_PER_STATEMENT - 3 :])
    stored = UsageRecord.objects.values_list("input_tokens", flat=True)
    assert sorted(stored) == list(range(len(records)))


@pytest.mark.django_db(transaction=True)
def test_a_row_whose_key_was_deleted_is_stored_without_it(org_a):
    from billing.models import UsageRecord
    from billing.usage_writer import write_usage

    record = _record(org_a, key_id=987_654, team_id=876_543)
    write_usage([record])
    row = UsageRecord.objects.get(pk=record["id"])
    assert (row.key_id, row.team_id) == (None, None)


@pytest.mark.django_db(transaction=True)
def test_a_row_of_a_deleted_org_is_set_aside_and_shown_on_the_system_page(
    org_a, admin_client, settings, tmp_path
):
    from billing.models import UsageRecord
    from billing.usage_writer import is_refusal, write_usage
    from gateway.runtime import close_db_connection

    settings.GATEWAY_SPOOL_DIR = tmp_path / "spool"
    settings.GATEWAY_DEAD_LETTER_DIR = tmp_path / "dead"
    sink = UsageSink(
        write_usage,
        settings.GATEWAY_SPOOL_DIR,
        flush_interval=0.01,
        dead_letter_dir=settings.GATEWAY_DEAD_LETTER_DIR,
        is_refusal=is_refusal,
        on_stop=close_db_connection,
    )
    good = [_record(org_a) for _ in range(5)]
    orphan = _record(org_a, org_id=org_a.pk + 1000)  # no such organization (deleted)
    try:
        for record in [*good[:2], orphan, *good[2:]]:
            sink.submit(record)
        assert sink.flush()
    finally:
        sink.stop()
    assert set(UsageRecord.objects.values_list("id", flat=True)) == {
        uuid.UUID(r["id"]) for r in good
    }
    assert [d["record"]["id"] for d in _dead(tmp_path / "dead")] == [orphan["id"]]
    assert sink.dead_lettered == 1 and not list((tmp_path / "spool").glob("*.jsonl"))

    # A spool backlog (the database was down) is shown next to it.
    (tmp_path / "spool").mkdir(exist_ok=True)
    (tmp_path / "spool" / "0001-1-000001.jsonl").write_text('{"id": "a"}\n{"id": "b"}\n')
    page = admin_client.get("/admin/system/")
    usage = page.context["usage"]
    assert usage["dead_letters"]["records"] == 1
    assert usage["spooled"] == {"records": 2, "files": 1, "folder": tmp_path / "spool"}
    text = page.content.decode()
    assert str(tmp_path / "dead") in text and "2 records in 1 file" in text


def test_refusal_is_told_apart_from_an_unreachable_database():
    from django.db import utils

    from billing.usage_writer import is_refusal

    for exc in (
        utils.DataError(),
        utils.IntegrityError(),
        ValueError(),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
        OverflowError(),
    ):
        assert is_refusal(exc), exc
    for exc in (
        utils.OperationalError(),
        utils.InterfaceError(),
        utils.InternalError(),
        ConnectionError(),
        OSError(),
    ):
        assert not is_refusal(exc), exc


@pytest.mark.django_db(transaction=True)
def test_replay_dead_usage_stores_what_its_cause_no_longer_refuses(org_a, settings, tmp_path):
    from django.core.management import call_command

    from billing.models import UsageRecord
    from orgs.models import Organization

    settings.GATEWAY_DEAD_LETTER_DIR = tmp_path / "dead"
    (tmp_path / "dead").mkdir()
    fixed = _record(org_a)  # set aside by an earlier fault; the database takes it now
    missing_org = org_a.pk + 1000
    orphan = _record(org_a, org_id=missing_org)  # its org is still missing
    lines = [
        json.dumps({"record": fixed, "error": "DataError: earlier"}),
        json.dumps({"record": orphan, "error": "IntegrityError: earlier"}),
        '{"record": {"id": "torn',  # a line the writer was killed in the middle of
    ]
    (tmp_path / "dead" / "usage-20261130.jsonl").write_text("\n".join(lines) + "\n")

    out = io.StringIO()
    call_command("replay_dead_usage", "--dry-run", stdout=out)
    assert UsageRecord.objects.count() == 0
    assert f"{fixed['id']}: DataError: earlier" in out.getvalue()

    call_command("replay_dead_usage", stdout=(out := io.StringIO()))
    assert "1 records stored, 1 kept (still refused)" in out.getvalue()
    assert list(UsageRecord.objects.values_list("id", flat=True)) == [uuid.UUID(fixed["id"])]
    [kept] = _dead(tmp_path / "dead")
    assert kept["record"]["id"] == orphan["id"] and "IntegrityError" in kept["error"]

    # The cause is fixed (the org is back): the second replay stores it, and only it.
    Organization.objects.create(pk=missing_org, name="Restored", slug="restored")
    call_command("replay_dead_usage", stdout=(out := io.StringIO()))
    assert "1 records stored, 0 kept" in out.getvalue()
    assert UsageRecord.objects.count() == 2
    assert _dead(tmp_path / "dead") == []
