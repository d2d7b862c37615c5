"""Re-calibrating a smart policy's top threshold from the org's own feedback.

Uses only what every smart-routed usage row already holds (its score, tier, classifier and
the app's feedback score): no prompt text, no embedding, no features are stored for it.
"""

import math

from django.core.exceptions import ValidationError
from django.db.models import Avg, F
from django.template.defaultfilters import pluralize

from core import smart
from governance import services as governance_services
from governance.models import RoutingPolicy

from .models import UsageRecord

MIN_RATED = 30  # rated requests below the top tier needed before anything moves
QUALITY = 0.95  # the lower tiers must keep this share of the top tier's average feedback
STEP = 0.1  # how far one re-calibration raises aggressiveness when quality allows


ORG_DEFAULT = ""  # the name that means the org's default smart routing (bn- keys, "auto")


def _just_above(score: float, following: float | None) -> float:
    """A threshold that keeps ``score`` below it (a score goes below a threshold it is
    under) and ``following``, the next score seen, above it: the next step of 0.000001
    (thresholds are saved to 6 decimals), or halfway where the two are closer; at most 1."""
    step = math.floor(score * 1_000_000 + 1) / 1_000_000
    if following is not None and step > following:
        step = (score + following) / 2
    return min(step, 1.0)


def smart_recalibrate(*, actor, org, name: str, min_rated: int = MIN_RATED) -> dict:
    """Move the top threshold of smart policy ``name`` (ORG_DEFAULT: the org's default
    smart routing): down to the highest score at which the requests routed below the top
    tier still kept QUALITY x the top tier's average feedback (1.0 when the top tier has
    none), or up a step when they all did. Saved through routing_policy_save (or the
    gateway settings, audited, published like any change); what moved is returned. Refused
    (ValidationError) with too little feedback to say anything."""
    from gateway import services as gateway_services
    from gateway.models import GatewayConfig

    if min_rated < 1:  # with no rated request there is no score to move the threshold to
        raise ValidationError("The minimum of rated requests must be at least 1.")
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
        current = smart.resolve(saved, tiers)
    except ValueError as exc:  # saved where the learned classifier's extra was installed
        raise ValidationError(f"{label}: {exc}") from exc
    rated = UsageRecord.objects.for_org(org).filter(
        routing_policy=name,
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
    below = sorted(
        rated.filter(
            route_classifier=current.classifier,
            route_score__isnull=False,
            route_tier__in=current.tiers[:-1],
        ).values_list("route_score", "feedback_score")
    )
    if len(below) < min_rated:
        raise ValidationError(
            f"Only {len(below)} rated request{pluralize(len(below))} below the top tier of "
            f"{label}; re-calibrating needs {min_rated}. Send feedback with POST /v1/feedback."
        )
    old = current.thresholds[-1]
    # Requests of one score are routed together (the rules classifier gives every greeting
    # the same score), so they are judged together: the cut is the highest score whose
    # requests, with every one scored lower, still held the target, and it falls just above
    # that score (a score below a threshold goes below it), under the next one.
    groups: dict[float, list] = {}
    for score, feedback in below:
        groups.setdefault(score, []).append(feedback)
    scores = sorted(groups)
    total, count, kept = 0.0, 0, None
    for i, score in enumerate(scores):
        total += sum(groups[score])
        count += len(groups[score])
        if total / count < target:
            break
        kept = i
    if kept == len(scores) - 1:  # all held: be a step more aggressive
        a = current.aggressiveness
        if a is None:  # explicit thresholds (an earlier re-calibration's): where they sit
            a = smart.aggressiveness_for(current.thresholds, current.classifier)
        raised = smart.thresholds_for(min(a + STEP, 1.0), len(tiers), current.classifier)[-1]
        new = max(old, raised, _just_above(scores[-1], None))
    else:
        # Even the easiest prompts fell short (kept is None): only they stay below.
        i = kept or 0
        new = _just_above(scores[i], scores[i + 1] if i + 1 < len(scores) else None)
    thresholds = list(current.thresholds[:-1]) + [new]
    for i in range(len(thresholds) - 2, -1, -1):  # keep them ascending
        thresholds[i] = min(thresholds[i], round(thresholds[i + 1] - 1e-6, 6))
    spec = {k: v for k, v in saved.items() if k != "aggressiveness"}
    spec["thresholds"] = [max(t, 1e-6) for t in thresholds]
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
    return {"policy": label, "rated": len(below), "old": old, "new": spec["thresholds"][-1]}


def recalibration_summary(moved: dict) -> str:
    """What a re-calibration moved, in words (the command's output, the Usage page's
    message): "saver: top threshold 0.5000 -> 0.3100 from 1 rated request"."""
    n = moved["rated"]
    return (
        f"{moved['policy']}: top threshold {moved['old']:.4f} -> {moved['new']:.4f} "
        f"from {n} rated request{pluralize(n)}"
    )
