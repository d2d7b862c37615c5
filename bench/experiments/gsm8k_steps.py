"""Hand-written "reasoning steps" features of an open maths problem (2026-12-04, research).

Designed from first principles before any relation to the labels was looked at (only a few
prompt texts were read, to check that the parse finds what it means to): how many
operations a solver has to chain. Each item is a count; the features are log1p of them.
Multiple-choice prompts get zeros (the rules features' "open_*" convention), so on MMLU
they are constant.

- quantities: numbers in digits (money, decimals, fractions as one) and number words;
- relations: phrases that tie one quantity to another and so cost an operation each
  ("twice as", "N times as/more", "half/third/quarter of", "more/less/fewer than",
  "<comparative> than", "as many/much as", "percent of");
- percentages, and fractions;
- unit conversions: for each dimension (time, length, mass, volume, money, counting
  units), the distinct units mentioned, minus one;
- rates: "per", "each", "every", "an hour", "a day", "/hour", "mph" ...;
- sequence cues: "then", "after", "later", "next", "finally", "afterwards", "the rest",
  "remaining", "left";
- conditions: "if", "suppose", "assuming", "instead", "otherwise";
- what the question asks: cue words in the last question sentence for a derived quantity
  (how many more, difference, total, in all, altogether, combined, left, remain, average,
  profit, change, each, per, percent, save, spend, earn, cost), and numbers in the question
  sentence itself (new data given with the question);
- arithmetic load: significant digits over all numbers, the largest number's magnitude,
  decimals or fractions present;
- an estimate of the steps: (quantities - 1) + relations + percentages + fractions +
  conversions + derived-question cues.
"""

from __future__ import annotations

import math
import re

NUM_WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
    "hundred": 100,
    "thousand": 1000,
    "million": 1e6,
    "dozen": 12,
    "half": 0.5,
    "twice": 2,
    "double": 2,
    "triple": 3,
    "thrice": 3,
    "quarter": 0.25,
}
DIMENSIONS = {
    "time": r"seconds?|minutes?|hours?|days?|weeks?|months?|years?|decades?",
    "length": r"inch(?:es)?|foot|feet|yards?|miles?|centimeters?|cm|meters?|kilometers?|km",
    "mass": r"ounces?|oz|pounds?|lbs?|grams?|kilograms?|kg|tons?",
    "volume": r"cups?|pints?|quarts?|gallons?|milliliters?|ml|liters?|litres?",
    "money": r"cents?|dollars?|\$|quarters|dimes?|nickels?|pennies",
    "count": r"dozens?|pairs?|packs?|boxes|crates?|bags?|cartons?|cases?",
}
RELATION = re.compile(
    r"\btwice as\b|\b(?:\d+|[a-z]+) times (?:as|more|less|the)\b|\bhalf (?:as|of)\b"
    r"|\b(?:a|one|two) (?:third|quarter|fifth)s? (?:as|of)\b|\b(?:more|less|fewer) than\b"
    r"|\b\w+er than\b|\bas (?:many|much|long|old|tall|far) as\b|(?:%|\bpercent) (?:of|more|less)\b"
)
RATE = re.compile(
    r"\bper\b|\beach\b|\bevery\b|\ban? (?:hour|day|week|month|year|minute)\b|/(?:hour|hr|day|week)\b|\bmph\b"
)
SEQUENCE = re.compile(
    r"\bthen\b|\bafter\b|\blater\b|\bnext\b|\bfinally\b|\bafterwards\b|\bthe rest\b|\bremaining\b|\bleft\b"
)
CONDITION = re.compile(r"\bif\b|\bsuppose\b|\bassuming\b|\binstead\b|\botherwise\b")
DERIVED = re.compile(
    r"\bhow (?:many|much) more\b|\bdifference\b|\btotal\b|\bin all\b|\baltogether\b|\bcombined\b"
    r"|\bleft\b|\bremain|\baverage\b|\bprofit\b|\bchange\b|\beach\b|\bper\b|\bpercent|%"
    r"|\bsave\b|\bspend\b|\bearn|\bcost"
)
NUMBER = re.compile(r"\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?%?")


def _values(text: str) -> list[str]:
    return NUMBER.findall(text)


def raw_counts(p: str) -> dict:
    low = p.lower()
    words = re.findall(r"[a-z]+", low)
    nums = _values(p)
    n_words = sum(w in NUM_WORDS for w in words)
    quantities = len(nums) + n_words
    relations = len(RELATION.findall(low))
    percent = low.count("%") + len(re.findall(r"\bpercent", low))
    fractions = len(re.findall(r"\d+/\d+", p)) + sum(
        w in ("half", "third", "thirds", "quarter", "fifth", "fifths") for w in words
    )
    conversions = 0
    for pattern in DIMENSIONS.values():
        found = {m.rstrip("s") for m in re.findall(r"(?:\b|(?<=\d))(?:" + pattern + r")\b", low)}
        if "$" in low and "$" in pattern:
            found.add("$")
        conversions += max(len(found) - 1, 0)
    rates = len(RATE.findall(low))
    sequence = len(SEQUENCE.findall(low))
    conditions = len(CONDITION.findall(low))
    sentences = [s for s in re.split(r"(?<=[.?!])\s+", p.strip()) if s.strip()]
    asks = [s for s in sentences if "?" in s] or sentences[-1:]
    question = asks[-1] if asks else p
    derived = len(DERIVED.findall(question.lower()))
    q_numbers = len(_values(question)) + sum(
        w in NUM_WORDS for w in re.findall(r"[a-z]+", question.lower())
    )
    digits, largest, non_integer = 0, 0.0, 0
    for n in nums:
        s = n.strip("$%").replace(",", "")
        if "/" in s or "." in s:
            non_integer += 1
        digits += len(s.replace(".", "").replace("/", "").strip("0")) or 1
        try:
            v = float(s.split("/")[0])
        except ValueError:
            continue
        largest = max(largest, v)
    steps = max(quantities - 1, 0) + relations + percent + fractions + conversions + derived
    return {
        "steps": steps,
        "quantities": quantities,
        "relations": relations,
        "percent": percent,
        "fractions": fractions,
        "conversions": conversions,
        "rates": rates,
        "sequence": sequence,
        "conditions": conditions,
        "derived": derived,
        "q_numbers": q_numbers,
        "digits": digits,
        "largest": math.log10(largest + 1),
        "non_integer": non_integer,
    }


NAMES = tuple(raw_counts("x").keys())


def steps_features(p: str, multiple_choice: bool) -> list[float]:
    if multiple_choice:
        return [0.0] * len(NAMES)
    c = raw_counts(p)
    return [c[k] if k == "largest" else math.log1p(c[k]) for k in NAMES]


if __name__ == "__main__":  # a look at the parse on a few prompts (texts only, no labels)
    import json
    import os
    import sys

    path = os.environ.get("ROUTING_DEV", "../../../shared/data/routing/dev.jsonl")
    rows = [json.loads(line) for line in open(path)]
    opens = [r["prompt"] for r in rows if r["source"].startswith("gsm8k")]
    for p in opens[: int(sys.argv[1]) if len(sys.argv) > 1 else 5]:
        print(p)
        print(raw_counts(p))
        print()
