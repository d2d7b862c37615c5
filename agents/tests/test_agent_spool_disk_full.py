"""The agent's spool on a full disk: a spool file that cannot be written whole leaves nothing
behind (each failed try left an empty ``.tmp`` in spool/, one per retry, for ever)."""

import resource
import signal
import subprocess
import sys

from gateway.tests.external import ROOT

CHILD = """
import sys
from pathlib import Path
from gateway.dataplane.usage import _write_spool_file
spool = Path(sys.argv[1])
try:
    _write_spool_file(spool, "000001", [{"id": str(i), "pad": "x" * 200} for i in range(100)])
except OSError as exc:
    print("refused", exc.errno)
print(sorted(p.name for p in spool.iterdir()))
"""


def _small_files_only():
    # A disk that is full past 4 KiB: writes beyond it fail (EFBIG) instead of killing us.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def test_a_spool_file_the_disk_cannot_hold_leaves_nothing_behind(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(spool)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        preexec_fn=_small_files_only,  # noqa: PLW1509 - only resource limits, no threads
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert out[0].startswith("refused"), out
    assert out[-1] == "[]"
