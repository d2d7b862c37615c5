"""Store usage records that were set aside (dead letters) once their cause is fixed.

A record the database refused for its content sits in GATEWAY_DEAD_LETTER_DIR with the
error. After fixing the cause (a migration, a restored org), this command writes each
record again: stored ones leave the file, refused ones stay with their new error.
Records carry their id, so a record that is already stored is never stored twice."""

import json
import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from billing.usage_writer import is_refusal, write_usage


class Command(BaseCommand):
    help = "Write the usage records set aside in GATEWAY_DEAD_LETTER_DIR again."

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="list what is set aside; store nothing"
        )

    def handle(self, *args, dry_run=False, **options):
        folder = Path(settings.GATEWAY_DEAD_LETTER_DIR)
        files = sorted(folder.glob("usage-*.jsonl")) if folder.is_dir() else []
        stored = kept = unreadable = 0
        for path in files:
            if dry_run:
                for entry in _entries(path):
                    record = entry.get("record") or {}
                    self.stdout.write(f"{record.get('id', '?')}: {entry.get('error', '?')}")
                continue
            # Taken out of the sink's way first: it may set more records aside meanwhile.
            taking = path.with_suffix(f".replaying-{os.getpid()}")
            path.rename(taking)
            still = []
            for entry in _entries(taking):
                record = entry.get("record")
                if not isinstance(record, dict):
                    unreadable += 1
                    still.append(entry)
                    continue
                try:
                    write_usage([record])
                except Exception as exc:
                    if not is_refusal(exc):
                        _put_back(path, still + [entry], taking)
                        raise CommandError(
                            f"The database is unreachable ({type(exc).__name__}); nothing "
                            f"more was replayed. {stored} records stored so far."
                        ) from exc
                    still.append({"record": record, "error": f"{type(exc).__name__}: {exc}"})
                    continue
                stored += 1
            kept += len(still)
            _put_back(path, still, taking)
        verb = "set aside" if dry_run else "kept (still refused)"
        self.stdout.write(
            f"{stored} records stored, {kept} {verb}"
            + (f", {unreadable} unreadable" if unreadable else "")
            + f" ({folder})."
        )


def _entries(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a torn line (the writer was killed mid-line): nothing to store
        if isinstance(entry, dict):
            out.append(entry)
    return out


def _put_back(path: Path, entries: list[dict], taking: Path) -> None:
    """What is still refused goes back (appended: the sink may have added to it)."""
    if entries:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"".join(json.dumps(e, default=str).encode() + b"\n" for e in entries))
            os.fsync(fd)
        finally:
            os.close(fd)
    taking.unlink(missing_ok=True)
