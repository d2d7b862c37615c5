"""The usage sink off the request path: batching, spool and replay, housekeeping; and the
heap trim it runs between bursts."""

import os
import sys
import threading
import time

import pytest

from gateway.dataplane.memory import release_free_memory
from gateway.dataplane.usage import UsageSink


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
            time.sleep(0.002)
        during = len(calls)
        assert during >= 3, calls  # periodic, not only at the end
        assert wait_for(lambda: idle and len(calls) > during)  # and once at the pause
        assert len(idle) == 1
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
