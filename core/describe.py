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
    if isinstance(value, int | float | Decimal):
        # As written where it kept its text (a config file's 1e3, not 1000.0)
        source = getattr(value, "source", None)
        return source if isinstance(source, str) else repr(value)
    return type(value).__name__
