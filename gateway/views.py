"""Dashboard pages for the gateway: keys, providers and deployments, routing policies,
policies."""

import hashlib
import json
import re
from decimal import Decimal

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from core import show_once, smart, strategies
from core.form_input import form_error, form_labels, form_message
from governance import services as governance_services
from governance.models import Policy, RoutingPolicy
from orgs.audit import Actor
from orgs.models import Team, Tier, tier_includes_learned
from orgs.permissions import org_view

from . import pricing, selectors, services
from .dataplane import provider_kinds
from .dataplane.smart import DEFAULT_KEYWORDS
from .forms import (
    ApiKeyForm,
    CorsForm,
    DeploymentEditForm,
    DeploymentForm,
    OrgSmartForm,
    PolicyForm,
    ProviderForm,
    RoutingPolicyEditForm,
    RoutingPolicyForm,
)
from .models import ApiKey, CredentialsUnreadable, Deployment, GatewayConfig, ProviderConnection


@org_view(write_role="member")
def keys(request):
    org = request.org
    if request.method == "POST":
        form = ApiKeyForm(request.POST, org=org)
        if not form.is_valid():
            messages.error(request, form_message(form))
        else:
            try:
                key, raw = services.api_key_create(
                    actor=Actor.from_request(request),
                    org=org,
                    membership=request.membership,
                    **form.cleaned_data,
                )
                show_once.keep(request, "created", key.id, raw)
                return redirect("key_created", org_slug=org.slug, key_id=key.id)
            except ValidationError as exc:
                messages.error(request, form_message(form, exc))  # each after its field
        # Refused: 400, the form keeps its input.
        return _keys_page(request, submitted=request.POST, status=400)
    return _keys_page(request)


@org_view(role="member")
def key_created(request, key_id):
    """The new key's secret, shown on the first GET after creating it and never again."""
    key = get_object_or_404(ApiKey.objects.for_org(request.org), pk=key_id)
    raw = show_once.take(request, "created", key.id)
    response = _keys_page(request, created={"key": key, "raw": raw})
    response["Cache-Control"] = "no-store"
    return response


def _keys_page(request, *, created=None, submitted=None, status=200):
    org = request.org
    # A member's keys go on the member's own team (services.api_key_create): the form
    # offers only that one, or "no team" when the member has none.
    admin = request.membership.has_role("admin")
    teams = Team.objects.for_org(org)
    if not admin:
        teams = teams.filter(pk=request.membership.team_id)
    return render(
        request,
        "gateway/keys.html",
        {
            "section": "keys",
            "keys": selectors.keys_with_spend(
                ApiKey.objects.for_org(org).select_related("team", "routing_policy")
            ),
            "teams": teams,
            "own_team_only": not admin,
            "routing_policies": RoutingPolicy.objects.for_org(org),
            "models": Deployment.objects.for_org(org)
            .values_list("model_name", flat=True)
            .distinct(),
            "created": created,
            "submitted": submitted,
            "now": timezone.now(),
            "ceilings": services.key_limit_ceilings(org),
        },
        status=status,
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


def _key_to_change(request, key_id) -> ApiKey:
    """The org's key, if this member may change it (services.api_key_may_change, as REST)."""
    key = get_object_or_404(
        ApiKey.objects.for_org(request.org).select_related("team", "routing_policy"), pk=key_id
    )
    if not services.api_key_may_change(request.membership, key):
        raise PermissionDenied("Members can change the keys they created; ask an admin.")
    return key


KEY_FORM_FIELDS = (
    "name",
    "allowed_models",
    "allowed_providers",
    "team",
    "routing_policy",
    "rpm_limit",
    "tpm_limit",
    "expires_at",
)


def _key_form_values(key, submitted=None) -> dict:
    """What the key's Edit form shows: what was typed when a save was refused (so nothing
    typed is lost), else the key as stored; ids as strings, as a form posts them."""
    if submitted is not None:
        return {name: submitted.get(name, "") for name in KEY_FORM_FIELDS}
    return {
        "name": key.name,
        "allowed_models": ", ".join(key.allowed_models),
        "allowed_providers": ", ".join(key.allowed_providers),
        "team": str(key.team_id or ""),
        "routing_policy": str(key.routing_policy_id or ""),
        "rpm_limit": "" if key.rpm_limit is None else str(key.rpm_limit),
        "tpm_limit": "" if key.tpm_limit is None else str(key.tpm_limit),
        "expires_at": key.expires_at.strftime("%Y-%m-%d") if key.expires_at else "",
    }


def _key_edit_page(request, key, *, rotated=None, status=200, submitted=None):
    org = request.org
    response = render(
        request,
        "gateway/key_edit.html",
        {
            "section": "keys",
            "key": key,
            "values": _key_form_values(key, submitted),
            "teams": Team.objects.for_org(org),
            "routing_policies": RoutingPolicy.objects.for_org(org),
            "models": Deployment.objects.for_org(org)
            .values_list("model_name", flat=True)
            .distinct(),
            "ceilings": services.key_limit_ceilings(org),
            "grace_choices": services.ROTATION_GRACE_CHOICES,
            "rotated": rotated,
            "now": timezone.now(),
        },
        status=status,
    )
    if rotated:
        response["Cache-Control"] = "no-store"  # the new secret is on this page, once
    return response


@org_view(role="member")
def key_rotated(request, key_id):
    """The rotated key's new secret, shown on the first GET after the rotation and never
    again (a reload says so, and rotates nothing)."""
    key = _key_to_change(request, key_id)
    return _key_edit_page(request, key, rotated={"raw": show_once.take(request, "rotated", key.id)})


@org_view(role="member")
def key_edit(request, key_id):
    """Edit a key's name, scopes, team, limits, expiry (and an rt- key's routing policy)."""
    key = _key_to_change(request, key_id)
    if request.method != "POST":
        return _key_edit_page(request, key)
    form = ApiKeyForm(request.POST, org=request.org)
    if not form.is_valid():
        messages.error(request, form_message(form))
        return _key_edit_page(request, key, status=400, submitted=request.POST)
    changes = dict(form.cleaned_data)
    if key.kind != ApiKey.Kind.ROUTING:
        changes.pop("routing_policy")  # a bn- key has none, and the page offers none
    shown = key.expires_at.strftime("%Y-%m-%d") if key.expires_at else ""
    if request.POST.get("expires_at", "").strip() == shown:
        changes.pop("expires_at")  # the date as shown: keep the exact time it has
    try:
        key = services.api_key_update(
            actor=Actor.from_request(request), key=key, membership=request.membership, **changes
        )
    except ValidationError as exc:
        messages.error(request, form_message(form, exc))  # each after its field
        key.refresh_from_db()
        return _key_edit_page(request, key, status=400, submitted=request.POST)
    messages.success(
        request, f"Key {key.name} ({key.masked}) saved. Gateways apply it within seconds."
    )
    return redirect("keys", org_slug=request.org.slug)


@require_http_methods(["GET", "POST"])
@org_view(role="member")
def key_rotate(request, key_id):
    """A new secret for the key, shown once on the page this redirects to (key_rotated); the
    old secret works for the grace period chosen. A GET (a reload after a refusal, which
    leaves the browser here) goes to the key's page and rotates nothing."""
    key = _key_to_change(request, key_id)
    if request.method == "GET":
        return redirect("key_edit", org_slug=request.org.slug, key_id=key.id)
    choices = {str(seconds) for seconds, _label in services.ROTATION_GRACE_CHOICES}
    grace = request.POST.get("grace_seconds", "0")
    if grace not in choices:
        messages.error(request, "Choose how long the old secret keeps working.")
        return _key_edit_page(request, key, status=400)
    try:
        key, raw = services.api_key_rotate(
            actor=Actor.from_request(request), key=key, grace_seconds=int(grace)
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return _key_edit_page(request, key, status=400)
    show_once.keep(request, "rotated", key.id, raw)
    return redirect("key_rotated", org_slug=request.org.slug, key_id=key.id)


def _key_set_active(request, key_id, active: bool):
    """Disable or enable a key (services.api_key_set_active: members disable the keys they
    created; only admins enable), then back to the page the button was on."""
    key = _key_to_change(request, key_id)
    try:
        key = services.api_key_set_active(
            actor=Actor.from_request(request),
            key=key,
            active=active,
            membership=request.membership,
        )
    except (PermissionDenied, ValidationError) as exc:
        messages.error(request, " ".join(getattr(exc, "messages", None) or exc.args))
    else:
        if active:
            messages.success(request, f"Key {key.name} ({key.masked}) enabled: it works again.")
        else:
            messages.success(
                request,
                f"Key {key.name} ({key.masked}) disabled. Apps using it now get 401 until an "
                "admin enables it.",
            )
    if request.POST.get("back") == "edit":
        return redirect("key_edit", org_slug=request.org.slug, key_id=key.id)
    return redirect("keys", org_slug=request.org.slug)


@require_POST
@org_view(role="member")
def key_disable(request, key_id):
    return _key_set_active(request, key_id, False)


@require_POST
@org_view(role="admin")
def key_enable(request, key_id):
    return _key_set_active(request, key_id, True)


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
    return _providers_page(request, form, status=400 if form.is_bound else 200)


def _providers_page(request, form, *, deployment=None, status=200):
    """The Providers page; `deployment`: a refused new deployment's input, kept in its form."""
    providers = ProviderConnection.objects.for_org(request.org).with_active_deployments()
    return render(
        request,
        "gateway/providers.html",
        {
            "section": "providers",
            "providers": providers,
            "deployments": _with_unpriced(
                list(Deployment.objects.for_org(request.org).select_related("provider"))
            ),
            "form": form,
            "deployment": deployment,
            "model_hints": [
                (kind.label, kind.model_hint)
                for kind in map(provider_kinds.get, sorted({p.kind for p in providers}))
                if kind and kind.model_hint
            ],
        },
        status=status,
    )


def _with_unpriced(deployments: list) -> list:
    """Each deployment with ``unpriced`` set: billed $0 for want of any price."""
    catalog = pricing.catalog_prices(d.upstream_model for d in deployments)
    for d in deployments:
        d.unpriced = pricing.unpriced(d, catalog)
    return deployments


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
    if not form.is_bound and provider.credentials_encrypted and not form.stored:
        try:
            provider.get_credentials()
        except CredentialsUnreadable as exc:  # its deployments are not served meanwhile
            messages.error(request, f"{exc} Until then its deployments are not served.")
    return render(
        request,
        "gateway/provider_edit.html",
        {
            "section": "providers",
            "provider": provider,
            "form": form,
            "n_deployments": provider.deployments.count(),
        },
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
def provider_delete(request, provider_id):
    provider = get_object_or_404(ProviderConnection.objects.for_org(request.org), pk=provider_id)
    gone = services.provider_delete(actor=Actor.from_request(request), provider=provider)
    detail = f", and its deployments ({', '.join(gone)})" if gone else ""
    messages.success(request, f"Provider {provider.name} deleted{detail}.")
    return redirect("providers", org_slug=request.org.slug)


@require_http_methods(["GET", "POST"])
@org_view(role="admin")
def deployment_create(request):
    org = request.org
    if request.method == "GET":  # a reload after a refused form: the page that holds it
        return redirect("providers", org_slug=org.slug)
    form = DeploymentForm(request.POST, org=org)
    if not form.is_valid():
        messages.error(request, form_message(form))
        # Refused: 400, the form keeps its input.
        return _providers_page(request, ProviderForm(), deployment=request.POST, status=400)
    data = form.cleaned_data
    try:
        # An existing (model, provider, upstream) is refused: it is changed with Edit.
        services.deployment_create(actor=Actor.from_request(request), org=org, **data)
    except ValidationError as exc:
        messages.error(request, form_message(form, exc))
        return _providers_page(request, ProviderForm(), deployment=request.POST, status=400)
    messages.success(request, f"{data['model_name']} now routes to {data['provider'].name}.")
    return redirect("providers", org_slug=org.slug)


@org_view(role="admin")
def deployment_edit(request, deployment_id):
    org = request.org
    deployment = get_object_or_404(
        Deployment.objects.for_org(org).select_related("provider"), pk=deployment_id
    )
    if request.method == "POST":
        form = DeploymentEditForm(request.POST, org=org)
        if not form.is_valid():
            messages.error(request, form_message(form))
        else:
            try:
                services.deployment_save(
                    actor=Actor.from_request(request),
                    org=org,
                    deployment=deployment,
                    **form.cleaned_data,
                )
            except ValidationError as exc:
                messages.error(request, form_message(form, exc))
            else:
                messages.success(request, f"Deployment {deployment} saved.")
                return redirect("providers", org_slug=org.slug)
            deployment.refresh_from_db()  # the page shows what is stored, the form what was sent
    else:
        form = DeploymentEditForm(
            org=org,
            initial={
                "provider": deployment.provider_id,
                **{
                    name: getattr(deployment, name)
                    for name in DeploymentEditForm.base_fields
                    if name != "provider"
                },
            },
        )
    return render(
        request,
        "gateway/deployment_edit.html",
        {
            "section": "providers",
            "deployment": deployment,
            "form": form,
            "unpriced": pricing.unpriced(deployment),
        },
        status=400 if form.is_bound else 200,
    )


@require_POST
@org_view(role="admin")
def deployment_delete(request, deployment_id):
    deployment = get_object_or_404(
        Deployment.objects.for_org(request.org).select_related("provider"), pk=deployment_id
    )
    label, model = str(deployment), deployment.model_name
    services.deployment_delete(actor=Actor.from_request(request), deployment=deployment)
    messages.success(request, f"Deployment {label} deleted.")
    if not Deployment.objects.for_org(request.org).filter(model_name=model).exists():
        # Say what the deletion left without a route (nothing is refused: the data plane
        # skips a model without deployments).
        users = [
            p.name
            for p in RoutingPolicy.objects.for_org(request.org).only("name", "model_names")
            if model in p.model_names
        ]
        using = f"; the routing policies {', '.join(users)} list it" if users else ""
        messages.warning(
            request, f"{model} has no deployment left: requests for it now get 404{using}."
        )
    return redirect("providers", org_slug=request.org.slug)


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
        # Refused: the form keeps what was typed.
        values = {name: request.POST.get(name, "") for name in PolicyForm.base_fields}
    else:
        values = {name: ", ".join(getattr(policy, name)) for name in POLICY_LIST_FIELDS} | {
            "monthly_spend_cap_usd": policy.monthly_spend_cap_usd,
            "default_max_tokens_estimate": policy.default_max_tokens_estimate,
        }
    return render(
        request,
        "gateway/policies.html",
        {
            "section": "policies",
            "values": values,
            "models": sorted(
                set(Deployment.objects.for_org(org).values_list("model_name", flat=True))
            ),
        },
        status=400 if request.method == "POST" else 200,  # a POST here was refused
    )


POLICY_LIST_FIELDS = (
    "allowed_models",
    "denied_models",
    "allowed_providers",
    "denied_providers",
    "allowed_regions",
)


@org_view(write_role="admin")
def cors_settings(request):
    """Browser access (CORS): the origins whose pages may call /v1 with the org's keys."""
    org = request.org
    typed = None
    if request.method == "POST":
        typed = request.POST.get("cors_origins", "")  # refused: the form keeps it
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
    origins = config.cors_origins if config else []
    return render(
        request,
        "gateway/cors.html",
        {
            "section": "settings",
            "origins": origins,
            "typed": ", ".join(origins) if typed is None else typed,
        },
        status=400 if request.method == "POST" else 200,  # a POST here was refused
    )


# The service's messages name REST's settings (smart.thresholds, smart.ab.classifier); on
# the dashboard each goes to the form field it is about, named by that field's label.
_SMART_PATHS = (  # the longest first: smart.ab.classifier before smart.ab
    ("smart.ab.classifier", "ab_classifier"),
    ("smart.ab.share", "ab_share"),
    ("smart.ab", "ab_share"),
    ("smart.aggressiveness", "aggressiveness"),
    ("smart.thresholds", "thresholds"),
    ("smart.classifier", "classifier"),
)
# core.smart.resolve's messages about the tiers, which name no setting.
_TIER_MESSAGES = ("Smart routing takes at most", "Smart routing needs at least", "Each tier ")


def _smart_message_for_form(message: str, form, tiers_field: str) -> tuple[str | None, str]:
    """(the form field a smart settings message is about or None, the message in the
    form's words: its labels in place of REST's paths)."""
    labels = form_labels(form)
    field = None
    for path, name in _SMART_PATHS:
        if message.startswith(f"{path} ") or message.startswith(f"{path}:"):
            field = name
            if name in form.fields:  # said beside its field; else the path says what
                message = message[len(path) :].lstrip(": ")
            break
    else:
        if message.startswith(_TIER_MESSAGES):
            field = tiers_field
        elif message.startswith("The learned classifier is"):
            field = "classifier"
    for path, name in _SMART_PATHS:
        if name in labels:
            message = message.replace(path, labels[name])
    return (field if field in form.fields else None), message


def settings_version(*values) -> str:
    """A short digest of saved settings, sent with a form as it was shown (its hidden
    ``seen`` field): a save whose page showed other settings than those now saved (changed
    over REST, by the config file, a re-calibration or another page since) is refused, not
    applied over the newer ones."""
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _routing_policy_version(policy: RoutingPolicy) -> str:
    return settings_version(
        policy.strategy, policy.model_names, policy.weights, policy.smart, policy.is_active
    )


def _org_smart_version(config) -> str:
    # No settings row yet reads as the defaults a row is made with (a save of another
    # gateway setting makes one: the smart routing shown did not change).
    if config is None:
        return settings_version([], smart.DEFAULT_ALIAS, {})
    return settings_version(config.smart_tiers, config.auto_model_alias, config.smart or {})


STALE_FORM = (
    "{what} was changed after this page was opened (over REST, by the config file, a "
    "re-calibration, or from another page or tab, an earlier save of yours included): "
    "nothing was saved. The form now shows what is saved; make your change again."
)


def _stale(request, current: str) -> bool:
    """Whether a POSTed form was shown with other settings than those saved now (a form
    sent without ``seen``, by a script, is not checked)."""
    seen = str(request.POST.get("seen", ""))
    return bool(seen) and seen != current


def refused_on_form(form, exc: ValidationError, tiers_field: str) -> None:
    """The service's refusal ``exc`` put on the dashboard's ``form``: each message on the
    field it is about (shown next to it; form_message flashes it after the field's label),
    in the form's words, not REST's (smart.thresholds, "smart_tiers: ..."), which the REST
    API keeps. ``tiers_field``: the form's field that holds the smart tiers."""
    errors = exc.message_dict if hasattr(exc, "error_dict") else {None: exc.messages}
    for key, msgs in errors.items():
        for message in msgs:
            if key == "smart":
                field, message = _smart_message_for_form(message, form, tiers_field)
            else:
                field = key if key in form.fields else None
                if field is not None:  # "smart_tiers: 'x': ..." after the label "Tiers"
                    message = re.sub(rf"^{re.escape(key)}:? ", "", message)
            form.add_error(field, message)


@org_view(write_role="admin")
def routing(request):
    org = request.org
    org_form = policy_form = None
    status = 400 if request.method == "POST" else 200  # a POST shown again was refused
    if request.method == "POST" and request.POST.get("form") == "org_smart":
        form = org_form = OrgSmartForm(request.POST)
        # The stale check and the save are one transaction holding the settings: a save
        # elsewhere in between waits, then this one is refused as stale instead of
        # written over it.
        with transaction.atomic():
            saved = services.hold_gateway_config(org)
            if _stale(request, _org_smart_version(saved)):
                messages.error(request, STALE_FORM.format(what="The organization's smart routing"))
                org_form, status = None, 409  # shown as saved now
            elif form.is_valid():
                data = form.cleaned_data
                if data["smart_tiers"] and saved is not None and (saved.smart or saved.smart_tiers):
                    # Settings the page has no field for (A/B, keywords, within: REST and
                    # the config file set them) are kept, not dropped by a save from here.
                    kept = {k: v for k, v in saved.smart.items() if k not in ORG_SMART_FORM_KEYS}
                    data["smart"] = _defaults_left_out({**kept, **data["smart"]}, saved.smart)
                try:
                    config = services.gateway_config_set(
                        actor=Actor.from_request(request), org=org, **data
                    )
                    messages.success(request, "The organization's smart routing is saved.")
                    _price_warnings(request, config.smart_tiers)
                    return redirect("routing", org_slug=org.slug)
                except ValidationError as exc:
                    refused_on_form(form, exc, "smart_tiers")
        if org_form is not None:
            messages.error(request, form_message(form))
    elif request.method == "POST":
        form = policy_form = RoutingPolicyForm(request.POST)
        if form.is_valid():
            try:
                # A name the org has is refused: a policy is changed with Edit.
                policy = governance_services.routing_policy_create(
                    actor=Actor.from_request(request), org=org, **form.cleaned_data
                )
                messages.success(
                    request,
                    f"Routing policy {form.cleaned_data['name']} saved. "
                    "Create an rt- key for it under Keys.",
                )
                _price_warnings(request, policy.model_names if policy.strategy == "smart" else [])
                return redirect("routing", org_slug=org.slug)
            except ValidationError as exc:
                refused_on_form(form, exc, "models")
        messages.error(request, form_message(form))
    policies = list(RoutingPolicy.objects.for_org(org))
    org_smart = GatewayConfig.objects.for_org(org).first()
    org_spec = (org_smart.smart if org_smart else None) or {}
    # Saved with the learned classifier before the org's tier lost it, or where this server
    # lacks its optional extra: served with rules.
    learned_off = not tier_includes_learned(org.tier) or smart.learned_missing() is not None
    # Tiers no active deployment serves (a typo, or every deployment off): said beside them,
    # since a save takes any name and its prompts would go up a tier or fail.
    served = set(
        Deployment.objects.for_org(org)
        .filter(is_active=True, provider__is_active=True)
        .values_list("model_name", flat=True)
    )
    # Lower tiers dearer than the top one, however the tiers were saved (REST, apply_config).
    prices = services.model_cheapest_prices(org)
    for p in policies:
        p.unserved = [m for m in p.model_names if m not in served] if p.strategy == "smart" else []
        p.price_warnings = (
            services.smart_tier_price_warnings(org, p.model_names, prices)
            if p.strategy == "smart"
            else []
        )
        # Every setting that changes routing; numbers as the Edit box shows them (0.000001,
        # not the float's 1e-06), the A/B share as the percent it asks for.
        p.smart_summary = smart_summary(p.smart) if p.strategy == "smart" else []
        p.learned_off = (
            _learned_off(org, p.smart)
            if p.strategy == "smart" and learned_off and smart.uses_learned(p.smart)
            else None
        )
    org_unserved = [m for m in (org_smart.smart_tiers if org_smart else []) if m not in served]
    org_price_warnings = services.smart_tier_price_warnings(
        org, org_smart.smart_tiers if org_smart else [], prices
    )
    org_slider, org_thresholds = smart_slider(org_spec)
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
            # A refused new policy: its form keeps what was typed.
            "submitted": request.POST
            if request.method == "POST" and request.POST.get("form") != "org_smart"
            else None,
            "rt_keys": rt_keys,
            "strategies": strategies.choices(),
            "classifiers": list(smart.CLASSIFIERS.items()),
            "org_smart": org_smart,
            "org_smart_aggressiveness": org_slider,
            "org_smart_thresholds": org_thresholds,
            "org_smart_summary": smart_summary(org_spec),
            "org_learned_off": _learned_off(org, org_spec)
            if learned_off and smart.uses_learned(org_spec)
            else None,
            "org_smart_kept": smart_summary_beyond(org_spec, ORG_SMART_FORM_KEYS),
            "org_smart_unserved": org_unserved,
            "org_price_warnings": org_price_warnings,
            # The org default's form: what was typed when it was refused, else as saved.
            "org_form": org_form,
            "org_values": _org_smart_values(org_smart, org_slider, org_thresholds)
            if org_form is None
            else {name: request.POST.get(name, "") for name in OrgSmartForm.base_fields},
            # What the org default's form was shown with (a refused one: what it was sent with).
            "org_smart_seen": request.POST.get("seen", "")
            if org_form is not None
            else _org_smart_version(org_smart),
            "policy_form": policy_form,
            "ab_arms": smart.AB_ARMS,
        },
        status=status,
    )


def _learned_off(org, spec: dict) -> str:
    """What the Routing page says beside smart settings ``spec`` that use the learned
    classifier, saved before ``org``'s tier lost it: what is served instead, as
    gateway.snapshot_builder publishes it (core.smart.without_learned: scored by rules; an
    A/B test whose arm is learned, or would now be rules as the classifier is, dropped; one
    of the strong arm kept), and what a change of them needs."""
    if tier_includes_learned(org.tier):  # the Pro tier, on a server without the extra
        return (
            "the learned classifier's optional extra is not installed on this server (make "
            "smart, docs/smart-routing.md): until it is, served with rules; a change of "
            "these settings or a re-calibration needs it, or the classifier rules and no "
            "learned A/B arm"
        )
    tier = Tier(org.tier).label if org.tier in Tier.values else str(org.tier)
    saved_ab = spec.get("ab") if isinstance(spec.get("ab"), dict) else {}
    arm = saved_ab.get("classifier")
    served = "rules"
    if smart.without_learned(spec).get("ab"):
        served += f" and the A/B test of {arm} as saved"
    elif arm == "learned":
        served += ", A/B test off (its arm is learned)"
    elif saved_ab:
        served += f", A/B test off (both arms would be {arm})"
    needs = []
    if spec.get("classifier") == "learned":
        needs.append("the classifier rules")
    if arm == "learned":
        needs.append("another A/B arm than learned, or none")
    return (
        f"the learned classifier is not on the {tier} tier: until it is, served with "
        f"{served}; a change of these settings needs {' and '.join(needs)}"
    )


def _price_warnings(request, tiers) -> None:
    """After a save: a warning for each tier no active deployment serves and each lower
    tier dearer than the top one (saved all the same; services.smart_tier_warnings)."""
    for warning in services.smart_tier_warnings(request.org, tiers):
        messages.warning(request, warning)


def _org_smart_values(config, slider: int, thresholds: str) -> dict:
    """The org default's smart routing form's fields as saved (the page's own names)."""
    spec = (config.smart if config else None) or {}
    return {
        "smart_tiers": ", ".join(config.smart_tiers) if config else "",
        "auto_model_alias": config.auto_model_alias if config else smart.DEFAULT_ALIAS,
        "classifier": spec.get("classifier", ""),
        "aggressiveness": slider,
        "thresholds": thresholds,
        "aggressiveness_shown": slider,
        "thresholds_shown": thresholds,
    }


# The org default's smart settings the Routing page has fields for.
ORG_SMART_FORM_KEYS = frozenset({"classifier", "aggressiveness", "thresholds"})


# The smart settings the routing policy pages have fields for.
SMART_FORM_KEYS = frozenset({"classifier", "aggressiveness", "thresholds", "ab"})


def _defaults_left_out(spec: dict, saved: dict) -> dict:
    """A page's save of smart settings, without the defaults its fields always send (the
    classifier `rules`, the slider at 50) where the saved settings left them out: a save
    that changes nothing stores nothing new, and the audit log shows no change (it added
    `"classifier": "rules"` to settings saved over REST without one)."""
    for key, default in (("classifier", "rules"), ("aggressiveness", smart.DEFAULT_AGGRESSIVENESS)):
        if key not in saved and spec.get(key) == default:
            del spec[key]
    return spec


def plain_decimal(value) -> str:
    """A saved number as a person writes it: 0.000001, not the float's repr 1e-06 (the
    thresholds box reads no exponent, and the page shows every number the same way)."""
    try:
        return format(Decimal(repr(float(value))), "f")
    except (TypeError, ValueError, ArithmeticError):  # not a number (the service refuses those)
        return str(value)


def percent(share) -> str:
    """A share (0-1) as the percent the A/B box takes: 0.25 is 25, 0.125 is 12.5, 0.00002
    is 0.002 (a plain decimal, no float noise: 0.07 is 7, not 7.000000000000001)."""
    try:
        value = (Decimal(repr(float(share))) * 100).normalize()
    except (TypeError, ValueError, ArithmeticError):
        return str(share)
    return format(value, "f")


def keywords_changed(keywords) -> list[str]:
    """The keyword categories whose list a spec replaces with other words than the built-in
    ones (gateway.dataplane.smart.DEFAULT_KEYWORDS), in the classifier's order. An empty
    list routes by the built-in one, and the same words in another order or case route the
    same: neither is a change."""
    if not isinstance(keywords, dict):
        return []
    out = []
    for category in smart.KEYWORD_CATEGORIES:
        words = keywords.get(category)
        if not words or not isinstance(words, list):
            continue
        matched = {smart.keyword_matched(w) for w in words if isinstance(w, str)}
        if matched != set(DEFAULT_KEYWORDS.get(category, ())):
            out.append(category)
    return out


def smart_summary(spec) -> list[str]:
    """Every saved smart setting that changes routing, in words, as the Routing page
    summarises a policy and the org default: the classifier, the thresholds (or the
    aggressiveness they come from), the A/B test as a percent with its arm (the percent the
    form asks for), the keyword categories replaced, ``within`` when not the default."""
    spec = spec if isinstance(spec, dict) else {}
    parts = [str(spec.get("classifier") or "rules")]
    if spec.get("thresholds"):
        parts.append("thresholds " + ", ".join(plain_decimal(t) for t in spec["thresholds"]))
    else:
        aggressiveness = spec.get("aggressiveness", smart.DEFAULT_AGGRESSIVENESS)
        parts.append(f"aggressiveness {plain_decimal(aggressiveness)}")
    return parts + smart_summary_beyond(spec, ())


def smart_summary_beyond(spec, form_keys) -> list[str]:
    """smart_summary's words for the A/B test, keywords and ``within``, of those a form
    with fields ``form_keys`` has no field for: what the page says a save keeps."""
    spec = spec if isinstance(spec, dict) else {}
    parts = []
    ab = spec.get("ab") if "ab" not in form_keys else None
    if isinstance(ab, dict) and ab:
        arm = ab.get("classifier") or "—"
        if ab.get("share"):
            parts.append(f"A/B {percent(ab['share'])} % → {arm}")
        else:
            parts.append(f"A/B off (0 % → {arm})")
    changed = keywords_changed(spec.get("keywords"))
    if changed:
        parts.append("own keywords for " + ", ".join(changed))
    within = spec.get("within")
    if within and within != "failover":
        parts.append(f"within {within}")
    return parts


def smart_slider(spec: dict) -> tuple[int, str]:
    """(the slider's position 0-100, the thresholds box's text) of saved smart settings:
    with thresholds set by hand, the position that gives their top one (the page says they
    decide); the thresholds as plain decimals (plain_decimal)."""
    thresholds = spec.get("thresholds") or []
    text = ", ".join(plain_decimal(t) for t in thresholds)
    if thresholds:
        try:
            at = smart.aggressiveness_for(thresholds, spec.get("classifier") or "rules")
        except (OSError, ValueError, KeyError):  # a classifier whose quantiles are not here
            at = 0.5
        return round(at * 100), text
    aggressiveness = spec.get("aggressiveness")
    return (round(aggressiveness * 100) if aggressiveness is not None else 50), text


def _routing_policy_initial(policy: RoutingPolicy) -> dict:
    """The Edit form's values as the page shows them (the smart settings in its fields)."""
    spec = policy.smart or {}
    ab = spec.get("ab") or {}
    slider, thresholds = smart_slider(spec)
    return {
        "strategy": policy.strategy,
        "models": ", ".join(policy.model_names),
        "weights": ", ".join(f"{m}={w}" for m, w in (policy.weights or {}).items()),
        "classifier": spec.get("classifier", ""),
        "aggressiveness": slider,
        "thresholds": thresholds,
        "aggressiveness_shown": slider,
        "thresholds_shown": thresholds,
        "ab_share": round(ab["share"] * 100) if ab.get("share") else "",
        "ab_classifier": ab.get("classifier", ""),
        "is_active": policy.is_active,
    }


def _keep_ab_as_shown(posted, policy: RoutingPolicy, spec: dict) -> None:
    """The saved A/B test, exactly, when the Edit form's A/B boxes are sent as the page
    showed them: the share box takes a whole percent, so a share set over REST or the
    config file (0.125, 0.00002) shows rounded (12, empty), and saving the form for another
    field would otherwise round it, or drop it."""
    saved = (policy.smart or {}).get("ab")
    if not isinstance(saved, dict) or not saved:
        return
    shown = _routing_policy_initial(policy)
    if str(posted.get("ab_share", "")).strip() == str(shown["ab_share"]) and str(
        posted.get("ab_classifier", "")
    ) == str(shown["ab_classifier"]):
        spec["ab"] = dict(saved)


@org_view(role="admin")
def routing_policy_edit(request, policy_id):
    policies = RoutingPolicy.objects.for_org(request.org)
    if request.method != "POST":
        policy = get_object_or_404(policies, pk=policy_id)
        form = RoutingPolicyEditForm(initial=_routing_policy_initial(policy))
        return _routing_policy_edit_page(
            request, policy, form, _routing_policy_version(policy), status=200
        )
    # The check that the form saw the settings saved now and the save are one transaction
    # holding the policy's row: a save over REST, the config file or another tab between
    # them waits, and this one is then refused as stale, not applied over it.
    with transaction.atomic():
        policy = get_object_or_404(policies.select_for_update(), pk=policy_id)
        return _routing_policy_edit_post(request, policy)


def _routing_policy_edit_post(request, policy):
    org = request.org
    seen = _routing_policy_version(policy)
    if _stale(request, seen):
        messages.error(request, STALE_FORM.format(what=f"Routing policy {policy.name}"))
        form = RoutingPolicyEditForm(initial=_routing_policy_initial(policy))
        return _routing_policy_edit_page(request, policy, form, seen, status=409)
    seen = str(request.POST.get("seen", ""))[:64] or seen
    form = RoutingPolicyEditForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        if data["strategy"] == "smart" and policy.strategy == "smart":
            # Settings the page has no field for (keywords, within: REST and the config
            # file set them) are kept, not dropped by a save from this page.
            kept = {k: v for k, v in (policy.smart or {}).items() if k not in SMART_FORM_KEYS}
            data["smart"] = _defaults_left_out({**kept, **data["smart"]}, policy.smart or {})
            _keep_ab_as_shown(request.POST, policy, data["smart"])
        try:
            saved = governance_services.routing_policy_save(
                actor=Actor.from_request(request), org=org, name=policy.name, **data
            )
        except ValidationError as exc:
            refused_on_form(form, exc, "models")
        else:
            messages.success(request, f"Routing policy {policy.name} saved.")
            _price_warnings(request, saved.model_names if saved.strategy == "smart" else [])
            return redirect("routing", org_slug=org.slug)
        policy.refresh_from_db()
    messages.error(request, form_message(form))
    return _routing_policy_edit_page(request, policy, form, seen, status=400)


def _routing_policy_edit_page(request, policy, form, seen: str, status: int):
    return render(
        request,
        "gateway/routing_policy_edit.html",
        {
            "section": "routing",
            "policy": policy,
            "form": form,
            "seen": seen,
            "strategies": strategies.choices(),
            "classifiers": list(smart.CLASSIFIERS.items()),
            "ab_arms": smart.AB_ARMS,
            "rt_keys": policy.keys.filter(revoked_at__isnull=True).order_by("name"),
            "smart_kept": smart_summary_beyond(policy.smart, SMART_FORM_KEYS)
            if policy.strategy == "smart"
            else [],
        },
        status=status,
    )


@require_POST
@org_view(role="admin")
def routing_policy_delete(request, policy_id):
    policy = get_object_or_404(RoutingPolicy.objects.for_org(request.org), pk=policy_id)
    try:
        governance_services.routing_policy_delete(
            actor=Actor.from_request(request), routing_policy=policy
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"Routing policy {policy.name} deleted.")
    return redirect("routing", org_slug=request.org.slug)
