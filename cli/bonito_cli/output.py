"""Tables for people, JSON for programs, bare ids and secrets for scripts (--quiet)."""

import csv
import io
import json
import sys

from rich.console import Console
from rich.table import Table

# Piped output (CI logs) is not cut at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)


def cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(rows: list[dict], columns: list[str], title: str | None = None) -> None:
    t = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        t.add_column(column)
    for row in rows:
        t.add_row(*(cell(row.get(c)) for c in columns))
    console.print(t)


def record(row: dict) -> None:
    width = max((len(k) for k in row), default=0)
    for key, value in row.items():
        console.print(f"[bold]{key.ljust(width)}[/bold]  {cell(value)}", highlight=False)


# A cell a spreadsheet would run as a formula (a key or model name typed by someone else
# starting with = + - @, a tab or a line break) is prefixed with a single quote, as the
# server's own CSV downloads do (OWASP's rule); numbers stay numbers.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def csv_cell(value) -> str:
    text = cell(value)
    if not isinstance(value, int | float) and text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def write_csv(rows: list[dict], columns: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: csv_cell(row.get(c)) for c in columns})
    sys.stdout.write(buffer.getvalue())
