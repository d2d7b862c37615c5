"""Where the hot path finds the current snapshot. A control plane or an agent publishes it."""

import threading

from .snapshot import Snapshot

_current: Snapshot | None = None
_ready = threading.Event()
_starter = None  # callable that starts whatever keeps the snapshot fresh


def publish(snapshot: Snapshot) -> None:
    global _current
    _current = snapshot  # one reference swap; readers never see a half-built snapshot
    _ready.set()


def current() -> Snapshot | None:
    return _current


def set_starter(fn) -> None:
    global _starter
    _starter = fn


def ensure_started(timeout: float = 30.0) -> Snapshot | None:
    """Blocking: start the refresher once and wait for the first snapshot."""
    if _current is None and _starter is not None:
        _starter()
        _ready.wait(timeout)
    return _current


def reset() -> None:
    """For tests: forget the snapshot."""
    global _current
    _current = None
    _ready.clear()
