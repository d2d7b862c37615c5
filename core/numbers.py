"""Numbers people type (config files, forms, JSON bodies), read exactly or refused with a
message that says what was wrong.

Money is a Decimal read from the text it was written as: "10.1" is 10.1, never the float
10.0999… A float that remembers its source text (the apply_config loader's
`SourceFloat`) is read from that text; any other float from its shortest repr, which is
the text it was written as for up to 15 significant digits (every money column holds at
most 12). Digits are ASCII only: Python's Decimal() and int() also read "٣" as 3.
"""

import math
import re
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import DecimalValidator

from .describe import describe  # also imported from here by the forms and the config

_DECIMAL = re.compile(r"[+-]?([0-9][0-9_]*(\.[0-9_]*)?|\.[0-9][0-9_]*)([eE][+-]?[0-9]+)?", re.ASCII)
_WHOLE = re.compile(r"[+-]?[0-9]+", re.ASCII)
INT32_MAX = 2**31 - 1  # the largest value of a PositiveIntegerField on PostgreSQL


class SourceFloat(float):
    """A float that keeps the text it was written as (`source`)."""

    source: str

    def __new__(cls, value, source: str):
        number = super().__new__(cls, value)
        number.source = source
        return number


def to_decimal(value) -> Decimal:
    """A finite Decimal from a number or its text; ValueError (with the message) if not one."""
    number = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, Decimal):
        number = value
    elif isinstance(value, float):
        text = getattr(value, "source", "").replace("_", "").strip()
        if math.isfinite(value):
            number = Decimal(text) if _DECIMAL.fullmatch(text) else Decimal(repr(value))
    elif isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        number = Decimal(value.strip().replace("_", ""))
    if number is None or not number.is_finite():
        raise ValueError(f"must be a number like 10.50, not {describe(value)}.")
    return number + 0 if number.is_zero() else number  # no "-0"


def money(value, field) -> Decimal | None:
    """`value` for the model DecimalField `field`: exact, not negative, within its digits
    and decimal places; None or "" is None. Raises ValidationError({field name: message})."""
    if value is None or value == "":
        return None
    try:
        number = to_decimal(value)
    except ValueError as exc:
        raise ValidationError({field.name: str(exc)}) from exc
    if number < 0:
        raise ValidationError({field.name: "must not be negative."})
    try:
        DecimalValidator(field.max_digits, field.decimal_places)(number)
    except ValidationError as exc:
        raise ValidationError({field.name: exc.messages}) from exc
    return number


def whole(value, *, minimum: int = 0, maximum: int = INT32_MAX) -> int:
    """A whole number within [minimum, maximum], from an int, an integral float or ASCII
    digits; ValueError (with the message) otherwise."""
    number = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float | Decimal):
        finite = value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)
        if finite and value != int(value):
            raise ValueError(f"must be a whole number, not {describe(value)}.")
        number = int(value) if finite else None
    elif isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
        number = int(value.strip())
    if number is None:
        raise ValueError(f"must be a whole number, not {describe(value)}.")
    if not minimum <= number <= maximum:
        shown = f"{number:,}" if abs(number) < 10**30 else "a number that large"
        raise ValueError(f"must be from {minimum} to {maximum:,}, not {shown}.")
    return number
