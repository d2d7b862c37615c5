"""Dashboard pages for policies and routing policies."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from billing.models import Budget
from bonito.numbers import whole
from bonito.text import split_csv
from gateway.dataplane import strategies
from gateway.models import ApiKey, Deployment
from orgs.models import Team
from orgs.permissions import org_view

from . import services
from .audit import Actor
from .models import Policy, RoutingPolicy

POLICY_LABELS = {
    "monthly_spend_cap_usd": "Monthly spend cap",
    "default_max_tokens_estimate": "Default max tokens estimate",
}
BUDGET_LABELS = {"amount_usd": "Amount", "thresholds": "Alert thresholds"}
MAX_ID = 2**63 - 1


def _form_error(exc: Exception, labels: dict) -> str:
    """A service's error for a form, each message after the label of its field."""
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        return "; ".join(
            f"{labels.get(name, name.replace('_', ' ').capitalize())}: {' '.join(msgs)}"
            if name != "__all__"
            else " ".join(msgs)
            for name, msgs in exc.message_dict.items()
        )
    return " ".join(getattr(exc, "messages", [str(exc)]))


def _whole(data, name, default=None, **bounds):
    """A form's whole-number field, or a ValidationError naming it."""
    value = data.get(name, "").strip()
    if not value:
        return default
    try:
        return whole(value, **bounds)
    except ValueError as exc:
        raise ValidationError({name: str(exc)}) from exc


@org_view(write_role="admin")
def policies(request):
    org = request.org
    policy = Policy.objects.filter(org=org).first() or Policy(org=org)
    if request.method == "POST":
        data = request.POST
        try:
            cap = data.get("monthly_spend_cap_usd", "").strip()
            services.policy_set(
                actor=Actor.from_request(request),
                org=org,
                **{
                    f: split_csv(data.get(f))
                    for f in (
                        "allowed_models",
                        "denied_models",
                        "allowed_providers",
                        "denied_providers",
                        "allowed_regions",
                    )
                },
                monthly_spend_cap_usd=cap or None,
                default_max_tokens_estimate=_whole(
                    data, "default_max_tokens_estimate", default=1024
                ),
            )
            messages.success(
                request, "Policy saved. Every gateway worker enforces it within seconds."
            )
            return redirect("policies", org_slug=org.slug)
        except ValidationError as exc:
            messages.error(request, _form_error(exc, POLICY_LABELS))
    return render(
        request,
        "governance/policies.html",
        {
            "section": "policies",
            "policy": policy,
            "budgets": Budget.objects.for_org(org).select_related("team", "key"),
            "teams": Team.objects.for_org(org),
            "keys": ApiKey.objects.for_org(org).active(),
            "models": sorted(
                set(Deployment.objects.for_org(org).values_list("model_name", flat=True))
            ),
        },
    )


@require_POST
@org_view(role="admin")
def budget_create(request):
    from billing.budgets import budget_save

    org, data = request.org, request.POST
    try:
        scope = data.get("scope", "org")
        team = (
            Team.objects.for_org(org).filter(pk=_whole(data, "team", 0, maximum=MAX_ID)).first()
            if scope == "team"
            else None
        )
        key = (
            ApiKey.objects.for_org(org).filter(pk=_whole(data, "key", 0, maximum=MAX_ID)).first()
            if scope == "key"
            else None
        )
        if scope == "team" and team is None or scope == "key" and key is None:
            raise ValidationError(f"Choose the {scope} this budget is for.")
        budget_save(
            actor=Actor.from_request(request),
            org=org,
            amount_usd=data.get("amount_usd", ""),
            scope=scope,
            team=team,
            key=key,
            period=data.get("period", "monthly"),
            hard=data.get("hard") == "on",
            thresholds=[
                _whole({"thresholds": t}, "thresholds", minimum=1, maximum=1000)
                for t in split_csv(data.get("thresholds"))
            ]
            or None,
            webhook_url=data.get("webhook_url", "").strip(),
        )
        messages.success(request, "Budget saved. Alerts fire at each threshold once per period.")
    except ValidationError as exc:
        messages.error(request, _form_error(exc, BUDGET_LABELS))
    return redirect("policies", org_slug=org.slug)


def _weights(text: str | None) -> dict:
    """The Routing form's weights, "model-a=90, model-b=10"; the service checks the rest."""
    out = {}
    for part in split_csv(text):
        model, sep, weight = part.rpartition("=")
        if not sep or not model.strip():
            raise ValidationError({"weights": f"write each one as model=weight, not {part!r}."})
        out[model.strip()] = weight.strip()
    return out


@org_view(write_role="admin")
def routing(request):
    org = request.org
    if request.method == "POST":
        data = request.POST
        try:
            services.routing_policy_save(
                actor=Actor.from_request(request),
                org=org,
                name=data.get("name", "").strip(),
                strategy=data.get("strategy", strategies.DEFAULT),
                models=split_csv(data.get("models")),
                weights=_weights(data.get("weights")),
            )
            messages.success(
                request,
                f"Routing policy {data.get('name')} saved. Create an rt- key for it under Keys.",
            )
            return redirect("routing", org_slug=org.slug)
        except ValidationError as exc:
            messages.error(request, _form_error(exc, {}))
    policies = RoutingPolicy.objects.for_org(org)
    rt_keys = (
        ApiKey.objects.for_org(org)
        .active()
        .filter(routing_policy__isnull=False)
        .select_related("routing_policy")
    )
    return render(
        request,
        "governance/routing.html",
        {
            "section": "routing",
            "policies": policies,
            "rt_keys": rt_keys,
            "strategies": strategies.choices(),
        },
    )
