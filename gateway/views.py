"""Dashboard pages for the gateway: keys, providers and deployments, routing policies,
policies."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from core import smart, strategies
from core.form_input import form_error, form_message
from governance import services as governance_services
from governance.models import Policy, RoutingPolicy
from orgs.audit import Actor
from orgs.models import Team
from orgs.permissions import org_view

from . import services
from .dataplane import provider_kinds
from .forms import (
    ApiKeyForm,
    CorsForm,
    DeploymentForm,
    OrgSmartForm,
    PolicyForm,
    ProviderForm,
    RoutingPolicyForm,
)
from .models import ApiKey, Deployment, GatewayConfig, ProviderConnection


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


PROVIDER_LABELS = {"api_base": "Endpoint", "kind": "Kind", "name": "Name"}


def _provider_form_saved(request, form: ProviderForm) -> bool:
    """Save a posted provider form through the service; False (and the reasons, as a
    message) when the form or the service refuses it."""
    try:
        if not form.is_valid():
            raise ValidationError(form.errors.as_data())
        arguments = form.save_arguments()
        # A new provider never replaces one of the same name (provider_create refuses it).
        save = services.provider_create if form.provider is None else services.provider_save
        save(actor=Actor.from_request(request), org=request.org, **arguments)
    except ValidationError as exc:
        labels = {name: field.label for name, field in form.fields.items()}
        messages.error(request, form_error(exc, {**labels, **PROVIDER_LABELS}))
        return False
    messages.success(request, f"Provider {arguments['name']} saved.")
    return True


@org_view(write_role="admin")
def providers(request):
    org = request.org
    form = ProviderForm(request.POST if request.method == "POST" else None)
    if form.is_bound and _provider_form_saved(request, form):
        return redirect("providers", org_slug=org.slug)
    providers = ProviderConnection.objects.for_org(org).with_active_deployments()
    return render(
        request,
        "gateway/providers.html",
        {
            "section": "providers",
            "providers": providers,
            "deployments": Deployment.objects.for_org(org).select_related("provider"),
            "form": form,
            "model_hints": [
                (kind.label, kind.model_hint)
                for kind in map(provider_kinds.get, sorted({p.kind for p in providers}))
                if kind and kind.model_hint
            ],
        },
        status=400 if form.is_bound else 200,
    )


@org_view(role="admin")
def provider_edit(request, provider_id):
    org = request.org
    provider = get_object_or_404(ProviderConnection.objects.for_org(org), pk=provider_id)
    if provider_kinds.get(provider.kind) is None:
        messages.error(request, f"{provider.name}: {provider_kinds.unknown(provider.kind)}")
        return redirect("providers", org_slug=org.slug)
    form = ProviderForm(request.POST if request.method == "POST" else None, provider=provider)
    if form.is_bound and _provider_form_saved(request, form):
        return redirect("providers", org_slug=org.slug)
    return render(
        request,
        "gateway/provider_edit.html",
        {"section": "providers", "provider": provider, "form": form},
        status=400 if form.is_bound else 200,
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
def cors_settings(request):
    """Browser access (CORS): the origins whose pages may call /v1 with the org's keys."""
    org = request.org
    if request.method == "POST":
        form = CorsForm(request.POST)
        if not form.is_valid():
            messages.error(request, form_message(form))
        else:
            try:
                services.gateway_config_set(
                    actor=Actor.from_request(request), org=org, **form.cleaned_data
                )
                messages.success(
                    request, "Browser access saved. Every gateway worker applies it within seconds."
                )
                return redirect("cors_settings", org_slug=org.slug)
            except ValidationError as exc:
                messages.error(request, form_message(form, exc))
    config = GatewayConfig.objects.for_org(org).first()
    return render(
        request,
        "gateway/cors.html",
        {"section": "settings", "origins": config.cors_origins if config else []},
    )


@org_view(write_role="admin")
def routing(request):
    org = request.org
    if request.method == "POST" and request.POST.get("form") == "org_smart":
        form = OrgSmartForm(request.POST)
        if not form.is_valid():
            messages.error(request, form_message(form))
        else:
            try:
                services.gateway_config_set(
                    actor=Actor.from_request(request), org=org, **form.cleaned_data
                )
                messages.success(request, "The organization's smart routing is saved.")
                return redirect("routing", org_slug=org.slug)
            except ValidationError as exc:
                messages.error(request, form_message(form, exc))
    elif request.method == "POST":
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
            "classifiers": list(smart.CLASSIFIERS.items()),
            "org_smart": GatewayConfig.objects.for_org(org).first(),
            "ab_arms": smart.AB_ARMS,
        },
    )
