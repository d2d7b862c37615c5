"""Re-calibrating a smart policy's top threshold from the org's own feedback.

Uses only what every smart-routed usage row already holds (its score, tier, classifier and
the app's feedback score): no prompt text, no embedding, no features are stored for it.
"""

from django.core.exceptions import ValidationError
from django.db.models import Avg

from core import smart
from governance import services as governance_services
from governance.models import RoutingPolicy

from .models import UsageRecord

MIN_RATED = 30  # rated requests below the top tier needed before anything moves
QUALITY = 0.95  # the lower tiers must keep this share of the top tier's average feedback
STEP = 0.1  # how far one re-calibration raises aggressiveness when quality allows


def smart_recalibrate(*, actor, org, name: str, min_rated: int = MIN_RATED) -> dict:
    """Move the top threshold of smart policy ``name``: down to the highest score at which
    the requests routed below the top tier still kept QUALITY x the top tier's average
    feedback (1.0 when the top tier has none), or up a step when they all did. Saved
    through routing_policy_save (audited, published like any change); what moved is
    returned. Refused (ValidationError) with too little feedback to say anything."""
    policy = RoutingPolicy.objects.for_org(org).filter(name=name, strategy="smart").first()
    if policy is None:
        raise ValidationError(f"No smart routing policy named {name[:63]!r} in this organization.")
    tiers = policy.model_names
    current = smart.resolve(policy.smart, tiers)
    rated = UsageRecord.objects.for_org(org).filter(
        routing_policy=policy.name,
        route_classifier=current.classifier,
        feedback_score__isnull=False,
        route_score__isnull=False,
    )
    top = rated.filter(route_tier=current.top).aggregate(a=Avg("feedback_score"))["a"]
    target = QUALITY * (top if top is not None else 1.0)
    below = sorted(
        rated.exclude(route_tier=current.top).values_list("route_score", "feedback_score")
    )
    if len(below) < min_rated:
        raise ValidationError(
            f"Only {len(below)} rated requests below the top tier of {policy.name}; "
            f"re-calibrating needs {min_rated}. Send feedback with POST /v1/feedback."
        )
    old = current.thresholds[-1]
    # The highest cut where every prefix-average up to it holds the target.
    total, new = 0.0, None
    for i, (score, feedback) in enumerate(below, start=1):
        total += feedback
        if total / i < target:
            break
        new = score
    if new is not None and new >= below[-1][0]:  # all held: be a step more aggressive
        a = (current.aggressiveness if current.aggressiveness is not None else 0.5) + STEP
        raised = smart.thresholds_for(min(a, 1.0), len(tiers), current.classifier)[-1]
        new = max(old, raised)
    elif new is None:
        new = below[0][0]  # even the easiest prompts fell short: only they stay below
    thresholds = list(current.thresholds[:-1]) + [round(new, 6)]
    for i in range(len(thresholds) - 2, -1, -1):  # keep them ascending
        thresholds[i] = min(thresholds[i], round(thresholds[i + 1] - 1e-6, 6))
    spec = {k: v for k, v in (policy.smart or {}).items() if k != "aggressiveness"}
    spec["thresholds"] = [max(t, 1e-6) for t in thresholds]
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
    return {"policy": policy.name, "rated": len(below), "old": old, "new": spec["thresholds"][-1]}
