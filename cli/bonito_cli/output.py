"""Tables for people, JSON for programs, bare ids and secrets for scripts (--quiet)."""

import csv
import io
import json
import re
import shutil
import sys
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

# Server strings (names, descriptions, request ids, error messages) are typed by other
# people: Rich markup, emoji codes and highlighting are off, so `[/]` or `[link=…]` in a
# key's name prints as itself instead of crashing or spoofing a link.
# Piped output (CI logs) is not cut at 80 columns: records keep their long values whole.
# Tables fit terminal_width() (80 when piped) on their own, a row never wrapped.
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
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)  # "Équation", as typed
    return str(value)


# ------------------------------------------------------------------------------ money
# The API sends some amounts as exact decimal text (a log's cost, a key's spend, a budget:
# printed as they are) and the reports' as JSON numbers (usage, analytics, savings, the
# catalog's prices), which str() would print as 4.571e-05 or 0.30000000000000004. A number
# in a money or share field is printed in one fixed notation instead, the same in tables,
# records, CSV and --quiet (--json is the API's JSON, untouched):
# - an amount of USD (cost, cost_usd, saved_usd, spend…): 8 decimals, the grain costs are
#   stored with (0.00004571, 0.00092000), as `logs` prints a cost;
# - a catalog price per token (input_cost_per_token): every decimal it has (0.000000165);
# - a share: 2 decimals and a % sign in tables (95.00%, 19.44%; error_rate, a fraction, is
#   shown in %), in CSV the API's unit with 2 decimals and no sign (95.00).
USD_PLACES = Decimal("0.00000001")
PCT_PLACES = Decimal("0.01")


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _exact(value) -> Decimal | None:
    """The decimal a JSON number stands for (its shortest repr: 4.571e-05 is 0.00004571),
    None for nan/inf."""
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _fixed(number: Decimal, places: Decimal) -> str:
    text = format(number.quantize(places), "f")
    return text[1:] if text.startswith("-") and not number.quantize(places) else text  # -0


def usd(value) -> str:
    """An amount of USD as fixed decimal text with 8 places: 4.571e-05 -> 0.00004571,
    0.30000000000000004 -> 0.30000000. Text (the API's exact decimals) is kept as it is."""
    number = _exact(value) if _number(value) else None
    return cell(value) if number is None else _fixed(number, USD_PLACES)


def price(value) -> str:
    """A price per token as plain decimal text with every decimal it has (1.65e-07 ->
    0.000000165), never an exponent."""
    number = _exact(value) if _number(value) else None
    if number is None:
        return cell(value)
    text = format(number, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def percent(value, *, fraction: bool = False, sign: bool = True) -> str:
    """A share with 2 decimals: 95.0 -> 95.00%; ``fraction`` when the API sends 0.0123 for
    1.23 %; without ``sign`` (CSV) the number alone, in the API's unit."""
    number = _exact(value) if _number(value) else None
    if number is None:
        return cell(value)
    if not sign:
        return _fixed(number, PCT_PLACES if not fraction else Decimal("0.0001"))
    return _fixed(number * 100 if fraction else number, PCT_PLACES) + "%"


def kind(column: str) -> str | None:
    """What a field's number is: "usd", "price", "pct" (a percent), "rate" (a fraction of
    one, shown in %), or None (a count, a latency, a score: printed as it is)."""
    if column.endswith("_cost_per_token"):
        return "price"
    if column == "cost" or column.endswith(("_usd", "cost")) or column.startswith("spen"):
        return "usd"
    if column.endswith("_pct"):
        return "pct"
    if column == "error_rate":
        return "rate"
    return None


def field_text(column: str, value, *, csv: bool = False) -> str:
    """``value`` of field ``column`` as a table, record, CSV or --quiet prints it: money
    and shares in their fixed notation (above), anything else as cell() does."""
    what = kind(str(column)) if _number(value) else None
    if what == "usd":
        return usd(value)
    if what == "price":
        return price(value)
    if what in ("pct", "rate"):
        return percent(value, fraction=what == "rate", sign=not csv)
    return cell(value)


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


# ------------------------------------------------------------------------------ tables
GAP = 2  # spaces between columns
LEAST = 12  # a column cut with … keeps at least this many cells (or its header's width)
ROOMY = 16  # the width a long name or model gets before a less important column is let in
# An ISO time from the API (Django's, UTC): shown to the second, as 2026-12-03 13:51:37.
_ISO_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})"
)


def terminal_width() -> int:
    """The columns a table may use: $COLUMNS, else the terminal's, else (piped) 80."""
    return max(20, shutil.get_terminal_size((80, 24)).columns)


def short_cell(value, column: str = "") -> str:
    """A cell of a table fitted to the terminal: an ISO time to the second, in UTC; money
    and shares as field_text() prints them."""
    if isinstance(value, str) and _ISO_TIME.fullmatch(value):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return field_text(column, value)


def layout(
    natural: dict[str, int],
    columns: list[str],
    width: int | None,
    keep: tuple = (),
    cut: tuple = (),
) -> dict[str, int]:
    """Which of ``columns`` to show and how wide, so that a row fits in ``width`` cells
    (None: all of them, in full). ``keep`` names the columns in the order they matter (the
    others after them, in table order). In that order, each column is shown if it fits
    beside the ones before it, a ``cut`` column (text) counted at most ROOMY wide; a column
    that does not fit is left out, unless it may be cut and LEAST of it fits. The room left
    then goes to the cut columns, the most important first, up to their whole text. Never
    more than ``width``: even the first column is cut at the edge."""
    if width is None:
        return dict(natural)
    floor = {
        c: min(natural[c], max(LEAST, cell_len(c))) if c in cut else natural[c] for c in columns
    }
    roomy = {c: min(natural[c], max(ROOMY, floor[c])) if c in cut else natural[c] for c in columns}
    order = [c for c in keep if c in columns] + [c for c in columns if c not in keep]
    widths: dict[str, int] = {}

    def room() -> int:
        return width - sum(widths.values()) - GAP * len(widths)  # after one more gap

    for column in order:
        if roomy[column] <= room():
            widths[column] = roomy[column]
    for column in order:  # a column cut short rather than none
        if column not in widths and floor[column] <= room():
            widths[column] = room()
    if not widths:  # not even the first: it gets the whole width
        return {order[0]: width}
    left = width - sum(widths.values()) - GAP * (len(widths) - 1)
    for column in order:
        if column in widths and left > 0:
            more = min(left, natural[column] - widths[column])
            widths[column] += more
            left -= more
    return {c: widths[c] for c in columns if c in widths}  # in table order


def line(texts: dict[str, str], widths: dict[str, int], right: set = frozenset()) -> Text:
    """One row: each text cut to its column (…) and padded; never wider than the columns."""
    parts = []
    for column, size in widths.items():
        text = Text(texts.get(column, ""))
        if text.cell_len > size:
            text.truncate(size, overflow="ellipsis")
        padding = " " * (size - text.cell_len)
        parts.append(padding + text.plain if column in right else text.plain + padding)
    return Text((" " * GAP).join(parts).rstrip())


_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def _numeric(values: list) -> bool:
    """Whether a column holds numbers (money as the API's decimal strings too): right-aligned."""
    present = [v for v in values if v is not None and v != ""]
    return bool(present) and all(
        (isinstance(v, int | float) and not isinstance(v, bool))
        or (isinstance(v, str) and _DECIMAL.fullmatch(v))
        for v in present
    )


def table(
    rows: list[dict],
    columns: list[str],
    title: str | None = None,
    *,
    wide: bool = False,
    keep: tuple = (),
    cut: tuple = (),
) -> None:
    """Rows under a header, fitted to the terminal (``terminal_width``): the columns that do
    not fit are left out, least important first, and long text is cut with …, so that a row
    is one line, never wrapped; stderr names the columns left out. ``wide``: every column in
    full (times as the API wrote them), however wide."""
    texts = [
        {c: safe(field_text(c, r.get(c)) if wide else short_cell(r.get(c), c)) for c in columns}
        for r in rows
    ]
    natural = {c: max([cell_len(safe(c))] + [cell_len(t[c]) for t in texts]) for c in columns}
    widths = layout(natural, columns, None if wide else terminal_width(), keep, cut)
    right = {c for c in columns if _numeric([r.get(c) for r in rows])}
    if title:
        console.print(Text(safe(title), style="bold"), soft_wrap=True)
    header = line({c: safe(c) for c in columns}, widths, right)
    header.stylize("bold")
    console.print(header, soft_wrap=True)
    for text in texts:
        console.print(line(text, widths, right), soft_wrap=True)
    left_out = [c for c in columns if c not in widths]
    if left_out:
        err_console.print(
            f"({len(left_out)} more column{'s' if len(left_out) > 1 else ''} with --wide:"
            f" {', '.join(left_out)})",
            style="dim",
        )


def record(row: dict) -> None:
    width = max((len(safe(k)) for k in row), default=0)
    for key, value in row.items():
        console.print(
            Text.assemble((safe(key).ljust(width), "bold"), "  ", safe(field_text(key, value))),
            soft_wrap=True,
        )


# A cell a spreadsheet would run as a formula (a key or model name typed by someone else
# starting with = + - @, a tab or a line break) is prefixed with a single quote, as the
# server's own CSV downloads do (OWASP's rule); numbers stay numbers.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def csv_cell(value, column: str = "") -> str:
    text = field_text(column, value, csv=True)
    if not isinstance(value, int | float) and text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def write_csv(rows: list[dict], columns: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: csv_cell(row.get(c), c) for c in columns})
    sys.stdout.write(buffer.getvalue())
