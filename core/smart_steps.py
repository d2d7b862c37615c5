"""The learned classifier's "reasoning steps" features: how many operations an open maths
problem makes its solver chain (docs/smart-routing.md, "The steps features").

The static token-vector mean the learned head reads says what a prompt is about, not how
many steps it takes, and GSM8K problems are all about the same things: their order by what
the strong model adds was barely above chance. These fourteen counts were written by hand,
from what makes a word problem long to solve, before any of them was compared with the
labels (bench/experiments/gsm8k_steps.py, the research copy, gives the same values on every
development-set prompt: gateway/tests/test_smart_steps.py). Each is a count and the head
reads log(1 + count), but for ``largest``, already a logarithm. A multiple-choice prompt
gets zeros, as the rules features' ``open_*`` ones do: its answer is picked, not worked
out, and the head learned MMLU from its other features.

Pure Python (re and math): no numpy, and no model. A prompt longer than MAX_CHARS is read
at its first and last MAX_CHARS / 2 characters, like the rules features (SCAN_CHARS) and
the embedding (smart_learned.MAX_CHARS): the parse runs on the request path with the GIL
held, and 40,000 characters took 24 ms (40,000 digits 65 ms) where 4,000 take about 2.5
ms. Every development-set maths problem is under 1,000 characters, so the cap changes none
of the figures the head was measured by; a long prompt's question is in its last part.
"""

from __future__ import annotations

import math
import re

# A longer prompt is read at its first and last 2,000 characters (the docstring says why).
MAX_CHARS = 4_000

NAMES = (
    "steps",  # the estimate: (quantities - 1) + relations + percent + fractions
    #           + conversions + derived
    "quantities",  # numbers in digits (money, decimals, fractions as one) and number words
    "relations",  # phrases that tie one quantity to another: an operation each
    "percent",
    "fractions",
    "conversions",  # per dimension (time, length, ...), the distinct units mentioned - 1
    "rates",  # per, each, every, an hour, mph ...
    "sequence",  # then, after, later, the rest, remaining, left ...
    "conditions",  # if, suppose, assuming, instead, otherwise
    "derived",  # what the question asks for is computed (how many more, total, left ...)
    "q_numbers",  # numbers given in the question sentence itself
    "digits",  # significant digits over all numbers: arithmetic load
    "largest",  # log10(1 + the largest number)
    "non_integer",  # decimals and fractions among the numbers
)


def _word_set(words: str) -> frozenset:
    return frozenset(words.split())


NUMBER_WORDS = _word_set(
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy "
    "eighty ninety hundred thousand million dozen half twice double triple thrice quarter"
)
FRACTION_WORDS = _word_set("half third thirds quarter fifth fifths")
# Units by dimension: two units of one dimension in a problem (hours and minutes, feet and
# inches) mean a conversion to make.
DIMENSIONS = tuple(
    re.compile(r"(?:\b|(?<=\d))(?:" + units + r")\b")
    for units in (
        r"seconds?|minutes?|hours?|days?|weeks?|months?|years?|decades?",
        r"inch(?:es)?|foot|feet|yards?|miles?|centimeters?|cm|meters?|kilometers?|km",
        r"ounces?|oz|pounds?|lbs?|grams?|kilograms?|kg|tons?",
        r"cups?|pints?|quarts?|gallons?|milliliters?|ml|liters?|litres?",
        r"cents?|dollars?|\$|quarters|dimes?|nickels?|pennies",
        r"dozens?|pairs?|packs?|boxes|crates?|bags?|cartons?|cases?",
    )
)
# DIMENSIONS' index of money: its "$" is counted as a unit whenever it appears ("$5" has no
# word boundary before the "$", so the pattern alone seldom finds it).
MONEY = 4
RELATION = re.compile(
    r"\btwice as\b|\b(?:\d+|[a-z]+) times (?:as|more|less|the)\b|\bhalf (?:as|of)\b"
    r"|\b(?:a|one|two) (?:third|quarter|fifth)s? (?:as|of)\b|\b(?:more|less|fewer) than\b"
    r"|\b\w+er than\b|\bas (?:many|much|long|old|tall|far) as\b|(?:%|\bpercent) (?:of|more|less)\b"
)
RATE = re.compile(
    r"\bper\b|\beach\b|\bevery\b|\ban? (?:hour|day|week|month|year|minute)\b"
    r"|/(?:hour|hr|day|week)\b|\bmph\b"
)
SEQUENCE = re.compile(
    r"\bthen\b|\bafter\b|\blater\b|\bnext\b|\bfinally\b|\bafterwards\b|\bthe rest\b"
    r"|\bremaining\b|\bleft\b"
)
CONDITION = re.compile(r"\bif\b|\bsuppose\b|\bassuming\b|\binstead\b|\botherwise\b")
DERIVED = re.compile(
    r"\bhow (?:many|much) more\b|\bdifference\b|\btotal\b|\bin all\b|\baltogether\b|\bcombined\b"
    r"|\bleft\b|\bremain|\baverage\b|\bprofit\b|\bchange\b|\beach\b|\bper\b|\bpercent|%"
    r"|\bsave\b|\bspend\b|\bearn|\bcost"
)
NUMBER = re.compile(r"\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?%?")
_WORD = re.compile(r"[a-z]+")
_PERCENT_WORD = re.compile(r"\bpercent")
# "\d+/\d+" as it counts, started only where a run of digits starts: tried at each digit of
# a long run, it read the rest of the run each time (2,000 digits took 6 ms, 4,000 25 ms).
_FRACTION = re.compile(r"(?<!\d)\d+/\d+")
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")
# A number of over 308 digits is infinite as a float ("9" * 400): its magnitude reads as this.
_HUGE = 1e300


def counts(text: str) -> dict[str, float]:
    """The raw counts of ``text`` (all of it: features() caps what it is given)."""
    low = text.lower()
    words = _WORD.findall(low)
    numbers = NUMBER.findall(text)
    quantities = len(numbers) + sum(w in NUMBER_WORDS for w in words)
    relations = len(RELATION.findall(low))
    percent = low.count("%") + len(_PERCENT_WORD.findall(low))
    fractions = len(_FRACTION.findall(text)) + sum(w in FRACTION_WORDS for w in words)
    conversions = 0
    for n, units in enumerate(DIMENSIONS):
        found = {u.rstrip("s") for u in units.findall(low)}
        if n == MONEY and "$" in low:
            found.add("$")
        conversions += max(len(found) - 1, 0)
    # The question: the last sentence holding a "?", else the last sentence.
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if s.strip()]
    asks = [s for s in sentences if "?" in s] or sentences[-1:]
    question = asks[-1] if asks else text
    derived = len(DERIVED.findall(question.lower()))
    q_numbers = len(NUMBER.findall(question)) + sum(
        w in NUMBER_WORDS for w in _WORD.findall(question.lower())
    )
    digits, largest, non_integer = 0, 0.0, 0
    for number in numbers:
        s = number.strip("$%").replace(",", "")
        if "/" in s or "." in s:
            non_integer += 1
        digits += len(s.replace(".", "").replace("/", "").strip("0")) or 1
        try:  # (\d also matches other scripts' digits, which float() reads too)
            value = float(s.split("/")[0])
        except ValueError:
            continue
        largest = max(largest, value)
    steps = max(quantities - 1, 0) + relations + percent + fractions + conversions + derived
    return {
        "steps": steps,
        "quantities": quantities,
        "relations": relations,
        "percent": percent,
        "fractions": fractions,
        "conversions": conversions,
        "rates": len(RATE.findall(low)),
        "sequence": len(SEQUENCE.findall(low)),
        "conditions": len(CONDITION.findall(low)),
        "derived": derived,
        "q_numbers": q_numbers,
        "digits": digits,
        "largest": math.log10(min(largest, _HUGE) + 1),
        "non_integer": non_integer,
    }


def read_part(text: str, max_chars: int = MAX_CHARS) -> str:
    """What the parse reads of ``text``: all of it, or its first and last ``max_chars`` / 2
    characters (joined by a line break, so no word or number runs across the cut)."""
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    return text[:half] + "\n" + text[len(text) - half :]


def features(text: str, multiple_choice: bool, max_chars: int = MAX_CHARS) -> list[float]:
    """The fourteen features (NAMES' order) of a prompt's text, as the rules features read
    it; zeros for a multiple-choice prompt. ``max_chars``: of ``text`` read (MAX_CHARS; a
    share of it for each prompt of a list, as the embedding's)."""
    if multiple_choice:
        return [0.0] * len(NAMES)
    c = counts(read_part(text, max_chars))
    return [float(c[k]) if k == "largest" else math.log1p(c[k]) for k in NAMES]
