"""Re-calibrating a smart policy's top threshold from the org's own feedback.

Uses only what every smart-routed usage row already holds (its score, tier, classifier and
the app's feedback score): no prompt text, no embedding, no features are stored for it.
"""

import math
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db.models import Avg, F
from django.template.defaultfilters import pluralize

from core import smart
from governance import services as governance_services
from governance.models import RoutingPolicy
from orgs.models import tier_includes_learned

from .models import UsageRecord, of_policy

MIN_RATED = 30  # rated requests below the top tier needed before anything moves
QUALITY = 0.95  # the lower tiers must keep this share of the top tier's average feedback
STEP = 0.1  # how far one re-calibration raises aggressiveness when quality allows


ORG_DEFAULT = ""  # the name that means the org's default smart routing (bn- keys, "auto")
# What the analytics (by_policy, the Usage page's Policy filter) call it, taken here too: no
# policy is named so (a policy's name is a slug).
ORG_DEFAULT_SHOWN = "(org default)"


def _just_above(score: float, following: float | None) -> float:
    """A threshold that keeps ``score`` below it (a score goes below a threshold it is
    under) and ``following``, the next score seen, above it: the next step of 0.000001
    (a round number), or halfway where the two are closer; at most 1. Saved as computed."""
    step = math.floor(score * 1_000_000 + 1) / 1_000_000
    if step <= score:  # score * 1e6 rounded just under a whole number (0.1251, 0.524287)
        step = round(score + 0.000001, 6)
    if following is not None and step > following:
        step = (score + following) / 2
    if step <= score:  # two adjacent floats: none lies between
        step = math.nextafter(score, math.inf)
    return min(step, 1.0)


CHUNK = 2000  # rated rows read at a time: a re-calibration's memory does not grow with them


def _score_groups(below):
    """(score, the sum of its ratings, their number) of rated rows, in score order, read a
    chunk of rows at a time. Each score's ratings are summed in ascending order, as the
    sorted list of every row was summed before (the same floats, the same cut)."""
    rows = below.order_by("route_score", "feedback_score").values_list(
        "route_score", "feedback_score"
    )
    score, total, count = None, 0, 0
    for s, feedback in rows.iterator(chunk_size=CHUNK):
        if count and s != score:
            yield score, total, count
            total, count = 0, 0
        score = s
        total += feedback
        count += 1
    if count:
        yield score, total, count


def _cut(below, target: float) -> tuple[float | None, float]:
    """(the new top threshold, or None when the requests of every score together held
    ``target``; the highest score that held). Requests of one score are routed together (the rules
    classifier gives every greeting the same score), so they are judged together: the cut
    is the highest score whose requests, with every one scored lower, still held the
    target (however many lower scores fell short on the way: a bad rating on the easiest
    prompt does not stop the count there), and it falls just above that score (a score
    below a threshold goes below it), under the next one. Even the easiest score falling
    short with everything above it, only it stays below."""
    total, count = 0.0, 0
    kept = after = None  # the highest score that held, and the score after it
    first = second = None
    last_held = False
    for score, summed, n in _score_groups(below):
        if first is None:
            first = score
        elif second is None:
            second = score
        if last_held:
            after = score
        total += summed
        count += n
        last_held = total / count >= target
        if last_held:
            kept, after = score, None
    if last_held:  # every rated request below the top tier, together, held it
        return None, kept
    if kept is None:
        return _just_above(first, second), kept
    return _just_above(kept, after), kept


def _ascending_below(lower: list, top: float) -> list:
    """The thresholds ``lower`` and then ``top``, strictly ascending, as computed (not
    rounded): a lower one that is not under the one above it is moved under it, the lower
    ones spread evenly between 0 and ``top``. (They were set to the next one less 0.000001,
    rounded to 6 places and at least 0.000001: with a top below 0.000002 two of them came
    out equal, and the save was refused as not ascending.)"""
    out = [*lower, top]
    for i in range(len(out) - 2, -1, -1):
        if not out[i] < out[i + 1]:
            out[i] = top * (i + 1) / len(out)
    return out


def smart_recalibrate(*, actor, org, name: str, min_rated: int = MIN_RATED) -> dict:
    """Move the top threshold of smart policy ``name`` (ORG_DEFAULT or ORG_DEFAULT_SHOWN,
    "(org default)": the org's default smart routing): down to the highest score at which the requests routed below the top
    tier still kept QUALITY x the top tier's average feedback (1.0 when the top tier has
    none), or up a step when they all did. Saved through routing_policy_save (or the
    gateway settings, audited, published like any change); what moved is returned. Refused
    (ValidationError) with too little feedback to say anything."""
    from gateway import services as gateway_services
    from gateway.models import GatewayConfig

    if min_rated < 1:  # with no rated request there is no score to move the threshold to
        raise ValidationError("The minimum of rated requests must be at least 1.")
    if name.strip() == ORG_DEFAULT_SHOWN:
        name = ORG_DEFAULT
    if name == ORG_DEFAULT:
        config = GatewayConfig.objects.filter(org=org).first()
        if config is None or not config.smart_tiers:
            raise ValidationError(
                "This organization has no default smart routing (set its smart tiers in the "
                "gateway settings), and no policy was named."
            )
        label, tiers, saved = "the org default", list(config.smart_tiers), config.smart or {}
    else:
        policy = RoutingPolicy.objects.for_org(org).filter(name=name, strategy="smart").first()
        if policy is None:
            raise ValidationError(
                f"No smart routing policy named {name[:63]!r} in this organization."
            )
        label, tiers, saved = policy.name, policy.model_names, policy.smart or {}
    try:
        # keywords saved before a rule are kept, as a save keeps them
        current = smart.resolve(saved, tiers, kept_keywords=smart.saved_keywords(saved))
    except ValueError as exc:  # saved where the learned classifier's extra was installed
        raise ValidationError(f"{label}: {exc}") from exc
    if smart.uses_learned(saved) and not tier_includes_learned(org.tier):
        # Served with rules since a downgrade: its ratings are of rules scores, and a save
        # of the learned settings would be refused. Said, not "send feedback" (there is).
        if current.classifier == "learned":
            what, fix = "the learned classifier and served with rules", "Switch it to rules"
        else:
            what, fix = "an A/B arm of the learned classifier, not served", "Remove its A/B test"
        raise ValidationError(
            f"{label} is saved with {what}: {governance_services.learned_refusal(org)} "
            f"{fix} to re-calibrate it from its feedback."
        )
    rated = of_policy(UsageRecord.objects.for_org(org), name).filter(
        feedback_score__isnull=False,
        # answered by the tier its score chose: after a failover up (or to a fallback
        # model) the rating is another model's
        model_used=F("route_tier"),
    )
    # The top tier's quality: every arm's answers from it, the A/B strong arm's (scored
    # nothing) included, as the Usage page's quality by tier shows it.
    top = rated.filter(route_tier=current.top).aggregate(a=Avg("feedback_score"))["a"]
    target = QUALITY * (top if top is not None else 1.0)
    # Below it: the scores of this classifier (another arm's are on another scale), on the
    # policy's current tiers (a tier it no longer has rated another model).
    below = rated.filter(
        route_classifier=current.classifier,
        route_score__isnull=False,
        route_tier__in=current.tiers[:-1],
    )
    n_below = below.count()
    if n_below < min_rated:
        raise ValidationError(
            f"Only {n_below} rated request{pluralize(n_below)} below the top tier of "
            f"{label}; re-calibrating needs {min_rated}. Send feedback with POST /v1/feedback."
        )
    old = current.thresholds[-1]
    new, highest = _cut(below, target)
    if new is None:  # all held, up to the highest rated score: a step past it
        # From the ratings, not from where the thresholds sit: a step from there each time
        # moved the threshold up again on every press with no new feedback (0.14, 0.15,
        # 0.17, 0.20, 0.24), past requests no rating said the cheaper tier could serve.
        held = [*current.thresholds[:-1], _just_above(highest, None)]
        a = smart.aggressiveness_for(held, current.classifier)
        raised = smart.thresholds_for(min(a + STEP, 1.0), len(tiers), current.classifier)[-1]
        new = max(old, raised, held[-1])
    thresholds = _ascending_below(list(current.thresholds[:-1]), new)
    moved = {
        "policy": label,
        "rated": n_below,
        "old": old,
        "new": new,
        "old_thresholds": list(current.thresholds),
        "new_thresholds": thresholds,
    }
    if thresholds == list(current.thresholds):
        return moved  # nothing moved (pressed again with no new feedback): no save, no audit
    spec = {k: v for k, v in saved.items() if k != "aggressiveness"}
    spec["thresholds"] = thresholds
    if name == ORG_DEFAULT:
        gateway_services.gateway_config_set(actor=actor, org=org, smart=spec)
    else:
        governance_services.routing_policy_save(
            actor=actor,
            org=org,
            name=policy.name,
            strategy="smart",
            models=tiers,
            weights=policy.weights,
            smart=spec,
            is_active=policy.is_active,
        )
    return moved


def recalibration_summary(moved: dict) -> str:
    """What a re-calibration moved, in words (the command's output, the Usage page's
    message): "saver: top threshold 0.5000 -> 0.3100 from 1 rated request"."""
    n = moved["rated"]
    before, after = moved.get("old_thresholds", []), moved.get("new_thresholds", [])
    if before == after:
        return (
            f"{moved['policy']}: thresholds unchanged (top {_shown(moved['old'])}) from {n} "
            f"rated request{pluralize(n)}"
        )
    said = (
        f"{moved['policy']}: top threshold {_shown(moved['old'])} -> {_shown(moved['new'])} "
        f"from {n} rated request{pluralize(n)}"
    )
    if before[:-1] != after[:-1]:  # lower thresholds moved under the new top: say so
        said += (
            f" (lower thresholds {', '.join(map(_shown, before[:-1]))} -> "
            f"{', '.join(map(_shown, after[:-1]))})"
        )
    return said


def _shown(threshold: float) -> str:
    """0.3100 to 4 places; a threshold below 0.0001 in full (0.00000015), never 0.0000."""
    if threshold == 0 or threshold >= 0.0001:
        return f"{threshold:.4f}"
    return format(Decimal(repr(float(threshold))), "f")
