"""The usage sink: finished-request records leave the request path here.

Records are queued in memory and written in batches by a background thread through a
writer function (the DB in the control plane, HTTPS in an agent). When the writer
fails, batches spool to local disk and are replayed in order once it works again.
"""

import atexit
import json
import logging
import os
import queue
import threading
import time
from pathlib import Path

log = logging.getLogger("bonito.gateway.usage")


class UsageSink:
    def __init__(
        self,
        writer,
        spool_dir: Path,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        retry_interval: float = 1.0,
        on_stop=None,
        on_idle=None,
        on_housekeeping=None,
        housekeeping_interval: float = 30.0,
    ):
        self.writer = writer
        self.on_stop = on_stop  # e.g. close the writer's database connection
        # Called once when traffic pauses: the connection is held while batches flow and
        # let go when idle (no idle connections held; a replaced database is noticed).
        self.on_idle = on_idle
        # Called when traffic pauses and every `housekeeping_interval` seconds while it
        # flows (e.g. give freed heap memory back to the OS): never on the request path.
        self.on_housekeeping = on_housekeeping
        self.housekeeping_interval = housekeeping_interval
        self._last_housekeeping = time.monotonic()
        self._busy = False
        self.spool_dir = Path(spool_dir)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._progress = threading.Condition()
        self._submitted = 0
        self._done = 0
        self._seq = 0
        self._stopping = threading.Event()
        self.written = 0
        self.spooled = 0

    # -- request side (cheap, never blocks, never raises) --------------------------
    def submit(self, record: dict) -> None:
        self._submitted += 1
        self._queue.put(record)
        if self._thread is None:
            self._start()

    # -- background side -------------------------------------------------------------
    def _start(self):
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="bonito-usage-sink", daemon=True
                )
                self._thread.start()
                atexit.register(self.close)

    def _take_batch(self, timeout: float) -> list[dict]:
        batch = []
        try:
            batch.append(self._queue.get(timeout=timeout))
        except queue.Empty:
            return batch
        while len(batch) < self.batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self):
        while not self._stopping.is_set():
            batch = self._take_batch(self.flush_interval)
            self._drain_spool()
            if batch:
                self._busy = True
                self._write_or_spool(batch)
                with self._progress:
                    self._done += len(batch)
                    self._progress.notify_all()
                if time.monotonic() - self._last_housekeeping >= self.housekeeping_interval:
                    self._housekeeping()
            elif self._spool_files():
                self._stopping.wait(self.retry_interval)
            elif self._busy:
                self._busy = False
                if self.on_idle is not None:
                    self.on_idle()
                self._housekeeping()
        if self.on_stop is not None:
            self.on_stop()

    def _housekeeping(self) -> None:
        self._last_housekeeping = time.monotonic()
        if self.on_housekeeping is not None:
            try:
                self.on_housekeeping()
            except Exception:
                log.exception("usage sink housekeeping failed")

    def _write_or_spool(self, batch: list[dict]) -> None:
        # While anything is spooled, new batches queue behind it to keep the order.
        if not self._spool_files():
            try:
                self.writer(batch)
                self.written += len(batch)
                return
            except Exception as exc:
                log.warning(
                    "usage writer failed (%s); spooling %d records to %s",
                    type(exc).__name__,
                    len(batch),
                    self.spool_dir,
                )
        self._spool(batch)

    def _spool(self, batch: list[dict]) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        name = self.spool_dir / f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}.jsonl"
        tmp = name.with_suffix(".tmp")
        with open(tmp, "w") as f:
            for record in batch:
                f.write(json.dumps(record, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(name)  # a crash never leaves half a file to replay
        self.spooled += len(batch)

    def _spool_files(self) -> list[Path]:
        if not self.spool_dir.exists():
            return []
        return sorted(self.spool_dir.glob("*.jsonl"))

    def _drain_spool(self) -> None:
        for path in self._spool_files():
            try:
                records = [
                    json.loads(line) for line in path.read_text().splitlines() if line.strip()
                ]
            except OSError:
                continue  # another process took it
            try:
                self.writer(records)
            except Exception:
                return  # still down; try again later, in order
            path.unlink(missing_ok=True)
            self.written += len(records)
            log.info("replayed %d spooled usage records from %s", len(records), path.name)

    # -- lifecycle -----------------------------------------------------------------------
    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is written or spooled."""
        target = self._submitted
        with self._progress:
            return self._progress.wait_for(lambda: self._done >= target, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued, then end the background thread."""
        self.flush(timeout)
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._stopping.clear()

    def close(self) -> None:
        batch = []
        while True:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if batch:
            self._write_or_spool(batch)
            self._done += len(batch)
