"""Small text helpers shared by forms, views, services and commands."""

import re
import unicodedata

from django.core.exceptions import ValidationError

from core import names_rule
from core.names_rule import (
    codepoint,
    name_safe,  # noqa: F401 (imported from here by its callers)
    shown,  # noqa: F401 (imported from here by its callers)
)

# The one rule for names people choose (docs/security.md, "Names"): one line of visible
# text, no control, bidi or zero-width character (core.names_rule says which character is
# refused, without Django, so the /v1 data plane applies the same rule).
NAME_MESSAGE = "Names cannot contain line breaks, tabs or other control characters."


def name_error(value: str) -> ValidationError | None:
    """What is wrong with ``value`` as a name (see the rule above), or None."""
    found = _first_bad(value or "")
    return found[1] if found else None


def name_cleaned(value: str | None) -> str:
    """``value`` made a name by dropping what the rule refuses (a control character becomes
    a space), trimmed and in NFC: for names Bonito is given rather than asked for (an
    IdP's display name), where refusing would refuse the sign-in."""
    value = value or ""
    while (found := _first_bad(value)) is not None:
        i, error = found
        value = value[:i] + (" " if error.code == "control_character" else "") + value[i + 1 :]
    return unicodedata.normalize("NFC", " ".join(value.split()))


def _first_bad(value: str) -> tuple[int, ValidationError] | None:
    """The index of the first character the rule refuses in ``value``, and why."""
    i = names_rule.first_refused(value)
    return None if i is None else (i, _bad_at(value, i))


def _bad_at(value: str, i: int) -> ValidationError | None:
    """Why the rule refuses the character at ``value[i]`` (names_rule.refusal), worded."""
    why = names_rule.refusal(value, i)
    if why is None:
        return None
    if why == names_rule.CONTROL:
        return ValidationError(NAME_MESSAGE, code=why)
    if why == names_rule.SURROGATE:
        return ValidationError(
            f"Names must be valid Unicode text: {codepoint(value[i])} is half of a character "
            "(an unpaired surrogate).",
            code=why,
        )
    return ValidationError(
        f"Names cannot contain invisible or text-direction characters such as "
        f"{codepoint(value[i])}: they make a name display as another.",
        code=why,
    )


def refused_character(value: str) -> str | None:
    """The first character of ``value`` the rule of names refuses, or None: for checks of
    text that is not a name but must not hide or reorder either (smart routing keywords)."""
    found = _first_bad(value or "")
    return value[found[0]] if found else None


def validate_name(value: str) -> None:
    """The one rule for names people choose (keys, teams, tokens, orgs, models, providers,
    policies, tiers, aliases): one line of visible text (name_error). A Django validator:
    forms and serializers may list it too."""
    error = name_error(value or "")
    if error is not None:
        raise error


def name_checked(value: str | None, field: str = "name") -> str:
    """`value` trimmed and in NFC (the composed form: "é" typed as e + U+0301 is the same
    name as "é"), or a ValidationError on `field` when it breaks the rule of names
    (name_error). What every service that takes a user-set name calls."""
    value = (value or "").strip()
    error = name_error(value)
    if error is not None:
        raise ValidationError({field: error.error_list})
    return unicodedata.normalize("NFC", value)


def names_checked(values, field: str, *, max_length: int = 200) -> list[str]:
    """A list of names (models, providers, regions, tiers) as a service stores it: each one
    name_checked, non-empty and at most ``max_length`` characters; a ValidationError on
    ``field`` naming the first bad one. Anything but a list of text is refused too (the
    Django admin's JSON box also takes a number, NaN or an object)."""
    if values is None:
        return []
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise ValidationError({field: f'{field} must be a list of names (text), e.g. ["a", "b"].'})
    out = []
    for value in values:
        text = value.strip()
        error = name_error(text)
        if error is not None:
            raise ValidationError({field: f"{field}: {shown(value)}: {error.message}"})
        if not text or len(text) > max_length:
            raise ValidationError(
                {field: f"{field}: each name is 1 to {max_length} characters, not {len(text)}."}
            )
        out.append(unicodedata.normalize("NFC", text))
    return out


# Cyrillic and Greek letters drawn like Latin ones (after case folding: "К" is "к", "Ο" is
# "ο"), the common homoglyphs of UTS #39's confusables: "gpt-4о" with a Cyrillic о is drawn
# as "gpt-4o".
_HOMOGLYPHS = str.maketrans(
    "аеорсухіјѕһԁԛԝӏкмнтвʏɡοαιϳκνρυχϲβημτ",
    "aeopcyxijshdqwlkmhtbygoaijkvpuxcbhmt",
)


def name_key(value: str) -> str:
    """What two names that look alike have in common: compatibility forms folded (NFKC:
    "ｇｐｔ" is "gpt", "ﬁ" is "fi"), case folded, Cyrillic and Greek look-alikes of Latin
    letters read as those, runs of whitespace made one space. Names that must tell things
    apart (models, providers, teams, routing policies) may not share one: "GPT-4o" beside
    "gpt-4o" is a choice no one should have to make in a list."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold())
    return " ".join(folded.translate(_HOMOGLYPHS).split())


def look_alike(value: str, others) -> str | None:
    """The first of ``others`` that is not ``value`` but looks like it (name_key), or None."""
    key = name_key(value)
    return next((o for o in others if o != value and name_key(o) == key), None)


def distinct_checked(value: str, others, *, what: str, field: str = "name") -> None:
    """A ValidationError on ``field`` when ``value`` is not one of ``others`` (the names
    already taken, the row being renamed left out) but looks like one of them (name_key)."""
    others = set(others)
    other = None if value in others else look_alike(value, others)
    if other is not None:
        raise ValidationError(
            {
                field: f"{shown(value)} looks like the {what} {shown(other)} of this "
                "organization (only case, width or spacing differ): pick a name that differs "
                "visibly."
            }
        )


_CONTROL_RUN = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def one_line(text: str) -> str:
    """`text` as one line (every run of whitespace and control characters made one space):
    what an email subject built from data goes through, since a header cannot hold a line
    break, and names stored before they were checked may have one."""
    return _CONTROL_RUN.sub(" ", text or "").strip()


def split_csv(value: str | None) -> list[str]:
    """'a, b,,c ' -> ['a', 'b', 'c']: how list fields are typed in forms and on the command line."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]
