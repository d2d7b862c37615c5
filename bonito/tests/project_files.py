"""The project's own files, for tests that read the source: what git tracks, or new files it
does not ignore; never a virtualenv (whatever it is called), var/ or vendored libraries."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def project_files(*patterns: str):
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *patterns],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in listed:
        path = ROOT / name
        if "vendor" not in path.parts and path.exists():
            yield path
