"""Dashboard pages for the gateway: overview, keys, usage, logs, providers."""

from decimal import Decimal

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_POST

from billing import selectors
from billing.models import Notification, UsageRecord
from core.csv_export import csv_response
from core.text import split_csv
from governance.models import RoutingPolicy
from orgs.audit import Actor
from orgs.models import Team
from orgs.permissions import org_view

from . import services, snippets
from .models import ApiKey, Deployment, ProviderConnection


@org_view()
def overview(request):
    org = request.org
    start = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    today = selectors.usage_query(org, {"since": start.isoformat()})
    providers = list(ProviderConnection.objects.for_org(org).with_active_deployments())
    first_model = (
        Deployment.objects.for_org(org)
        .filter(is_active=True)
        .values_list("model_name", flat=True)
        .first()
    )
    base_url = request.build_absolute_uri("/v1").rstrip("/")
    return render(
        request,
        "gateway/overview.html",
        {
            "section": "overview",
            "base_url": base_url,
            "snippets": snippets.quickstart(base_url=base_url, model=first_model or "your-model"),
            "has_model": first_model is not None,
            "today": today.totals(),
            "providers": providers,
            "idle_providers": [p for p in providers if p.n_active == 0],
            "has_keys": ApiKey.objects.for_org(org).active().exists(),
            "notifications": Notification.objects.for_org(org).filter(read_at__isnull=True)[:5],
        },
    )


@org_view(write_role="member")
def keys(request):
    org = request.org
    created = None
    if request.method == "POST":
        data = request.POST
        try:
            expires = (
                parse_datetime(data["expires_at"] + "T23:59:59+00:00")
                if data.get("expires_at")
                else None
            )
            if data.get("expires_at") and expires is None:
                raise ValidationError("Expiry must be a date.")
            team = (
                get_object_or_404(Team.objects.for_org(org), pk=data["team"])
                if data.get("team")
                else None
            )
            policy = (
                get_object_or_404(RoutingPolicy.objects.for_org(org), pk=data["routing_policy"])
                if data.get("routing_policy")
                else None
            )
            key, raw = services.api_key_create(
                actor=Actor.from_request(request),
                org=org,
                name=data.get("name", ""),
                allowed_models=split_csv(data.get("allowed_models")),
                allowed_providers=split_csv(data.get("allowed_providers")),
                team=team,
                rpm_limit=int(data["rpm_limit"]) if data.get("rpm_limit") else None,
                tpm_limit=int(data["tpm_limit"]) if data.get("tpm_limit") else None,
                expires_at=expires,
                routing_policy=policy,
            )
            created = {"key": key, "raw": raw}  # rendered once, never stored
        except (ValidationError, ValueError) as exc:
            messages.error(request, " ".join(getattr(exc, "messages", [str(exc)])))
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


def _filter_error(exc: ValidationError) -> str:
    """The parameter, then what is wrong with it: since: '2026-02-30' is not a date …"""
    return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())


def _filters(request, select=selectors.usage_records):
    """The page's data and None; or, for a bad filter, the default range's data and the
    message (shown on the page, which answers 400)."""
    try:
        return select(request.org, request.GET, request.GET.get("default_range", "24h")), None
    except ValidationError as exc:
        error = _filter_error(exc)
        messages.error(request, error)
        return select(request.org, {}, "24h"), error


def _bad_request(exc: ValidationError) -> HttpResponse:
    """A file download that cannot be made answers 400 with the reason as plain text,
    never another range's file."""
    return HttpResponse(
        _filter_error(exc) + "\n", status=400, content_type="text/plain; charset=utf-8"
    )


@org_view()
def logs(request):
    (qs, since, until), error = _filters(request)
    page = Paginator(qs.select_related("key", "team"), 50).get_page(request.GET.get("page"))
    params = request.GET.copy()
    params.pop("page", None)
    return render(
        request,
        "gateway/logs.html",
        {
            "section": "logs",
            "page": page,
            "since": since,
            "until": until,
            "query": params.urlencode(),
            "keys": ApiKey.objects.for_org(request.org).only("id", "name"),
            "teams": Team.objects.for_org(request.org),
            "statuses": UsageRecord.Status.choices,
        },
        status=400 if error else 200,
    )


@org_view()
def log_detail(request, record_id):
    try:
        record = (
            UsageRecord.objects.for_org(request.org).select_related("key", "team").get(pk=record_id)
        )
    except (UsageRecord.DoesNotExist, ValidationError) as exc:
        raise Http404("No such request.") from exc
    return render(request, "gateway/log_detail.html", {"section": "logs", "r": record})


@org_view()
def usage(request):
    query, error = _filters(request, selectors.usage_query)
    analytics = query.analytics()
    since, until = query.since, query.until
    params = request.GET.copy()
    return render(
        request,
        "gateway/usage.html",
        {
            "section": "usage",
            "a": analytics,
            "query": params.urlencode(),
            "range": request.GET.get("range", "24h"),
            "presets": list(selectors.PRESETS),
            "since": since,
            "until": until,
            "rolled_up_until": query.rolled_until,
        },
        status=400 if error else 200,
    )


@org_view()
def usage_csv(request):
    try:
        qs, since, until = selectors.usage_records(
            request.org, request.GET, request.GET.get("default_range", "24h")
        )
    except ValidationError as exc:
        return _bad_request(exc)
    columns = [
        "created_at",
        "request_id",
        "endpoint",
        "status",
        "http_status",
        "error_type",
        "model_requested",
        "model_used",
        "provider",
        "deployment",
        "key__name",
        "team__name",
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "cost",
        "latency_ms",
        "ttft_ms",
        "source",
    ]
    return csv_response(
        filename=f"bonito-usage-{request.org.slug}-{since:%Y%m%d%H%M}-{until:%Y%m%d%H%M}.csv",
        header=[c.replace("__name", "") for c in columns],
        rows=qs.values_list(*columns).iterator(chunk_size=2000),
    )


@org_view()
def usage_statement(request):
    """The month's cost attribution by team and key, as CSV (?month=2026-11)."""
    try:
        start, lines = selectors.monthly_statement(request.org, request.GET.get("month"))
    except ValidationError as exc:
        return _bad_request(exc)
    columns = ["team", "key", "requests", "input_tokens", "output_tokens", "cost_usd"]
    total = sum((line["cost_usd"] for line in lines), Decimal("0.000000"))
    rows = [[line[c] for c in columns] for line in lines]
    rows.append(["TOTAL", "", sum(line["requests"] for line in lines), "", "", total])
    return csv_response(
        filename=f"bonito-statement-{request.org.slug}-{start:%Y-%m}.csv", header=columns, rows=rows
    )


@org_view(write_role="admin")
def providers(request):
    org = request.org
    if request.method == "POST":
        data = request.POST
        try:
            credentials = {"api_key": data["api_key"]} if data.get("api_key") else None
            services.provider_save(
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
    data = request.POST
    provider = get_object_or_404(
        ProviderConnection.objects.for_org(org), pk=data.get("provider") or 0
    )
    try:
        services.deployment_save(
            actor=Actor.from_request(request),
            org=org,
            model_name=data.get("model_name", "").strip(),
            provider=provider,
            upstream_model=data.get("upstream_model", "").strip(),
            region=data.get("region", "").strip(),
        )
        messages.success(request, f"{data.get('model_name')} now routes to {provider.name}.")
    except ValidationError as exc:
        messages.error(request, "; ".join(exc.messages))
    return redirect("providers", org_slug=org.slug)
