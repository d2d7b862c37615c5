"""Smart routing's settings: one shape for the control plane and the data plane.

A smart policy sends each prompt to one of its *tiers* (public model names, cheapest first)
by the prompt's difficulty score (0-1, higher = harder; gateway.dataplane.smart computes
it): a score below ``thresholds[0]`` goes to ``tiers[0]``, below ``thresholds[1]`` to
``tiers[1]``, and so on; the rest to the top tier. The dashboard, REST, apply_config and
the admin all save the same spec (a JSON object) through ``resolve``, which checks it and
turns it into the ``SmartPolicy`` the snapshot carries. docs/smart-routing.md is the
user's guide.
"""

from __future__ import annotations

import json
import logging
import math
import unicodedata
from bisect import bisect_left, bisect_right
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

from .describe import describe

CLASSIFIERS = {
    "rules": "Rules (length, code, maths, reasoning cues; free)",
    "learned": "Learned (a sentence embedding and a trained head; Pro and Enterprise)",
}
# What an A/B share of traffic goes through instead: another classifier or the top tier.
AB_ARMS = ("rules", "learned", "strong")
KEYWORD_CATEGORIES = ("math", "reasoning", "multistep", "code", "simple")
DEFAULT_AGGRESSIVENESS = 0.5
DEFAULT_ALIAS = "auto"
SPEC_KEYS = ("classifier", "aggressiveness", "thresholds", "ab", "keywords", "within")
MAX_KEYWORDS = 200  # per category: the rules classifier scans for each one
MAX_TIERS = 10
MAX_TIER_NAME = 200  # a model name's length (Deployment.model_name, usage rows' route_tier)
RULES_MODEL_FILE = Path(__file__).with_name("smart_rules.json")
log = logging.getLogger("bonito.gateway.smart")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True, slots=True)
class SmartPolicy:
    tiers: tuple  # public model names, cheapest (easiest prompts) first
    thresholds: tuple  # len(tiers) - 1 ascending scores in (0, 1)
    classifier: str = "rules"
    aggressiveness: float | None = None  # what the thresholds came from, if not set by hand
    ab_share: float = 0.0  # the share of requests routed by ab_arm instead
    ab_arm: str = ""  # "rules" | "learned" | "strong" (straight to the top tier)
    keywords: dict = field(default_factory=dict)  # category -> tuple of words (overrides)
    within: str = "failover"  # the strategy among one tier's deployments
    # Worked out from the settings above when the policy is made (arm_thresholds): the
    # thresholds each classifier that may score its requests cuts at. Not a setting: not
    # compared, not written to documents.
    arm_thresholds: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "arm_thresholds", arm_thresholds(self))

    def tier_index(self, score: float) -> int:
        """The tier a score goes to: the first whose threshold the score is under."""
        for i, t in enumerate(self.thresholds):
            if score < t:
                return i
        return len(self.tiers) - 1

    @property
    def top(self) -> str:
        return self.tiers[-1]


def policy_to_dict(p: SmartPolicy) -> dict:
    out = asdict(p)
    del out["arm_thresholds"]  # worked out again where the document is read
    out["tiers"] = list(p.tiers)
    out["thresholds"] = list(p.thresholds)
    out["keywords"] = {c: list(words) for c, words in p.keywords.items()}
    return out


def policy_from_dict(d: dict | None) -> SmartPolicy | None:
    if not d:
        return None
    return SmartPolicy(
        tiers=tuple(d["tiers"]),
        thresholds=tuple(float(t) for t in d["thresholds"]),
        classifier=d.get("classifier", "rules"),
        aggressiveness=d.get("aggressiveness"),
        ab_share=float(d.get("ab_share", 0.0)),
        ab_arm=d.get("ab_arm", ""),
        keywords={c: tuple(words) for c, words in (d.get("keywords") or {}).items()},
        within=d.get("within", "failover"),
    )


# ------------------------------------------------------------------------------ the models
@cache
def rules_model() -> dict:
    """The rules classifier's weights and calibration (made by bench/smart_routing.py
    --train from the development set; committed)."""
    return json.loads(RULES_MODEL_FILE.read_text())


def learned_missing(until: str | None = None) -> str | None:
    """Why the learned classifier cannot run here (its optional extra), or None; ``until``:
    what to do meanwhile, if not "use the rules classifier"."""
    from . import smart_learned

    return smart_learned.missing(until or smart_learned.USE_RULES)


def classifier_error(name: object) -> str | None:
    if not isinstance(name, str):
        # a list or a mapping was "unknown classifier \"['rules']\"" (its Python repr)
        return (
            f"smart.classifier must be the name of a classifier ({', '.join(CLASSIFIERS)}), "
            f"not {describe(name)}."
        )
    if name not in CLASSIFIERS:
        return (
            f"smart.classifier: unknown classifier {name[:40]!r}; use one of "
            f"{', '.join(CLASSIFIERS)}."
        )
    if name == "learned":
        missing = learned_missing()
        return missing and f"smart.classifier: {missing}"
    return None


def quantiles(classifier: str) -> list[float]:
    """Scores at 0 %, 1 %, ... 100 % of the development set, for the aggressiveness slider."""
    if classifier == "learned":
        from . import smart_learned

        return json.loads(smart_learned.HEAD_FILE.read_text())["quantiles"]
    return rules_model()["quantiles"]


def thresholds_for(aggressiveness: float, n_tiers: int, classifier: str = "rules") -> tuple:
    """The thresholds a slider position gives: at aggressiveness a, a share 0.1 + 0.8 a of
    prompts like the development set's go below the top tier (0: 10 %, 0.5: 50 %, 1: 90 %),
    split evenly between the lower tiers. Read from the classifier's score quantiles, so
    the same position means the same share whichever classifier scores."""
    if n_tiers < 2:
        return ()
    below_top = 0.1 + 0.8 * aggressiveness
    q = _table(classifier)  # read once a process (aggressiveness_for calls this 30 times)
    out = []
    for i in range(1, n_tiers):
        share = below_top * i / (n_tiers - 1)
        pos = share * (len(q) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(q) - 1)
        value = q[lo] + (q[hi] - q[lo]) * (pos - lo)
        out.append(round(min(max(value, 1e-6), 1.0), 6))
    for i in range(1, len(out)):  # strictly ascending even where the quantiles are flat
        if out[i] <= out[i - 1]:
            out[i] = round(out[i - 1] + 1e-6, 6)
    return tuple(out)


def aggressiveness_for(thresholds, classifier: str = "rules") -> float:
    """The slider position whose top threshold is ``thresholds[-1]`` (thresholds set by
    hand, or by a re-calibration): the smallest position reaching it, 1.0 past the slider's
    end. The dashboard shows explicit thresholds' slider there."""
    top, n_tiers = thresholds[-1], len(thresholds) + 1
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if thresholds_for(mid, n_tiers, classifier)[-1] < top:
            lo = mid
        else:
            hi = mid
    return hi


# ------------------------------------------------------------------------------ checking a spec
def number_as_sent(value: int | float) -> str:
    """A number out of range as its message quotes it: as sent (repr, the shortest form that
    reads back the same: {:g} said 1.0000001 was "1"), an integer of many digits by its
    first 20 and its length. The smart settings' checks and /v1/feedback's score."""
    shown = repr(value)
    if len(shown) > 40:
        shown = f"{shown[:20]}… ({len(shown.lstrip('-'))} digits)"
    return shown


def _number(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        sent = "" if value != value else f", not {describe(value)}"
        hint = " (a number, unquoted)" if isinstance(value, str) else ""
        raise ValueError(f"smart.{name} must be a number from {low:g} to {high:g}{hint}{sent}.")
    if not low <= value <= high:
        # 1e400 in JSON is read as infinity: "not inf" read as a typo of the program's
        too_large = isinstance(value, float) and math.isinf(value)
        shown = "a number too large to carry" if too_large else number_as_sent(value)
        # 50 for a share of 0.5: the dashboard's slider and the A/B box take percents
        percent = (
            f" ({value / 100:g} for {number_as_sent(value)} %)"
            if name in ("aggressiveness", "ab.share") and 1 < value <= 100 and value == int(value)
            else ""
        )
        raise ValueError(f"smart.{name} must be from {low:g} to {high:g}, not {shown}{percent}.")
    return float(value)


def _mapping_or_none(value, serving: bool):
    """A setting that is a mapping: {} for None; on a save, anything else as it is (for the
    caller's type check); served, any empty value as {} (as it was stored before the check)."""
    if value is None or (serving and not value):
        return {}
    return value


# ------------------------------------------------------------------ each classifier's cut
# The policy's thresholds are on its own classifier's scale (the slider read them from its
# score quantiles; thresholds by hand or by a re-calibration were fitted to its scores). An
# A/B arm of the other classifier (or rules standing in for learned where the extra is
# missing) cuts its own scores where the same shares of the development set's prompts fall:
# learned scores cut at the rules classifier's thresholds sent another share of prompts up.


@cache
def _table(classifier: str) -> tuple:
    """A classifier's score quantiles (0 %, 1 %, ... 100 % of the development set)."""
    return tuple(quantiles(classifier))


def _position(q: tuple, t: float) -> float:
    """Where score ``t`` lies in the quantile table ``q``, in table steps (0..len(q) - 1;
    the middle of a run of equal quantiles); below the first and past the last quantile,
    the fraction of the way to 0 or to 1 beyond it (negative, or past the end)."""
    last = len(q) - 1
    if t < q[0]:
        return -(q[0] - t) / q[0] if q[0] > 0 else 0.0
    if t > q[last]:
        return last + ((t - q[last]) / (1 - q[last]) if q[last] < 1 else 0.0)
    lo, hi = bisect_left(q, t), bisect_right(q, t)
    if lo < hi:  # t is a quantile (or a run of equal ones)
        return (lo + hi - 1) / 2
    return lo - 1 + (t - q[lo - 1]) / (q[lo] - q[lo - 1])


def _at(q: tuple, pos: float) -> float:
    """The score at ``pos`` (table steps, as _position gives) in the quantile table ``q``:
    linear between quantiles (as core.smart.thresholds_for reads them), and from 0 to the
    first and from the last to 1 outside them."""
    last = len(q) - 1
    if pos < 0:
        return q[0] * (1 + pos)
    if pos > last:
        return q[last] + (1 - q[last]) * (pos - last)
    lo = math.floor(pos)
    hi = min(lo + 1, last)
    return q[lo] + (q[hi] - q[lo]) * (pos - lo)


def on_scale(thresholds: tuple, source: str, target: str) -> tuple:
    """Thresholds on ``source``'s score scale moved to ``target``'s by share: each to the
    score at the same position of ``target``'s quantiles (a threshold that keeps 62.5 % of
    the development set's prompts below it under ``source`` keeps 62.5 % under ``target``
    too); ascending, each in (0, 1], to 6 decimals as the slider's."""
    if source == target:
        return tuple(thresholds)
    src, dst = _table(source), _table(target)
    out = [round(min(max(_at(dst, _position(src, t)), 1e-6), 1.0), 6) for t in thresholds]
    for i in range(1, len(out)):  # strictly ascending, as the policy's own
        if out[i] <= out[i - 1]:
            out[i] = round(out[i - 1] + 1e-6, 6)
    return tuple(out)


def arm_thresholds(policy: SmartPolicy) -> dict:
    """The thresholds each classifier that may score the policy's requests cuts its scores
    at (classifier -> thresholds): the policy's own for its classifier; for the other (its
    A/B arm, or rules standing in for learned), the slider's position read from that
    classifier's quantiles, or thresholds set by hand moved to its scale by share
    (on_scale). Worked out once, when the SmartPolicy is made (its ``arm_thresholds``), not
    per request."""
    out = {policy.classifier: tuple(policy.thresholds)}
    n = len(policy.tiers)
    arms = {policy.classifier, policy.ab_arm if policy.ab_share else ""}
    others = {a for a in CLASSIFIERS if a in arms or (a == "rules" and "learned" in arms)}
    for other in sorted(others - {policy.classifier}):
        try:
            if policy.aggressiveness is not None:
                out[other] = thresholds_for(policy.aggressiveness, n, other)
            else:
                out[other] = on_scale(policy.thresholds, policy.classifier, other)
        except (OSError, ValueError, KeyError):  # a classifier's table missing here
            log.exception("no score quantiles for %s; its arm uses %s's", other, policy.classifier)
            out[other] = tuple(policy.thresholds)
    return out


def uses_learned(spec) -> bool:
    """Whether smart settings use the learned classifier, as the classifier or the A/B arm."""
    if not isinstance(spec, dict):
        return False
    ab = spec.get("ab")
    return spec.get("classifier") == "learned" or (
        isinstance(ab, dict) and ab.get("classifier") == "learned"
    )


def without_learned(spec):
    """Settings saved with the learned classifier as an org whose tier no longer includes it
    is served them (orgs.TierLimit.learned_routing; the control plane publishes this): scored
    by rules (thresholds from the slider are read on the rules scale), and without an A/B
    test whose arm is learned or would now be the classifier itself; the rest (thresholds
    set by hand, keywords, within, an A/B test of the strong arm) as saved."""
    if not uses_learned(spec):
        return spec
    out = dict(spec)
    if out.get("classifier") == "learned":
        out["classifier"] = "rules"
    ab = out.get("ab")
    if isinstance(ab, dict) and ab.get("classifier") in ("learned", out.get("classifier", "rules")):
        del out["ab"]
    return out


def ab_completed(spec):
    """Settings saved before an A/B test needed both its keys (2026-12-03), made whole as
    they were served: ``{"classifier": X}`` alone (no share: no A/B traffic) gets share 0,
    ``{"share": 0}`` alone is removed. None when there is nothing to change. For the data
    migrations that fix such rows (gateway 0014, governance 0008)."""
    ab = spec.get("ab") if isinstance(spec, dict) else None
    if not isinstance(ab, dict) or len(ab) != 1:
        return None
    out = dict(spec)
    if "classifier" in ab:
        out["ab"] = {"share": 0, "classifier": ab["classifier"]}
    elif "share" in ab and not ab["share"]:
        del out["ab"]
    else:
        return None
    return out


def ab_complete_rows(model) -> None:
    """Store ab_completed's settings in every row of ``model`` (a migration's historical
    model with a ``smart`` JSON field) that needs them."""
    for row in model.objects.exclude(smart={}).only("id", "smart").iterator():
        fixed = ab_completed(row.smart)
        if fixed is not None:
            model.objects.filter(pk=row.pk).update(smart=fixed)


# Words as the rules classifier reads them (gateway.dataplane.smart, prompts and keywords
# alike): ASCII letters lower-cased, digits and other scripts' bytes kept, every other ASCII
# character (punctuation) a space.
WORD_BYTES = bytes(
    (b + 32 if 65 <= b <= 90 else b if (97 <= b <= 122 or 48 <= b <= 57 or b >= 128) else 32)
    for b in range(256)
)
# Multi-word keywords (phrases) a list may hold: each is a scan of the prompt's text (about
# 25 us for 16,000 characters); single words are a lookup each. 200 phrases a list cost 16 ms
# a request on a long prompt, 20 cost 4 ms.
MAX_PHRASES = 20


def keyword_key(word: str) -> bytes:
    """A keyword as it is looked for: its words, as WORD_BYTES reads them, one space apart
    (empty when it holds no letter or digit: it can never match)."""
    return b" ".join(word.encode("utf-8", "replace").translate(WORD_BYTES).split())


def keyword_matched(word: str) -> str:
    """A keyword as the rules classifier matches it: trimmed, lower-cased in ASCII letters
    only, as the prompt is (gateway.dataplane.smart): str.lower() also lowered "É", which a
    prompt writing "É" then never matched."""
    return word.strip().translate(_ASCII_LOWER)


def _punctuation_alone(word: str) -> bool:
    """Whether a keyword holds nothing but punctuation and spaces (``++``, ``...``, ``—``,
    ``¿``): ASCII punctuation is read as a space, so such a keyword never matches, and other
    punctuation ("—" is part of a word as typed) only where it stands alone. Symbols
    (``£``, ``∑``, ``🔥``) and marks are kept: they match as written."""
    return not keyword_key(word) or all(
        unicodedata.category(c)[0] in "PZ" or c.isspace() for c in word
    )


def saved_keywords(spec) -> frozenset:
    """Every keyword a stored spec holds, as (category, keyword): what a save may keep
    unchecked in that category (and only there: a phrase kept past MAX_PHRASES in one list
    is a new phrase in another)."""
    keywords = (spec or {}).get("keywords") if isinstance(spec, dict) else None
    if not isinstance(keywords, dict):
        return frozenset()
    return frozenset(
        (category, w)
        for category, words in keywords.items()
        if isinstance(words, list)
        for w in words
        if isinstance(w, str)
    )


def resolve(
    spec,
    tiers,
    *,
    strategies_known=None,
    serving=False,
    kept_keywords=frozenset(),
    learned_kept=False,
) -> SmartPolicy:
    """The SmartPolicy of a spec (the JSON a policy stores) over ``tiers``; ValueError with
    a message for the user when something is wrong. ``strategies_known``: the names
    ``within`` may take (core.strategies passes its registry). ``serving``: for the data
    plane, a policy saved with the learned classifier is kept whole where its extra is not
    installed (since): the data plane scores it with rules (gateway.dataplane.smart.arm).
    ``learned_kept``: a save that leaves learned settings as they were saved (the policy
    disabled, its models changed) is not refused where the extra is missing: it changes
    nothing the extra is needed for.
    ``kept_keywords``: (category, keyword) already saved (saved_keywords), which a save keeps
    in that category without the checks added since (``manage.py check_names`` lists those
    with hidden characters)."""
    spec = {} if spec is None else spec
    if not isinstance(spec, dict):
        raise ValueError("smart must be a mapping (classifier, aggressiveness, thresholds, ...).")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(
            f"Unknown smart setting(s): {', '.join(map(str, unknown))[:200]}; "
            f"use {', '.join(SPEC_KEYS)}."
        )
    tiers = tuple(tiers)
    if len(tiers) > MAX_TIERS:
        raise ValueError(f"Smart routing takes at most {MAX_TIERS} tiers, not {len(tiers)}.")
    if not all(isinstance(t, str) and 0 < len(t) <= MAX_TIER_NAME for t in tiers):
        raise ValueError(
            f"Each tier is a model name of at most {MAX_TIER_NAME} characters "
            "(a deployment's public name)."
        )
    if len(tiers) < 2:
        raise ValueError(
            "Smart routing needs at least two tiers (models, cheapest first): "
            "prompts scored easy go to the first, hard ones to the last."
        )
    if len(set(tiers)) != len(tiers):
        raise ValueError("Each tier must be a different model.")
    classifier = spec.get("classifier", "rules")
    problem = classifier_error(classifier)
    if problem and not ((serving or learned_kept) and classifier == "learned"):
        raise ValueError(problem)
    aggressiveness = None
    if (
        not serving
        and spec.get("thresholds") is not None
        and spec.get("aggressiveness") is not None
    ):
        raise ValueError(
            "Set smart.aggressiveness or smart.thresholds, not both: thresholds by hand "
            "replace the slider (leave out the one you do not mean)."
        )
    if spec.get("thresholds") is not None:
        raw = spec["thresholds"]
        if not isinstance(raw, list) or len(raw) != len(tiers) - 1:
            n = len(tiers) - 1
            sent = f"it has {len(raw)}" if isinstance(raw, list) else f"it is {describe(raw)}"
            raise ValueError(
                f"smart.thresholds must be a list of {n} score{'s' if n != 1 else ''} (one "
                f"fewer than the {len(tiers)} tiers), ascending, each between 0 and 1; "
                f"{sent}."
            )
        thresholds = tuple(_number(t, "thresholds", 0.0, 1.0) for t in raw)
        if any(b <= a for a, b in zip(thresholds, thresholds[1:], strict=False)):
            raise ValueError("smart.thresholds must be strictly ascending.")
    else:
        aggressiveness = _number(
            spec.get("aggressiveness", DEFAULT_AGGRESSIVENESS), "aggressiveness", 0.0, 1.0
        )
        thresholds = thresholds_for(aggressiveness, len(tiers), classifier)
    # (None or absent: none. 0, "", false or [] are not a mapping: refused on a save, where
    # `or {}` let them be stored; a policy saved so before is served as having none.)
    ab = _mapping_or_none(spec.get("ab"), serving)
    if not isinstance(ab, dict):
        raise ValueError('smart.ab must be a mapping like {"share": 0.2, "classifier": "strong"}.')
    if set(ab) - {"share", "classifier"}:
        unknown = sorted(map(str, set(ab) - {"share", "classifier"}))[0]
        raise ValueError(
            f"smart.ab has an unknown setting {unknown[:40]!r}: an A/B test is its share and "
            "its classifier."
        )
    if not serving and len(ab) == 1:
        # What a partial update leaves when it removes one of the two (a PATCH of
        # {"ab": {"share": null}}): an A/B test is its share and its arm together.
        (have,) = ab
        missing = "classifier" if have == "share" else "share"
        raise ValueError(
            f"smart.ab needs both share and classifier; it has only {have} (set "
            f"ab.{missing} too, or set ab to null to remove the A/B test)."
        )
    ab_share = _number(ab.get("share", 0.0), "ab.share", 0.0, 1.0)
    ab_arm = ab.get("classifier", "") if ab_share else ""
    # Checked at a share of 0 too: saved, it is what a share raised later would route by
    # (and PostgreSQL's jsonb cannot hold a NUL: saving one was a 500). A policy saved
    # before this check is served as it is (serving).
    if ab_share or ("classifier" in ab and not serving):
        if ab.get("classifier", "") not in AB_ARMS:
            raise ValueError(
                f"smart.ab.classifier must be one of {', '.join(AB_ARMS)} (strong: straight "
                "to the top tier)."
            )
        if ab_share and ab_arm == classifier:
            raise ValueError("smart.ab.classifier must differ from smart.classifier.")
        if (
            ab.get("classifier") == "learned"
            and learned_missing()
            and not (serving or learned_kept)
        ):
            arm_missing = learned_missing(
                "Until then, use another A/B arm (rules or strong), or none."
            )
            raise ValueError(f"smart.ab.classifier: {arm_missing}")
    keywords = _mapping_or_none(spec.get("keywords"), serving)
    if not isinstance(keywords, dict):
        raise ValueError("smart.keywords must map a category to a list of words.")
    checked = {}
    for category, words in keywords.items():
        if category not in KEYWORD_CATEGORIES:
            raise ValueError(
                f"smart.keywords: unknown keyword category {str(category)[:40]!r}; use "
                f"{', '.join(KEYWORD_CATEGORIES)}."
            )
        if (
            not isinstance(words, list)
            or len(words) > MAX_KEYWORDS
            or not all(isinstance(w, str) and 0 < len(w.strip()) <= 60 for w in words)
        ):
            raise ValueError(
                f"smart.keywords.{category} must be a list of at most {MAX_KEYWORDS} "
                "non-empty words or phrases (60 characters each)."
            )
        if not serving and any("\x00" in w for w in words):
            # PostgreSQL's jsonb cannot hold one: saving it was a 500 at the write
            raise ValueError(f"smart.keywords.{category}: a keyword may not hold a NUL character.")
        if not serving:
            # Visible text, as names are (core.text): a bidi override or a zero-width space
            # makes a keyword read as another in the settings, the audit log and the CLI.
            # (core.names_rule: the agent's data plane reads this module without Django.)
            from core.names_rule import codepoint, first_refused, shown

            for word in words:
                kept = (category, word) in kept_keywords
                at = None if kept else first_refused(word.strip())
                if at is not None:
                    char = word.strip()[at]
                    raise ValueError(
                        f"smart.keywords.{category}: the keyword {shown(word, 60)} contains "
                        f"{codepoint(char)}: keywords are visible text (no control, "
                        "invisible or text-direction characters)."
                    )
        if not serving:
            new = [w for w in words if (category, w) not in kept_keywords]
            blank = next((w for w in new if _punctuation_alone(w)), None)
            if blank is not None:
                raise ValueError(
                    f"smart.keywords.{category}: the keyword {blank.strip()[:60]!r} is "
                    "punctuation alone: ASCII punctuation is read as a space, in prompts and "
                    "keywords alike, so it would never match, and other punctuation only "
                    "where it stands apart from every word."
                )
            phrases = {keyword_key(w) for w in words if b" " in keyword_key(w)}
            if len(phrases) > MAX_PHRASES and any(b" " in keyword_key(w) for w in new):
                raise ValueError(
                    f"smart.keywords.{category} holds {len(phrases)} phrases of several words; "
                    f"at most {MAX_PHRASES} (each is a scan of the prompt; single words are "
                    "not limited but by the list's size)."
                )
        checked[category] = tuple(dict.fromkeys(keyword_matched(w) for w in words))
    within = spec.get("within", "failover")
    if strategies_known is not None and (
        not isinstance(within, str) or within not in strategies_known or within == "smart"
    ):
        raise ValueError(
            f"smart.within (how one tier's deployments are ordered) must be one of "
            f"{', '.join(s for s in strategies_known if s != 'smart')}."
        )
    return SmartPolicy(
        tiers=tiers,
        thresholds=thresholds,
        classifier=classifier,
        aggressiveness=aggressiveness,
        ab_share=ab_share,
        ab_arm=ab_arm,
        keywords=checked,
        within=within,
    )
