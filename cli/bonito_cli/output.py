"""Tables for people, JSON for programs, bare ids and secrets for scripts (--quiet)."""

import csv
import io
import json
import re
import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

# Server strings (names, descriptions, request ids, error messages) are typed by other
# people: Rich markup, emoji codes and highlighting are off, so `[/]` or `[link=…]` in a
# key's name prints as itself instead of crashing or spoofing a link.
# Piped output (CI logs) is not cut at 80 columns.
console = Console(
    width=None if sys.stdout.isatty() else 200, markup=False, emoji=False, highlight=False
)
err_console = Console(stderr=True, markup=False, emoji=False, highlight=False)

# C0 controls (ESC among them), DEL and C1 controls move the cursor, clear the screen, set
# the title or open hyperlinks; printed as \xNN instead. Tab and newline stay where allowed.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def safe(text, *, multiline: bool = False) -> str:
    """``text`` with every terminal control character shown as an escape (\x1b), so a
    server string cannot drive the terminal; ``multiline`` keeps newlines and tabs."""
    pattern = _CONTROL if multiline else _CONTROL_ONE_LINE
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def error(message) -> None:
    """`Error: …` on stderr, the message printed literally: its newlines stay (a YAML
    parser's message points at the line with a caret below it), every other control
    character is shown as an escape."""
    text = _CONTROL_BUT_NEWLINE.sub(lambda m: f"\\x{ord(m.group()):02x}", str(message))
    err_console.print(Text.assemble(("Error:", "red"), " ", text.strip("\n")), soft_wrap=True)


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
        t.add_column(Text(safe(column)))
    for row in rows:
        t.add_row(*(Text(safe(cell(row.get(c)))) for c in columns))
    console.print(t)


def compact_table(
    rows: list[dict], columns: list[str], title: str, folded: dict[str, int] | None = None
) -> None:
    """A table without borders, for a summary laid out to fit 80 columns: the columns in
    ``folded`` are at most that wide, longer text going on to the next line (never cut)."""
    folded = folded or {}
    console.print(Text(safe(title), style="bold"))  # not the table's: that pads it out
    t = Table(
        box=None,
        pad_edge=False,
        padding=(0, 1),
        header_style="bold",
    )
    for column in columns:
        t.add_column(
            Text(safe(column)),
            max_width=folded.get(column),
            overflow="fold",
            no_wrap=column not in folded,
        )
    for row in rows:
        t.add_row(*(Text(safe(cell(row.get(c)))) for c in columns))
    console.print(t)


def record(row: dict) -> None:
    width = max((len(safe(k)) for k in row), default=0)
    for key, value in row.items():
        console.print(
            Text.assemble((safe(key).ljust(width), "bold"), "  ", safe(cell(value))),
            soft_wrap=True,
        )


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
