"""Dashboard pages for policies and routing policies."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render

from bonito.text import split_csv
from gateway.models import ApiKey, Deployment
from orgs.permissions import org_view

from . import services
from .audit import Actor
from .models import Policy, RoutingPolicy


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
                default_max_tokens_estimate=int(data.get("default_max_tokens_estimate") or 1024),
            )
            messages.success(
                request, "Policy saved. Every gateway worker enforces it within seconds."
            )
            return redirect("policies", org_slug=org.slug)
        except (ValidationError, ValueError) as exc:
            messages.error(request, " ".join(getattr(exc, "messages", [str(exc)])))
    return render(
        request,
        "governance/policies.html",
        {
            "section": "policies",
            "policy": policy,
            "models": sorted(
                set(Deployment.objects.for_org(org).values_list("model_name", flat=True))
            ),
        },
    )


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
                strategy=data.get("strategy", "failover"),
                models=split_csv(data.get("models")),
            )
            messages.success(
                request,
                f"Routing policy {data.get('name')} saved. Create an rt- key for it under Keys.",
            )
            return redirect("routing", org_slug=org.slug)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
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
            "strategies": RoutingPolicy.STRATEGIES,
        },
    )
