"""Dashboard pages for the gateway: keys, providers and deployments, routing policies,
policies."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from core import strategies
from core.form_input import form_message
from governance import services as governance_services
from governance.models import Policy, RoutingPolicy
from orgs.audit import Actor
from orgs.models import Team
from orgs.permissions import org_view

from . import services
from .forms import ApiKeyForm, DeploymentForm, PolicyForm, RoutingPolicyForm
from .models import ApiKey, Deployment, ProviderConnection


@org_view(write_role="member")
def keys(request):
    org = request.org
    created = None
    if request.method == "POST":
        form = ApiKeyForm(request.POST, org=org)
        if not form.is_valid():
            messages.error(request, form_message(form))
        else:
            try:
                key, raw = services.api_key_create(
                    actor=Actor.from_request(request), org=org, **form.cleaned_data
                )
                created = {"key": key, "raw": raw}  # rendered once, never stored
            except ValidationError as exc:
                messages.error(request, " ".join(exc.messages))
    return render(
        request,
        "gateway/keys.html",
        {
            "section": "keys",
            "keys": ApiKey.objects.for_org(org).select_related("team", "routing_policy"),
            "teams": Team.objects.for_org(org),
            "routing_policies": RoutingPolicy.objects.for_org(org),
            "models": Deployment.objects.for_org(org)
            .values_list("model_name", flat=True)
            .distinct(),
            "created": created,
            "now": timezone.now(),
            "ceilings": services.key_limit_ceilings(org),
        },
        status=201 if created else 200,
    )


@require_POST
@org_view(role="member")
def key_revoke(request, key_id):
    key = get_object_or_404(ApiKey.objects.for_org(request.org), pk=key_id)
    if not request.membership.has_role("admin") and key.created_by_id != request.user.id:
        messages.error(
            request, "Members can revoke the keys they created; ask an admin for this one."
        )
    else:
        services.api_key_revoke(actor=Actor.from_request(request), key=key)
        messages.success(
            request, f"Key {key.name} ({key.masked}) revoked. Apps using it now get 401."
        )
    return redirect("keys", org_slug=request.org.slug)


@org_view(write_role="admin")
def providers(request):
    org = request.org
    if request.method == "POST":
        data = request.POST
        try:
            credentials = {"api_key": data["api_key"]} if data.get("api_key") else None
            services.provider_create(
                actor=Actor.from_request(request),
                org=org,
                name=data.get("name", "").strip(),
                kind=data.get("kind", ""),
                api_base=data.get("api_base", "").strip(),
                credentials=credentials,
            )
            messages.success(request, f"Provider {data.get('name')} saved.")
            return redirect("providers", org_slug=org.slug)
        except ValidationError as exc:
            messages.error(request, "; ".join(exc.messages))
    return render(
        request,
        "gateway/providers.html",
        {
            "section": "providers",
            "providers": ProviderConnection.objects.for_org(org).with_active_deployments(),
            "deployments": Deployment.objects.for_org(org).select_related("provider"),
            "kinds": ProviderConnection.Kind.choices,
        },
    )


@require_POST
@org_view(role="admin")
def provider_test(request, provider_id):
    provider = get_object_or_404(ProviderConnection.objects.for_org(request.org), pk=provider_id)
    ok, detail = services.provider_test(provider=provider)
    (messages.success if ok else messages.error)(request, f"Test of {provider.name}: {detail}")
    return redirect("providers", org_slug=request.org.slug)


@require_POST
@org_view(role="admin")
def deployment_create(request):
    org = request.org
    form = DeploymentForm(request.POST, org=org)
    if not form.is_valid():
        messages.error(request, form_message(form))
        return redirect("providers", org_slug=org.slug)
    data = form.cleaned_data
    try:
        services.deployment_save(actor=Actor.from_request(request), org=org, **data)
        messages.success(request, f"{data['model_name']} now routes to {data['provider'].name}.")
    except ValidationError as exc:
        messages.error(request, "; ".join(exc.messages))
    return redirect("providers", org_slug=org.slug)


@org_view(write_role="admin")
def policies(request):
    org = request.org
    policy = Policy.objects.filter(org=org).first() or Policy(org=org)
    if request.method == "POST":
        form = PolicyForm(request.POST)
        if not form.is_valid():
            messages.error(request, form_message(form))
        else:
            try:
                governance_services.policy_set(
                    actor=Actor.from_request(request), org=org, **form.cleaned_data
                )
                messages.success(
                    request, "Policy saved. Every gateway worker enforces it within seconds."
                )
                return redirect("policies", org_slug=org.slug)
            except ValidationError as exc:
                messages.error(request, form_message(form, exc))
    return render(
        request,
        "gateway/policies.html",
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
        form = RoutingPolicyForm(request.POST)
        if not form.is_valid():
            messages.error(request, form_message(form))
        else:
            try:
                governance_services.routing_policy_save(
                    actor=Actor.from_request(request), org=org, **form.cleaned_data
                )
                messages.success(
                    request,
                    f"Routing policy {form.cleaned_data['name']} saved. "
                    "Create an rt- key for it under Keys.",
                )
                return redirect("routing", org_slug=org.slug)
            except ValidationError as exc:
                messages.error(request, form_message(form, exc))
    policies = RoutingPolicy.objects.for_org(org)
    rt_keys = (
        ApiKey.objects.for_org(org)
        .active()
        .filter(routing_policy__isnull=False)
        .select_related("routing_policy")
    )
    return render(
        request,
        "gateway/routing.html",
        {
            "section": "routing",
            "policies": policies,
            "rt_keys": rt_keys,
            "strategies": strategies.choices(),
        },
    )
