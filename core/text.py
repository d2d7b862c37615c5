"""Small text helpers shared by forms, views, services and commands."""

import re
import unicodedata

from django.core.exceptions import ValidationError

# Control characters (C0, DEL, C1: tab, line feed, carriage return, escape, …) and the
# Unicode line and paragraph separators: none belongs in a one-line name, and a line break
# in a name that reaches an email header makes Django refuse to send the email.
_CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})
NAME_MESSAGE = "Names cannot contain line breaks, tabs or other control characters."


def _is_control(char: str) -> bool:
    return unicodedata.category(char) in _CONTROL_CATEGORIES


def validate_name(value: str) -> None:
    """The one rule for names people choose (keys, teams, tokens, orgs): no control
    characters. A Django validator: forms and serializers may list it too."""
    if any(_is_control(c) for c in value or ""):
        raise ValidationError(NAME_MESSAGE, code="control_character")


def name_checked(value: str | None, field: str = "name") -> str:
    """`value` trimmed, or a ValidationError on `field` when it holds a control character
    (what every service that takes a user-set name calls)."""
    value = (value or "").strip()
    try:
        validate_name(value)
    except ValidationError as exc:
        raise ValidationError({field: exc.error_list}) from None
    return value


_CONTROL_RUN = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def one_line(text: str) -> str:
    """`text` as one line (every run of whitespace and control characters made one space):
    what an email subject built from data goes through, since a header cannot hold a line
    break, and names stored before they were checked may have one."""
    return _CONTROL_RUN.sub(" ", text or "").strip()


def split_csv(value: str | None) -> list[str]:
    """'a, b,,c ' -> ['a', 'b', 'c']: how list fields are typed in forms and on the command line."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]
