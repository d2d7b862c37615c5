"""Money and shares as the dashboard and the weekly digest say them: one rule everywhere.

- An amount of USD has cents and at most 4 decimals: ``$1.50``, ``$0.30``, ``$0.0009``,
  ``$12.3457``; zero is ``$0``. A non-zero amount that would read ``$0.0000`` is shown with
  its first two significant digits instead, never as zero: ``$0.000016``, ``$0.00000035``.
  A negative amount has a minus before the dollar sign (``-$0.0019``); pages that say a
  loss in words show the amount without it.
- A share in percent has at most 2 decimals, trailing zeros dropped: ``95%``, ``47.5%``,
  ``19.44%``; zero is ``0%``. A non-zero share that would read ``0%`` is ``under 0.01%``
  (the analytics API rounds ``saved_pct`` to 2 places, so the caller may say that the
  share is not zero although its rounded value is).

Exact amounts stay where a machine reads them (the REST API, CSV downloads, the chart's
JSON, a log's detail with the 8 decimals a cost is stored with).
"""

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

CENT = Decimal("0.01")
GRAIN = Decimal("0.0001")  # the finest place an amount is shown to, but for tiny ones


def _decimal(value) -> Decimal | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _plain(number: Decimal) -> str:
    """Positional text (never 1E-5), without trailing zeros past the cents."""
    text = format(number, "f")
    whole, _, decimals = text.partition(".")
    decimals = decimals.rstrip("0")
    return f"{whole}.{decimals.ljust(2, '0')}"


def usd(value) -> str:
    """``value`` (a number, Decimal or decimal text) as an amount of USD; "—" for none."""
    number = _decimal(value)
    if number is None:
        return "—"
    if not number:
        return "$0"
    size = abs(number)
    shown = size.quantize(GRAIN, rounding=ROUND_HALF_UP)
    if not shown:  # under half a ten-thousandth: its first two significant digits
        shown = size.quantize(Decimal(1).scaleb(size.adjusted() - 1), rounding=ROUND_HALF_UP)
    return ("-" if number < 0 else "") + "$" + _plain(shown)


def pct(value, nonzero=False) -> str:
    """``value`` (a share in percent: 95.0 for 95 %) as text; ``nonzero``: the share is not
    zero even if ``value`` is (a rounded figure), so a zero reads "under 0.01%"."""
    number = _decimal(value)
    if number is None:
        return "—"
    shown = number.quantize(CENT, rounding=ROUND_HALF_UP)
    if not shown:
        return "under 0.01%" if number or nonzero else "0%"
    text = format(shown, "f").rstrip("0").rstrip(".")
    return f"{text}%"


def rate_pct(value, nonzero=False) -> str:
    """A fraction of one (an error rate, 0.0123) as a share: 1.23%."""
    number = _decimal(value)
    return "—" if number is None else pct(number * 100, nonzero)


def saved_text(row: dict) -> str:
    """A smart routing row's saving in words (the Usage page's Saved cell, the digest's
    lines by policy), from its ``saved_usd``, ``saved_pct`` and ``cost_usd``. A row that
    cost what the top tier would have (the top tier's own requests, by their nature) saved
    nothing and says so; a row that cost more says how much more than on the top tier,
    never a negative saving nor "none: $0.0004 (0%) more" (a share under 0.01 % read as
    0 %)."""
    saved = row["saved_usd"]
    # Amounts as every amount on the page; the share of a saving that is not zero is not
    # "0%" even when the API rounded it to 0.0.
    share = pct(abs(row["saved_pct"]), nonzero=True)
    if saved > 0:
        return f"{usd(abs(saved))} ({share})"
    if saved < 0:
        return f"nothing: cost {usd(abs(saved))} ({share}) more than the top tier would have"
    return "nothing (cost what the top tier would have)" if row["cost_usd"] else "nothing"
