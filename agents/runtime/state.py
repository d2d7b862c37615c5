"""What the agent keeps on disk in BONITO_STATE_DIR: its id, a rotated token, the config cache."""

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import threading
import uuid
from pathlib import Path

from core import keys

log = logging.getLogger("bonito.agent")


def write_private(path: Path, data: bytes) -> None:
    """Atomically (a reader sees the old file or the new one, never half) and 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        try:
            if os.write(fd, data) != len(data):  # a full disk may take part of it
                raise OSError(errno.ENOSPC, "the file was written in part", str(tmp))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # no half-written file left in the state folder
        raise


def agent_id(state_dir: Path) -> str:
    """A uuid4 made once and kept (every worker and restart reports as the same agent).

    Read and, when missing or damaged, made under an exclusive lock on a file beside it:
    workers starting together agree on one id (an O_EXCL create left a moment in which
    another worker read the new file empty, took it for damaged and made a second id)."""
    path = state_dir / "agent-id"
    with open(state_dir / ".agent-id.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return str(uuid.UUID(path.read_text().strip()))
        except (OSError, ValueError):
            pass
        value = str(uuid.uuid4())
        write_private(path, value.encode())
        return value


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Token:
    """The org token the agent uses: the configured one, or the one a rotation handed over.

    A rotation (``token.rotate_to`` in a config answer) is kept in ``<state>/token.json``
    (0600) with the fingerprints of the tokens it replaced, so after a restart it is still
    preferred over the configured token it replaced, but not over a new one an operator sets."""

    def __init__(self, configured: str, state_dir: Path, token_file: Path | None = None):
        self.path = state_dir / "token.json"
        self.token_file = token_file
        self.configured = configured
        self._damage_logged = False
        self.current = self._choose()
        self.refused = False  # the control plane answered 401 to the current token

    def _rotated(self) -> dict | None:
        try:
            data = json.loads(self.path.read_text())
            why = "" if isinstance(data, dict) else "not a JSON object"
        except FileNotFoundError:
            return None  # no rotation yet
        except (OSError, ValueError) as exc:
            data, why = None, type(exc).__name__
        if not why:
            replaces = data.get("replaces", [])
            if (
                keys.well_formed(str(data.get("token", "")), ("bt-",))
                and isinstance(replaces, list)
                and all(isinstance(t, str) for t in replaces)
            ):
                return data
            why = "no well-formed token in it"
        if not self._damage_logged:
            self._damage_logged = True
            log.warning(
                "rotated org token in %s cannot be used (%s): using the configured one;"
                " if it was rotated away, put the current token in the deployment",
                self.path,
                why,
            )
        return None

    def _choose(self) -> str:
        rotated = self._rotated()
        if rotated and fingerprint(self.configured) in rotated.get("replaces", []):
            return rotated["token"]
        return self.configured

    def rotate(self, new: str) -> None:
        if new == self.current or not keys.well_formed(new, ("bt-",)):
            return
        rotated = self._rotated() or {}
        replaces = list(dict.fromkeys([*rotated.get("replaces", []), fingerprint(self.current)]))
        try:
            write_private(self.path, json.dumps({"token": new, "replaces": replaces}).encode())
        except OSError as exc:
            # The disk full, say: the new token is used all the same (the config answer that
            # brought it still applies); a restart before it is kept starts on the old one.
            log.error(
                "org token rotated by the control plane but not kept in %s (%s): used until"
                " a restart; put the new token in the agent's deployment",
                self.path,
                exc,
            )
        else:
            log.warning("org token rotated by the control plane; the new one is in %s", self.path)
        self.current = new
        self.refused = False

    def reread(self) -> bool:
        """After a 401: the token file (an operator may have put a new token there) and
        the rotation state again. True if that gave another token to try."""
        if self.token_file is not None:
            with contextlib.suppress(OSError):
                configured = self.token_file.read_text().strip()
                if keys.well_formed(configured, ("bt-",)):
                    self.configured = configured
        chosen = self._choose()
        if chosen != self.current:
            self.current = chosen
            return True
        return False
