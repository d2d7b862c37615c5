"""A value as an error message shows it (no Django: the data plane's smart settings use it
too, and the data plane imports no Django)."""

from decimal import Decimal


def describe(value) -> str:
    """A value as an error message shows it: 'abc', 1.5, true, null, a list, a mapping."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        # quoted as sent, a long text cut short (an error message echoed 200,000 characters)
        return repr(value) if len(value) <= 60 else f"{value[:60]!r}… ({len(value)} characters)"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return repr(value) if isinstance(value, int | float | Decimal) else type(value).__name__
