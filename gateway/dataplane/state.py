"""Where a Gateway finds the current snapshot: a SnapshotSource, given to it like the sink.

Whatever keeps the snapshot fresh (the control plane's refresher, an agent's config sync,
a test) publishes into the source; the Gateway reads ``source.current`` on every request.
"""

import threading
from collections.abc import Callable

from .snapshot import Snapshot


class SnapshotSource:
    """The current snapshot of one data plane, swapped whole by ``publish``."""

    def __init__(self, snapshot: Snapshot | None = None, starter: Callable[[], None] | None = None):
        # A plain attribute: the hot path's one read. Readers never see a half-built
        # snapshot: publishing swaps one reference.
        self.current: Snapshot | None = snapshot
        self._starter = starter  # starts whatever publishes (called once, on first need)
        self._ready = threading.Event()
        if snapshot is not None:
            self._ready.set()

    def publish(self, snapshot: Snapshot) -> None:
        self.current = snapshot
        self._ready.set()

    def ensure_started(self, timeout: float = 30.0) -> Snapshot | None:
        """Blocking: start the publisher once and wait for the first snapshot."""
        if self.current is None and self._starter is not None:
            self._starter()
            self._ready.wait(timeout)
        return self.current
