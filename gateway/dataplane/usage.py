"""The usage sink: finished-request records leave the request path here.

Records are queued in memory and written in batches by a background thread through a
writer function (the DB in the control plane, HTTPS in an agent). When the writer
fails, batches spool to local disk and are replayed in order once it works again.

Three guarantees on top of that:

- **Journal.** `submit` first appends the record, as one JSON line written with one
  `os.write` to an O_APPEND file, to this process's journal (`journal_dir`). The write
  lands in the OS page cache before the response completes, so a killed process loses
  nothing: the journal files of a dead process are replayed (idempotently: records carry
  their id) by the next sink that starts, or by a running one within
  `orphan_scan_interval`. Each process holds an exclusive `flock` on its journal files
  for as long as they exist; a file whose lock can be taken belongs to a dead process,
  and taking that lock is also what stops two starting processes from replaying it
  twice. Journal segments are deleted once every record in them is written or spooled.
- **No poison record.** When the writer raises an error that `is_refusal` says is the
  target refusing the data (not being unreachable), the batch is split until the
  refused records are isolated; each is appended to a dead-letter file (`dead_letter_dir`),
  counted and logged, and the rest are written. The same happens to spooled files, so a
  refused record never blocks the ones behind it.
- **Shutdown.** `stop` writes what is queued and removes the journal when all of it is
  stored.

Options an agent uses (all off by default, as the shared gateway runs): `min_batch_interval`
paces the writer (one batch per interval at most, records gather meanwhile in the journal
and the queue), `retry_backoff_max` makes the spool's retries back off exponentially up to
that many seconds, and `spool_max_bytes` bounds the spool on disk: when it is over, the
oldest spooled batches are dropped, counted in `dropped` and logged.
"""

import atexit
import contextlib
import fcntl
import json
import logging
import os
import queue
import threading
import time
import weakref
from pathlib import Path

import orjson

log = logging.getLogger("bonito.gateway.usage")
_WAKE = object()  # queued by flush() to end a linger at once; never a record

JOURNAL_SEGMENT_BYTES = 4 * 1024 * 1024  # ~8,000 records; a segment goes once they are stored


class _Segment:
    __slots__ = ("bytes", "fd", "last", "path")

    def __init__(self, path: Path, fd: int):
        self.path, self.fd, self.bytes, self.last = path, fd, 0, 0


def _never(exc: BaseException) -> bool:
    return False


def _encode(record: dict) -> bytes:
    try:
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # a lone surrogate, a type orjson does not know: escaped, never lost
        return json.dumps(record, default=str).encode() + b"\n"


def _write_spool_file(spool_dir: Path, suffix: str, records: list[dict]) -> None:
    """One spool file of ``records``, named by time (replayed in order), fsynced, and
    renamed into place whole: a crash never leaves half a file to replay."""
    spool_dir.mkdir(parents=True, exist_ok=True)
    name = spool_dir / f"{time.time_ns():020d}-{os.getpid()}-{suffix}.jsonl"
    tmp = name.with_suffix(".tmp")
    # 0600 like the journal: usage metadata is the operator's, not every local user's.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with open(fd, "wb") as f:
            for record in records:
                f.write(_encode(record))
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(name)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk: no part-file left per retry
        raise


def requeue_dead_letters(dead_letter_dir: Path, spool_dir: Path) -> tuple[int, int]:
    """Moves the records set aside in ``dead_letter_dir`` back into ``spool_dir``, where a
    running sink sends them again (once their cause is fixed; one still refused is set aside
    again with its new error, one already stored is not stored twice: records carry their
    id). Returns (records requeued, lines that were not a record)."""
    dead_letter_dir, spool_dir = Path(dead_letter_dir), Path(spool_dir)
    files = sorted(dead_letter_dir.glob("usage-*.jsonl")) if dead_letter_dir.is_dir() else []
    moved = unreadable = 0
    for seq, path in enumerate(files):
        # Taken out of the sink's way first: it may set more records aside meanwhile.
        taking = path.with_suffix(f".requeue-{os.getpid()}")
        path.rename(taking)
        records = []
        for line in taking.read_bytes().splitlines():
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                entry = None
            record = entry.get("record") if isinstance(entry, dict) else None
            if isinstance(record, dict):
                records.append(record)
            elif line.strip():
                unreadable += 1
        if records:
            _write_spool_file(spool_dir, f"dead{seq:06d}", records)
        moved += len(records)
        taking.unlink()
    return moved, unreadable


def _parse_lines(data: bytes) -> tuple[list[dict], int]:
    """Records from JSON lines; a line that does not parse (a torn last line) is skipped."""
    records, skipped = [], 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            skipped += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            skipped += 1
    return records, skipped


def _lock_existing(path: Path) -> int | None:
    """An fd holding the exclusive lock on `path`, or None if someone else holds it or the
    file is gone (already taken care of by another process)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != os.stat(path).st_ino:
            raise FileNotFoundError(path)  # replaced after we listed it
    except OSError:
        os.close(fd)
        return None
    return fd


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")


def _read_fd(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


_sinks: "weakref.WeakSet[UsageSink]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A forked child must not write into (or delete) its parent's journal, nor wait for
    # the parent's thread.
    for sink in list(_sinks):
        sink._forget_parent_state()


os.register_at_fork(after_in_child=_after_fork_in_child)


class UsageSink:
    def __init__(
        self,
        writer,
        spool_dir: Path,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        linger: float = 0.0,
        retry_interval: float = 1.0,
        on_stop=None,
        on_idle=None,
        on_housekeeping=None,
        housekeeping_interval: float = 30.0,
        *,
        journal_dir: Path | None = None,
        dead_letter_dir: Path | None = None,
        is_refusal=None,
        journal_segment_bytes: int = JOURNAL_SEGMENT_BYTES,
        orphan_scan_interval: float = 30.0,
        min_batch_interval: float = 0.0,
        retry_backoff_max: float = 0.0,
        spool_max_bytes: int | None = None,
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
        self.dead_letter_dir = (
            Path(dead_letter_dir) if dead_letter_dir else self.spool_dir.parent / "dead"
        )
        self.journal_dir = Path(journal_dir) if journal_dir else None
        # True when the writer's error means "this data is refused" (split, dead-letter);
        # anything else means "unreachable" (spool, retry).
        self.is_refusal = is_refusal or _never
        self.journal_segment_bytes = journal_segment_bytes
        self.orphan_scan_interval = orphan_scan_interval
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.linger = linger
        self.retry_interval = retry_interval
        self.min_batch_interval = min_batch_interval
        self.retry_backoff_max = retry_backoff_max
        self.spool_max_bytes = spool_max_bytes
        self._next_batch_at = 0.0
        self._retry_at = 0.0  # no spool replay before (monotonic), while backing off
        self._retry_delay = 0.0
        self._hurry = threading.Event()  # flush/stop: stop pacing, write what is queued
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # Keeps the journal's order, the queue's order and the submitted count in step.
        self._submit_lock = threading.Lock()
        self._progress = threading.Condition()
        self._submitted = 0
        self._done = 0
        self._seq = 0
        self._segno = 0
        self._segment: _Segment | None = None
        self._sealed: list[_Segment] = []
        # Set when a batch could be neither written nor spooled: the journal is then kept
        # (replayed by the next process) instead of being deleted.
        self._keep_journal = False
        self._last_orphan_scan = 0.0
        self._stopping = threading.Event()
        self.written = 0
        self.spooled = 0
        self.dead_lettered = 0
        self.replayed = 0
        self.journal_errors = 0
        self.dropped = 0  # records dropped from a full spool (spool_max_bytes)
        _sinks.add(self)

    # -- request side (cheap, never blocks, never raises) --------------------------
    def submit(self, record: dict) -> None:
        with self._submit_lock:
            self._submitted += 1
            if self.journal_dir is not None:
                self._journal(record)
            self._queue.put(record)
        if self._thread is None:
            self._start()

    def _journal(self, record: dict) -> None:
        line = _encode(record)
        try:
            segment = self._segment or self._open_segment()
            os.write(segment.fd, line)  # O_APPEND: one write, one whole line
        except OSError as exc:
            self.journal_errors += 1
            if self.journal_errors == 1 or self.journal_errors % 10_000 == 0:
                log.error(
                    "usage journal write failed (%s, %d so far): records are in memory only",
                    exc,
                    self.journal_errors,
                )
            return
        segment.bytes += len(line)
        segment.last = self._submitted
        if segment.bytes >= self.journal_segment_bytes:
            self._seal()

    def _open_segment(self) -> _Segment:
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        self._segno += 1
        path = self.journal_dir / f"{os.getpid()}-{time.time_ns()}-{self._segno:06d}.jsonl"
        # Locked under a name replays ignore, then renamed: no other process ever sees
        # this file unlocked (it would take it for a dead process's).
        fresh = path.with_suffix(".new")
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held until the file is deleted
            os.rename(fresh, path)
        except OSError:
            os.close(fd)
            raise
        self._segment = _Segment(path, fd)
        return self._segment

    def _seal(self) -> None:
        """Start a new segment with the next record (caller holds the submit lock)."""
        if self._segment is not None:
            self._sealed.append(self._segment)
            self._segment = None

    def _release_journal(self, *, all_stored_ok: bool = False) -> None:
        """Delete the segments whose records are all stored (writer thread)."""
        if self.journal_dir is None or self._keep_journal:
            return
        with self._submit_lock:
            done = self._done
            current = self._segment
            # Idle, or big enough: what comes next goes to a fresh file, this one can go.
            if (
                current is not None
                and current.last <= done
                and (all_stored_ok or current.bytes >= self.journal_segment_bytes // 8)
            ):
                self._seal()
            keep = []
            for segment in self._sealed:
                if segment.last <= done:
                    with contextlib.suppress(OSError):
                        segment.path.unlink()
                    os.close(segment.fd)
                else:
                    keep.append(segment)
            self._sealed = keep

    def _forget_parent_state(self) -> None:
        self._segment, self._sealed = None, []
        self._thread = None
        self._submit_lock = threading.Lock()
        self._lock = threading.Lock()
        self._progress = threading.Condition()

    # -- background side -------------------------------------------------------------
    def start(self) -> None:
        """Start the background thread now (it replays dead processes' journals first)."""
        if self._thread is None:
            self._start()

    def _start(self):
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="bonito-usage-sink", daemon=True
                )
                self._thread.start()
                atexit.register(self.close)

    def _take_batch(self, timeout: float) -> list[dict]:
        """The queued records, up to batch_size: waits ``timeout`` for the first, then up to
        ``linger`` for more (records are journaled already: lingering delays their row, not
        their safety, and makes one write of what would be many at moderate rates). A flush
        or stop cuts the linger short: `flush` queues a wake-up marker, never stored."""
        batch = []
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return batch
        until = time.monotonic() + self.linger
        while True:
            if item is not _WAKE:
                batch.append(item)
            if len(batch) >= self.batch_size:
                break
            try:
                item = self._queue.get_nowait()
                continue
            except queue.Empty:
                pass
            left = until - time.monotonic()
            if left <= 0 or self._stopping.is_set() or self._hurry.is_set():
                break
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                break
        return batch

    def _run(self):
        self._guarded(self._replay_orphans)
        held: list[dict] = []  # neither written nor spooled: tried again before anything newer
        while not self._stopping.is_set():
            self._pace()
            batch = held or self._take_batch(self.flush_interval)
            self._guarded(self._drain_spool)
            if time.monotonic() - self._last_orphan_scan >= self.orphan_scan_interval:
                self._guarded(self._replay_orphans)
            if batch:
                self._busy = True
                if self.min_batch_interval:
                    self._next_batch_at = time.monotonic() + self.min_batch_interval
                if not self._write_or_spool(batch):
                    # The writer down and the disk full (or the spool unwritable): the batch
                    # stays in memory (it may be in no journal either) and is tried again,
                    # until the writer or the spool takes it; it was dropped.
                    held = batch
                    self._stopping.wait(max(self.retry_interval, self._retry_at - time.monotonic()))
                    continue
                if held:
                    held = []
                    self._keep_journal = False  # what it kept is stored now
                with self._progress:
                    self._done += len(batch)
                    self._progress.notify_all()
                self._guarded(self._release_journal)
                if time.monotonic() - self._last_housekeeping >= self.housekeeping_interval:
                    self._housekeeping()
            elif self._spool_files():
                self._stopping.wait(self.retry_interval)
            elif self._busy:
                self._busy = False
                self._guarded(self._release_journal, all_stored_ok=True)
                if self.on_idle is not None:
                    self.on_idle()
                self._housekeeping()
        if self.on_stop is not None:
            self.on_stop()

    def _pace(self) -> None:
        """At most one batch per `min_batch_interval`, unless a flush or stop hurries it."""
        wait = self._next_batch_at - time.monotonic()
        if wait > 0 and not self._hurry.is_set():
            self._hurry.wait(wait)

    def _guarded(self, step, **kwargs) -> None:
        try:
            step(**kwargs)
        except Exception as exc:  # the thread must live on: it is the only one storing usage
            # A full or unwritable disk is expected: one line; a traceback for anything else.
            log.error(
                "usage sink: %s failed (%s: %s)",
                getattr(step, "__name__", step),
                type(exc).__name__,
                exc,
                exc_info=not isinstance(exc, OSError),
            )

    def _housekeeping(self) -> None:
        self._last_housekeeping = time.monotonic()
        if self.on_housekeeping is not None:
            try:
                self.on_housekeeping()
            except Exception as exc:
                log.error(
                    "usage sink housekeeping failed (%s: %s)",
                    type(exc).__name__,
                    exc,
                    exc_info=not isinstance(exc, OSError),
                )

    def _deliver(self, batch: list[dict]) -> None:
        """Write a batch. Records the target refuses for their content are isolated (by
        halving) and dead-lettered; the others are written. Raises only when the target
        is unreachable: the caller then keeps the whole batch (replays are idempotent)."""
        if not batch:
            return
        try:
            self.writer(batch)
        except Exception as exc:
            if not self.is_refusal(exc):
                raise
            if len(batch) == 1:
                self._dead_letter(batch[0], exc)
                return
            middle = len(batch) // 2
            self._deliver(batch[:middle])
            self._deliver(batch[middle:])
            return
        self.written += len(batch)

    def _dead_letter(self, record: dict, exc: BaseException) -> None:
        self.dead_letter_dir.mkdir(parents=True, exist_ok=True)
        path = self.dead_letter_dir / f"usage-{time.strftime('%Y%m%d')}.jsonl"
        error = f"{type(exc).__name__}: {exc}"[:1000]
        line = json.dumps({"record": record, "error": error}, default=str).encode() + b"\n"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.dead_lettered += 1
        log.error(
            "usage record %s refused by the writer (%s); set aside in %s (%d this process)",
            record.get("id"),
            error,
            path,
            self.dead_lettered,
        )

    def _write_or_spool(self, batch: list[dict]) -> bool:
        """False only when the batch could be neither written nor spooled."""
        # While anything is spooled, new batches queue behind it to keep the order.
        if not self._spool_files():
            try:
                self._deliver(batch)
                return True
            except Exception as exc:
                self._back_off()
                log.warning(
                    "usage writer failed (%s); spooling %d records to %s",
                    type(exc).__name__,
                    len(batch),
                    self.spool_dir,
                )
        try:
            self._spool(batch)
        except Exception as exc:
            # Neither stored nor spooled: the journal keeps them for the next process.
            if not self._keep_journal:  # logged once until a batch is stored again
                log.error(
                    "usage spool failed (%s: %s); %d records are kept in memory and the"
                    " journal, and retried",
                    type(exc).__name__,
                    exc,
                    len(batch),
                    exc_info=not isinstance(exc, OSError),  # a full disk: no traceback
                )
            self._keep_journal = True
            return False
        return True

    def _spool(self, batch: list[dict]) -> None:
        self._seq += 1
        _write_spool_file(self.spool_dir, f"{self._seq:06d}", batch)
        self.spooled += len(batch)
        self._bound_spool()

    def _spool_files(self) -> list[Path]:
        if not self.spool_dir.exists():
            return []
        return sorted(self.spool_dir.glob("*.jsonl"))

    def _drain_spool(self) -> None:
        if self._retry_at and time.monotonic() < self._retry_at:
            return  # backing off after a failed replay
        for path in self._spool_files():
            fd = _lock_existing(path)
            if fd is None:
                continue  # another process is replaying it, or took it
            try:
                records, skipped = _parse_lines(_read_fd(fd))
                try:
                    self._deliver(records)
                except Exception:
                    self._back_off()
                    return  # still down; try again later, in order
                self._retry_at = self._retry_delay = 0.0
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
            self.replayed += len(records)
            log.info(
                "replayed %d spooled usage records from %s%s",
                len(records),
                path.name,
                f" ({skipped} unreadable lines skipped)" if skipped else "",
            )

    def _back_off(self) -> None:
        if self.retry_backoff_max:
            self._retry_delay = min(
                self.retry_backoff_max, max(self.retry_interval, self._retry_delay * 2)
            )
            self._retry_at = time.monotonic() + self._retry_delay

    def spool_bytes(self) -> tuple[int, int]:
        """(spooled batches, bytes) on disk now."""
        files = sizes = 0
        for path in self._spool_files():
            with contextlib.suppress(OSError):
                sizes += path.stat().st_size
                files += 1
        return files, sizes

    def _bound_spool(self) -> None:
        """Drop the oldest spooled batches while the spool is over `spool_max_bytes`."""
        if not self.spool_max_bytes:
            return
        files = []
        for path in self._spool_files():
            with contextlib.suppress(OSError):
                files.append((path, path.stat().st_size))
        total = sum(size for _path, size in files)
        for path, size in files:
            if total <= self.spool_max_bytes:
                return
            fd = _lock_existing(path)
            if fd is None:
                continue  # being replayed right now
            try:
                lost = _read_fd(fd).count(b"\n")
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
            total -= size
            self.dropped += lost
            log.error(
                "usage spool over its bound (%d bytes): dropped its oldest %d records"
                " (%d dropped by this process)",
                self.spool_max_bytes,
                lost,
                self.dropped,
            )

    def _replay_orphans(self) -> None:
        """Store the records in the journals of processes that died (any pid)."""
        self._last_orphan_scan = time.monotonic()
        if self.journal_dir is None or not self.journal_dir.exists():
            return
        with self._submit_lock:
            own = {s.path.name for s in [self._segment, *self._sealed] if s is not None}
        stale = time.time() - 60  # a file a process died creating (see _open_segment)
        leftovers = [p for p in self.journal_dir.glob("*.new") if _mtime(p) < stale]
        for path in sorted(self.journal_dir.glob("*.jsonl")) + leftovers:
            if path.name in own:
                continue
            fd = _lock_existing(path)
            if fd is None:
                continue  # its process is alive, or another process is replaying it
            try:
                records, skipped = _parse_lines(_read_fd(fd))
                stored = [
                    self._write_or_spool(records[start : start + self.batch_size])
                    for start in range(0, len(records), self.batch_size)
                ]
                if not all(stored):
                    return  # not even spooled: keep the file for a later attempt
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
            self.replayed += len(records)
            log.warning(
                "replayed %d usage records from the journal of a stopped process (%s)%s",
                len(records),
                path.name,
                f"; {skipped} torn lines skipped" if skipped else "",
            )

    # -- lifecycle -----------------------------------------------------------------------
    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is written or spooled."""
        target = self._submitted
        self._hurry.set()
        self._queue.put(_WAKE)
        try:
            with self._progress:
                return self._progress.wait_for(lambda: self._done >= target, timeout)
        finally:
            self._hurry.clear()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued, then end the background thread; the journal goes once
        everything in it is stored."""
        self.flush(timeout)
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._stopping.clear()
        if self._done >= self._submitted:
            self._release_journal(all_stored_ok=True)

    def close(self) -> None:
        batch = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _WAKE:
                batch.append(item)
        if batch:
            self._write_or_spool(batch)
            self._done += len(batch)
        if self._thread is None and self._done >= self._submitted:
            self._release_journal(all_stored_ok=True)
