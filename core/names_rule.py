"""The rule of names at the level of characters, without Django: which character of a text
the rule refuses, and the text with those written as escapes. core.text builds the names
validators on it; the /v1 data plane (which imports no Django: .importlinter) checks the
model a client names with it, so /v1 accepts exactly the model names an org can create."""

import unicodedata

# One line of visible text (docs/security.md, "Names"). Control characters (C0, DEL, C1: tab,
# line feed, escape, NUL, …) and the Unicode line and paragraph separators do not belong in
# a one-line name, and a line break in a name that reaches an email header makes Django
# refuse to send the email.
_CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})
# Format characters (category Cf: bidirectional overrides and isolates such as U+202E,
# zero-width spaces, U+FEFF, soft hyphens, tag characters) draw nothing, or reorder what
# is drawn: "abc\u202edcba" shows as another name (Trojan Source). These draw nothing either
# though they are letters or marks: a name of Hangul fillers or braille blanks looks empty.
_INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u2800\u3164\uffa0")
_ZWNJ, _ZWJ = "\u200c", "\u200d"
# Scripts whose letters join, where a zero-width (non-)joiner between two of them changes
# how they are drawn (Persian writes "می‌خواهم" with a ZWNJ).
_JOINING_SCRIPTS = ("ARABIC", "SYRIAC", "NKO", "MANDAIC", "MONGOLIAN", "ADLAM", "HANIFI")
_VIRAMA = 9  # the canonical combining class of a virama (Indic scripts' conjunct breaker)

# Why the rule refuses a character (core.text words each as a ValidationError).
CONTROL, SURROGATE, INVISIBLE = "control_character", "surrogate", "invisible_character"


def _joining(char: str) -> bool:
    return unicodedata.category(char)[0] in "LM" and unicodedata.name(char, "").startswith(
        _JOINING_SCRIPTS
    )


def _emoji(char: str) -> bool:
    # Symbols, the skin tone modifiers (Sk) and the emoji presentation selector.
    return unicodedata.category(char) in ("So", "Sk") or char == "\ufe0f"


def _joiner_fits(value: str, i: int) -> bool:
    """Whether the ZWJ or ZWNJ at ``value[i]`` does a script's or an emoji's work: after a
    virama (Indic conjuncts), between two letters of a joining script, or (ZWJ) inside an
    emoji sequence such as 👩‍💻. Anywhere else it only hides (between Latin letters)."""
    if i == 0 or i == len(value) - 1:
        return False
    before, after = value[i - 1], value[i + 1]
    if unicodedata.combining(before) == _VIRAMA:
        return True
    if _joining(before) and _joining(after):
        return True
    return value[i] == _ZWJ and _emoji(before) and unicodedata.category(after) == "So"


def _selector_fits(value: str, i: int) -> bool:
    """Whether the variation selector at ``value[i]`` picks a glyph of what it follows (an
    emoji, an ideograph, a Mongolian letter): after ASCII, or first, it only hides. A keycap
    (1️⃣: a digit, U+FE0F, U+20E3) is the one ASCII base it takes."""
    if i == 0:
        return False
    before = value[i - 1]
    if before.isascii():
        return value[i] == "\ufe0f" and value[i + 1 : i + 2] == "\u20e3"
    return unicodedata.category(before)[0] in "LMS" and not _is_variation_selector(before)


def _is_variation_selector(char: str) -> bool:
    c = ord(char)
    return 0xFE00 <= c <= 0xFE0F or 0xE0100 <= c <= 0xE01EF or 0x180B <= c <= 0x180F


def refusal(value: str, i: int) -> str | None:
    """Why the rule refuses the character at ``value[i]`` (CONTROL, SURROGATE or
    INVISIBLE; its neighbours decide for the joiners and variation selectors), or None."""
    char = value[i]
    category = unicodedata.category(char)
    if category in _CONTROL_CATEGORIES:
        return CONTROL
    if category == "Cs":
        return SURROGATE
    if (
        (category == "Cf" and not (char in (_ZWNJ, _ZWJ) and _joiner_fits(value, i)))
        or char in _INVISIBLE
        or (_is_variation_selector(char) and not _selector_fits(value, i))
    ):
        return INVISIBLE
    return None


def first_refused(value: str) -> int | None:
    """The index of the first character of ``value`` the rule refuses, or None. Printable
    ASCII, the usual case, costs one check."""
    if value.isascii() and value.isprintable():
        return None
    return next((i for i in range(len(value)) if refusal(value, i) is not None), None)


def codepoint(char: str) -> str:
    """U+202E (RIGHT-TO-LEFT OVERRIDE): a character named so it can be shown safely."""
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" ({name})" if name else "")


def escaped(char: str) -> str:
    """A character as its Python escape: U+202E is \\u202e, ESC is \\x1b."""
    return char.encode("unicode_escape", "backslashreplace").decode()


def name_safe(value: str | None, limit: int | None = None) -> str:
    """``value`` with every character the rule of names refuses written as its escape
    (``abc\\u202edcba``), the rest kept as it is: for text that is stored or shown but
    was never asked for as a name (the model a client sends on /v1, an agent's hostname),
    and for names saved before the rule (``manage.py check_names --fix``). Printable
    ASCII, the usual case, costs one check and is returned as it is.

    With ``limit``, at most that many characters of the result are kept, never half an
    escape, and "…" marks a cut: what an error message echoes of a client's text."""
    value = value or ""
    if value.isascii() and value.isprintable() and (limit is None or len(value) <= limit):
        return value
    out, size = [], 0
    for i, char in enumerate(value):
        piece = escaped(char) if refusal(value, i) is not None else char
        size += len(piece)
        if limit is not None and size > limit:
            return "".join(out) + "…"
        out.append(piece)
    return "".join(out)


def shown(value, limit: int = 100) -> str:
    """``value`` quoted for a message (its first ``limit`` characters), every character
    that draws nothing or reorders the text written as an escape (\\u202e): a message must
    not show a spoofed name as the name it imitates."""
    out = []
    for char in str(value)[:limit]:
        hidden = (
            unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp")
            or char in _INVISIBLE
            or _is_variation_selector(char)
        )
        out.append(char.encode("unicode_escape", "backslashreplace").decode() if hidden else char)
    return "'" + "".join(out) + "'"
