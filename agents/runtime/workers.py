"""With several worker processes (BONITO_AGENT_WORKERS > 1), one heartbeat for the agent.

Each worker counts its own requests; every second it writes its counts to
``<state>/workers/<pid>.json``. The worker that holds the lock on ``heartbeat.lock`` sends the
heartbeat with everyone's counts summed (a worker that died keeps its share in the totals),
and if it dies, another takes the lock at its next heartbeat."""

import contextlib
import fcntl
import os
import time

import orjson

from .state import write_private


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkerShare:
    def __init__(self, state_dir, workers: int):
        self.enabled = workers > 1
        self.dir = state_dir / "workers"
        self._lock_fd: int | None = None
        self._retired = [0, 0]  # requests, errors of workers that are gone
        self._known: dict[int, list] = {}  # pid -> its last counts
        self._published = 0.0

    def publish(self, stats, every: float = 1.0) -> None:
        if not self.enabled or time.monotonic() - self._published < every:
            return
        self._published = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        doc = {"requests": stats.requests, "errors": stats.errors, "providers": stats.providers}
        write_private(self.dir / f"{os.getpid()}.json", orjson.dumps(doc))

    def leader(self) -> bool:
        """Whether this worker sends the heartbeat (it keeps the lock while it lives)."""
        if not self.enabled or self._lock_fd is not None:
            return True
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / "heartbeat.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def totals(self, stats) -> tuple[int, int, dict]:
        """(requests, errors, providers) over every worker of this agent, this one included."""
        requests, errors = stats.requests, stats.errors
        providers = dict(stats.providers)
        if not self.enabled:
            return requests, errors, providers
        me = os.getpid()
        seen = set()
        for path in self.dir.glob("*.json"):
            with contextlib.suppress(ValueError):
                pid = int(path.stem)
                if pid == me:
                    continue
                if not _alive(pid):
                    last = self._known.pop(pid, None)
                    if last is None:
                        with contextlib.suppress(OSError, ValueError):
                            doc = orjson.loads(path.read_bytes())
                            last = [doc["requests"], doc["errors"]]
                    if last:
                        self._retired[0] += last[0]
                        self._retired[1] += last[1]
                    path.unlink(missing_ok=True)
                    continue
                try:
                    doc = orjson.loads(path.read_bytes())
                except (OSError, ValueError):
                    continue
                seen.add(pid)
                self._known[pid] = [doc["requests"], doc["errors"]]
                for name, p in doc.get("providers", {}).items():
                    if p.get("at", 0) > providers.get(name, {}).get("at", 0):
                        providers[name] = p
        for pid in set(self._known) - seen:  # its file went away with it
            last = self._known.pop(pid)
            self._retired[0] += last[0]
            self._retired[1] += last[1]
        others = [sum(c[i] for c in self._known.values()) for i in (0, 1)]
        return (
            requests + others[0] + self._retired[0],
            errors + others[1] + self._retired[1],
            providers,
        )
