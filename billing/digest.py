"""The weekly digest: an org's week in numbers, what changed, and where it could save."""

from datetime import datetime, timedelta

from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.db.models import Count, Q, Sum
from django.template.loader import render_to_string
from django.utils import timezone

from core import money
from core.text import one_line
from gateway.models import ApiKey, Deployment, GatewayConfig
from gateway.pricing import catalog_prices, price_per_token
from governance.models import Policy, RoutingPolicy
from orgs.models import Membership, Team

from .models import DigestSent
from .selectors import names_by_id, smart_savings
from .services import FEEDBACK
from .spend import TOTALS, grouped, rollup_marks

# The digest's requests are model calls: POST /v1/feedback calls are counted apart, as on
# the Usage page (billing.selectors).
DIGEST_TOTALS = {
    **TOTALS,
    "requests": (
        Sum("requests", filter=Q(feedback=False)),
        Count("id", filter=~Q(endpoint=FEEDBACK)),
        0,
    ),
}


def _grouped(org, start, end, fields, marks) -> list[dict]:
    """The digest's sums, read as spend is (billing.spend: rollups for whole hours and days,
    raw rows for the rest): never a scan of two weeks of raw rows."""
    totals = grouped(start, end, DIGEST_TOTALS, fields=fields, org_ids=[org.id], marks=marks)
    return [
        {"group": group, **dict(zip(DIGEST_TOTALS, sums, strict=True))}
        for group, sums in totals.items()
    ]


def _week(org, start, end, marks) -> dict:
    (week,) = _grouped(org, start, end, ("org_id",), marks) or [
        {n: z for n, (_, _, z) in DIGEST_TOTALS.items()}
    ]
    week.pop("group", None)
    return week


def _top(rows, name: str, labels: dict | None = None, n: int = 5) -> list[dict]:
    """The n costliest groups, each labelled under ``name`` (a model; a key's or team's name
    from ``labels`` by id, "" for none)."""
    top = sorted(rows, key=lambda r: (-r["cost"], str(r["group"][0])))[:n]
    for row in top:
        (value,) = row.pop("group")
        row[name] = value if labels is None else labels.get(value, "")
    return top


def _names(model, org, rows) -> dict:
    return names_by_id(model, org, {r["group"][0] for r in rows if r["group"][0] is not None})


def _change(now, before) -> str:
    """How much ``now`` moved from ``before``, a share as the dashboard writes one (core.money:
    +5.26%, -20%, under 0.01%)."""
    if not before:
        return "new this week" if now else "no change"
    if now == before:
        return "no change"
    pct = (float(now) - float(before)) * 100 / float(before)
    return f"{'+' if pct > 0 else '-'}{money.pct(abs(pct), nonzero=True)} week over week"


def smart_tiers(org) -> set[str]:
    """Every model that is a tier of the org's smart routing (its smart policies' and the
    org default's): the router already picks among them by each prompt's difficulty."""
    tiers = set(
        GatewayConfig.objects.filter(org=org).values_list("smart_tiers", flat=True).first() or []
    )
    for names in (
        RoutingPolicy.objects.for_org(org)
        .filter(strategy="smart")
        .values_list("model_names", flat=True)
    ):
        tiers.update(n for n in names or [] if isinstance(n, str))
    return tiers


def savings_suggestion(org, top_models) -> dict | None:
    """For the most expensive model the org calls by name, a cheaper model the org already
    may use. A tier of smart routing is not offered for it (the router sends it only the
    prompts it scored hard: the cheaper tiers already get the rest), nor is any model whose
    calls are smart-routed replaced behind the router's back; the message says the cheaper
    model may be a weaker one."""
    tiers = smart_tiers(org)
    # The costliest model called by name, and the tiers that cost more than it did.
    left_out = []
    for costly in top_models or []:
        if costly["model_used"] not in tiers:
            break
        left_out.append(costly["model_used"])
    else:
        return None
    if not costly["cost"]:
        return None
    policy = Policy.objects.filter(org=org).first()
    prices = {}
    deps = list(Deployment.objects.for_org(org).filter(is_active=True).select_related("provider"))
    catalog = catalog_prices(d.upstream_model for d in deps)
    for dep in deps:
        if policy and (
            policy.allowed_models
            and dep.model_name not in policy.allowed_models
            or dep.model_name in policy.denied_models
        ):
            continue
        inp, out = price_per_token(dep, catalog)
        if inp or out:
            prices[dep.model_name] = min(
                prices.get(dep.model_name, (inp, out)), (inp, out), key=sum
            )
    if costly["model_used"] not in prices:
        return None
    candidates = [
        (sum(p), m, p)
        for m, p in prices.items()
        if m != costly["model_used"] and sum(p) < sum(prices[costly["model_used"]])
    ]
    if not candidates:
        return None
    _total, model, (inp, out) = min(candidates)
    would_cost = (costly["input_tokens"] or 0) * inp + (costly["output_tokens"] or 0) * out
    return {
        "from": costly["model_used"],
        "to": model,
        "cost": float(costly["cost"]),
        "would_cost": would_cost,
        "saving": float(costly["cost"]) - would_cost,
        "tiers_left_out": left_out,
    }


def digest_context(org, now: datetime) -> dict:
    end = now.replace(hour=0, minute=0, second=0, microsecond=0)
    start, prev = end - timedelta(days=7), end - timedelta(days=14)
    marks = rollup_marks()  # read once for the five sums below
    week, last = _week(org, start, end, marks), _week(org, prev, start, marks)
    models = _grouped(org, start, end, (("model", "model_used"),), marks)
    keys = _grouped(org, start, end, ("key_id",), marks)
    teams = _grouped(org, start, end, ("team_id",), marks)
    top_models = _top(models, "model_used")
    return {
        "org": org,
        "start": start,
        "end": end,
        # The week counted is [start, end): its last day is the one before ``end``.
        "last_day": end - timedelta(days=1),
        "week": week,
        "last": last,
        "cost_change": _change(week["cost"], last["cost"]),
        "requests_change": _change(week["requests"], last["requests"]),
        "top_models": top_models,
        "top_keys": _top(keys, "key__name", _names(ApiKey, org, keys)),
        "top_teams": _top(teams, "team__name", _names(Team, org, teams)),
        "suggestion": savings_suggestion(org, top_models),
        "smart": _with_saved_text(smart_savings(org, start, end)),
    }


def _with_saved_text(smart: dict) -> dict:
    """The week's smart routing savings, each policy's line with its saving in words (the
    digest lists them when the org has more than one)."""
    for row in smart["by_policy"]:
        row["saved_text"] = money.saved_text(row)
    return smart


def weekly_digest_send(*, org, now: datetime, base_url: str) -> int:
    """Send the digest to every member who has not opted out; returns how many got it."""
    recipients = list(
        Membership.objects.for_org(org)
        .filter(user__weekly_digest=True, user__is_active=True)
        .values_list("user__email", flat=True)
    )
    context = digest_context(org, now)
    if not recipients or not context["week"]["requests"] and not context["last"]["requests"]:
        return 0
    context["base_url"] = base_url
    # Money as the Usage page shows it (core.money): a small org's week is cents, or less.
    cost = money.usd(context["week"]["cost"])
    subject = one_line(f"Bonito weekly digest for {org.name}: {cost}, {context['cost_change']}")
    message = EmailMultiAlternatives(
        subject=subject, body=render_to_string("emails/digest.txt", context), to=recipients
    )
    message.attach_alternative(render_to_string("emails/digest.html", context), "text/html")
    day = context["end"].date()  # the day it is sent (the week counted ends there)
    week = day - timedelta(days=day.weekday())
    if not _claim(org, week):  # sent already this week (a task run again), or being sent
        return 0
    try:
        message.send()
    except BaseException:
        # Not sent: released, so that the task's retry sends it.
        DigestSent.objects.filter(org=org, week=week, sent_at=None).delete()
        raise
    DigestSent.objects.filter(org=org, week=week).update(sent_at=timezone.now())
    return len(recipients)


# A claim older than this with no mail sent is a worker's that died while sending: taken
# over (a task is redelivered after the broker's visibility timeout, an hour by default).
CLAIM_TTL = timedelta(minutes=30)


def _claim(org, week) -> bool:
    """Whether this process is the one to send the org's digest of ``week``: the first to
    claim it, or the one that takes over a claim abandoned CLAIM_TTL ago. A digest that was
    sent, or is being sent by another worker, is not sent again (the Monday task run twice,
    a retried fan-out, a redelivered task)."""
    now = timezone.now()
    try:
        with transaction.atomic():
            DigestSent.objects.create(org=org, week=week, claimed_at=now)
        return True
    except IntegrityError:
        abandoned = DigestSent.objects.filter(
            org=org, week=week, sent_at=None, claimed_at__lt=now - CLAIM_TTL
        )
        return abandoned.update(claimed_at=now) == 1
