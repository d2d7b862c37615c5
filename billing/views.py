"""Dashboard pages for usage records and money: overview, usage, logs, budgets."""

from decimal import Decimal

from django.contrib import messages
from django.core.exceptions import SuspiciousOperation, ValidationError
from django.http import Http404, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from core import money
from core.csv_export import csv_response
from core.form_input import form_message
from gateway import snippets
from gateway.catalog import answers_chat
from gateway.models import ApiKey, Deployment, ModelCatalogEntry, ProviderConnection
from orgs.audit import Actor
from orgs.models import Team
from orgs.permissions import org_view

from . import selectors
from .budgets import budget_delete, budget_save, budget_spends
from .forms import BudgetForm
from .models import Budget, BudgetAlert, Notification, UsageRecord
from .pagination import BoundedPaginator


@org_view()
def overview(request):
    org = request.org
    start = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    today = selectors.usage_query(org, {"since": start.isoformat()})
    providers = list(ProviderConnection.objects.for_org(org).with_active_deployments())
    health = selectors.provider_health(org, providers)
    for p in providers:
        p.health = health[p.id]
    # The snippets name a model that works: one served by a provider that is not failing,
    # preferring one that is serving now; the first model only when none is.
    rank = {p.name: {"ok": 0, "idle": 1}.get(health[p.id].state, 2) for p in providers}
    # The snippets are chat completions: a chat model first (an embedding model would fail).
    deployments = list(
        Deployment.objects.for_org(org)
        .filter(is_active=True, provider__is_active=True)
        .values_list("model_name", "provider__name", "upstream_model")
    )
    modes = dict(
        ModelCatalogEntry.objects.filter(
            name__in={d[2] for d in deployments} | {d[0] for d in deployments}
        ).values_list("name", "mode")
    )
    first_model = min(
        deployments,
        key=lambda d: (not answers_chat(d[0], d[2], modes), rank.get(d[1], 2), d[0]),
        default=(None,),
    )[0]
    base_url = request.build_absolute_uri("/v1").rstrip("/")
    return render(
        request,
        "billing/overview.html",
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


def _policy_choices(request, recorded=()) -> list[tuple[str, str, bool]]:
    """(value, label, selected) of the filters' Policy menu: the org default and the org's
    smart routing policies by name (the requests record the name), the names in
    ``recorded`` (the policies the page's requests were routed by: a deleted policy's, or
    one no longer smart), and the value in the URL when it is none of those so the menu
    shows what filters. A policy's id in the URL selects that policy's name."""
    from governance.models import RoutingPolicy

    policies = (
        RoutingPolicy.objects.for_org(request.org)
        .filter(strategy="smart")
        .order_by("name")
        .values_list("pk", "name")
    )
    choices = [(selectors.ORG_DEFAULT_POLICY, selectors.ORG_DEFAULT_POLICY)]
    # A name of digits is given as its policy's id: as a value it could be another's id.
    choices += [(str(pk) if name.isdigit() else name, name) for pk, name in policies]
    listed = {label for _value, label in choices}
    choices += [(name, name) for name in sorted(set(recorded) - listed)]
    asked = request.GET.get("policy") or ""
    if asked.isdigit():  # an id (or a name of digits): the menu's entry for that policy
        try:
            name = selectors.policy_filter(request.org, {"policy": asked})
        except ValidationError:
            name = None
        if name is not None:
            label = name or selectors.ORG_DEFAULT_POLICY
            asked = next((v for v, shown in choices if shown == label), label)
    if asked and asked not in {value for value, _label in choices}:
        choices.append((asked, asked))
    return [(value, label, value == asked) for value, label in choices]


@org_view()
def logs(request):
    (qs, since, until), error = _filters(request)
    page = BoundedPaginator(qs.select_related("key", "team"), 50).get_page(request.GET.get("page"))
    params = request.GET.copy()
    params.pop("page", None)
    return render(
        request,
        "billing/logs.html",
        {
            "section": "logs",
            "page": page,
            "since": since,
            "until": until,
            "query": params.urlencode(),
            "log_filters": True,
            "keys": ApiKey.objects.for_org(request.org).only("id", "name").order_by("name", "id"),
            "teams": Team.objects.for_org(request.org).only("id", "name"),
            "statuses": UsageRecord.Status.choices,
            "policies": _policy_choices(request),
            "live_policy": _live_policy(request) if not error else None,
        },
        status=400 if error else 200,
    )


def _live_policy(request) -> str | None:
    """The policy name the Logs page's live tail keeps to ("" for the org default's
    requests), resolved from the filter as the page's rows were; None: no policy filter."""
    try:
        return selectors.policy_filter(request.org, request.GET)
    except ValidationError:
        return None


@org_view()
def log_detail(request, record_id):
    try:
        record = (
            UsageRecord.objects.for_org(request.org).select_related("key", "team").get(pk=record_id)
        )
    except (UsageRecord.DoesNotExist, ValidationError) as exc:
        raise Http404("No such request.") from exc
    return render(request, "billing/log_detail.html", {"section": "logs", "r": record})


@org_view()
def usage(request):
    query, error = _filters(request, selectors.usage_query)
    analytics = query.analytics()
    for dimension in ("model", "provider", "key", "team"):
        # With each group's filter value: the rows link to the logs filtered by it.
        analytics[f"by_{dimension}"] = query.breakdown(dimension, with_value=True)
    since, until = query.since, query.until
    params = request.GET.copy()
    return render(
        request,
        "billing/usage.html",
        {
            "section": "usage",
            "a": analytics,
            "query": params.urlencode(),
            "range": request.GET.get("range", "24h"),
            "presets": list(selectors.PRESETS),
            "since": since,
            "until": until,
            "rolled_up_until": query.rolled_until,
            "statuses": UsageRecord.Status.choices,
            "policies": _policy_choices(
                request,
                [p["policy"] for p in analytics["smart_routing"]["by_policy"]],
            ),
            "smart_tables": _smart_tables(analytics["smart_routing"]),
            "smart_recalibrate": _smart_recalibrate_buttons(request, analytics["smart_routing"]),
        },
        status=400 if error else 200,
    )


def _smart_recalibrate_buttons(request, sr: dict) -> list:
    """(policy field, label) of the Usage page's Re-calibrate buttons: the org default's
    while its tiers are set and every smart routing policy of the org, whether or not it
    had requests in the page's range (docs/smart-routing.md); with the page's Policy filter
    set, that policy's only. Shown to admins with the smart routing section (two queries,
    only then)."""
    from gateway.models import GatewayConfig
    from governance.models import RoutingPolicy

    from .smart_calibration import ORG_DEFAULT

    membership = getattr(request, "membership", None)
    if not sr["requests"] or membership is None or not membership.has_role("admin"):
        return []
    buttons = []
    tiers = GatewayConfig.objects.filter(org=request.org).values_list("smart_tiers", flat=True)
    if any(tiers):
        buttons.append((ORG_DEFAULT, "(org default)"))
    names = (
        RoutingPolicy.objects.for_org(request.org)
        .filter(strategy="smart")
        .order_by("name")
        .values_list("name", "is_active")
    )
    # A disabled policy may be re-calibrated before it is enabled again; its button says so.
    buttons += [(name, name if active else f"{name} (disabled)") for name, active in names]
    kept = _live_policy(request)  # the page's Policy filter: that policy's button only
    return buttons if kept is None else [b for b in buttons if b[0] == kept]


@org_view(role="admin")
@require_POST
def smart_recalibrate(request):
    """The Usage page's button: re-calibrate a smart policy from the org's feedback."""
    from .smart_calibration import recalibration_summary
    from .smart_calibration import smart_recalibrate as recalibrate

    name = str(request.POST.get("policy", ""))[:63]
    try:
        moved = recalibrate(actor=Actor.from_request(request), org=request.org, name=name)
        messages.success(request, recalibration_summary(moved) + ".")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    # Back to the page as it was (its range and filters): the query string it was shown
    # with, read and written again as one (never another path).
    try:
        back = QueryDict(str(request.POST.get("back", ""))[:2000]).urlencode()
    except SuspiciousOperation:  # more fields than a form may send: not the page's own
        back = ""
    url = reverse("usage", args=[request.org.slug])
    return redirect(f"{url}?{back}" if back and len(back) <= 2000 else url)


def _smart_tables(sr: dict) -> list:
    """(title, rows, the rows' name field) of the Usage page's smart routing tables, each
    row with ``saved_text``: its Saved cell in words."""
    return [
        (title, [{**r, "saved_text": money.saved_text(r)} for r in rows], name)
        for title, rows, name in (
            ("By day", sr["by_day"], "day"),
            ("By policy", sr["by_policy"], "policy"),
            ("By model used", sr["by_model"], "model"),
            ("By classifier (A/B)", sr["by_classifier"], "classifier"),
            ("Quality by tier", sr["by_tier"], "tier"),
        )
    ]


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
        *UsageRecord.SMART_FIELDS,
    ]
    return csv_response(
        filename=f"bonito-usage-{request.org.slug}-{since:%Y%m%d%H%M}-{until:%Y%m%d%H%M}.csv",
        header=[c.replace("__name", "") for c in columns],
        rows=qs.values_list(*columns).iterator(chunk_size=2000),
        request=request,
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
    rows.append(
        ["TOTAL", ""]
        + [
            sum(line[c] or 0 for line in lines)
            for c in ("requests", "input_tokens", "output_tokens")
        ]
        + [total]
    )
    return csv_response(
        filename=f"bonito-statement-{request.org.slug}-{start:%Y-%m}.csv",
        header=columns,
        rows=rows,
        request=request,
    )


@org_view(write_role="admin")
def budgets(request):
    return _budgets_page(request)


def _budget_form_values(editing, submitted) -> dict:
    """What the budget form shows: what was typed when a save was refused (so nothing typed
    is lost), else the budget being edited as stored, else a new budget's defaults; ids as
    strings, as a form posts them. A webhook URL is never shown (it carries its secret)."""
    if submitted is not None:
        return {
            **{
                name: submitted.get(name, "")
                for name in ("scope", "team", "key", "period", "amount_usd", "thresholds")
            },
            "hard": bool(submitted.get("hard")),
            "clear_webhook": bool(submitted.get("clear_webhook")),
            # The last value: the hidden "off" comes first, the ticked box's "on" after it.
            "is_active": submitted.get("is_active", "on") == "on",
        }
    if editing is None:
        return {"scope": "org", "period": "monthly", "is_active": True}
    return {
        "scope": editing.scope,
        "team": str(editing.team_id or ""),
        "key": str(editing.key_id or ""),
        "period": editing.period,
        "amount_usd": str(editing.amount_usd),
        "thresholds": ", ".join(map(str, editing.levels)),
        "hard": editing.hard,
        "is_active": editing.is_active,
    }


def _budgets_page(request, *, submitted=None, editing_id=None, status=200):
    """The Budgets page; `submitted`: a refused budget's input, kept in its form (the new
    budget's, or the one of `editing_id`'s)."""
    org = request.org
    now = timezone.now()
    rows = list(Budget.objects.for_org(org).select_related("team", "key"))
    spent = budget_spends(rows, now, org_ids=[org.id])
    alerts: dict = {}
    for alert in BudgetAlert.objects.filter(budget__in=rows).order_by("-created_at")[:200]:
        alerts.setdefault(alert.budget_id, []).append(alert)
    for b in rows:
        b.spent = spent[b.id]
        b.percent = b.spent * 100 / b.amount_usd if b.amount_usd else None  # |pct rounds it
        b.blocking = b.hard and b.is_active and b.spent >= b.amount_usd
        b.recent_alerts = alerts.get(b.id, [])[:5]
    editing = None
    editing_id = str(editing_id) if editing_id is not None else request.GET.get("edit")
    if editing_id:
        editing = next((b for b in rows if str(b.id) == editing_id), None)
        if editing is None:
            raise Http404("No such budget in this organization.")
    return render(
        request,
        "billing/budgets.html",
        {
            "section": "budgets",
            "budgets": rows,
            "editing": editing,
            "values": _budget_form_values(editing, submitted),
            "teams": Team.objects.for_org(org),
            "keys": ApiKey.objects.for_org(org).active(),
        },
        status=status,
    )


def _budget_of(request, budget_id) -> Budget:
    try:
        return Budget.objects.for_org(request.org).select_related("org").get(pk=int(budget_id))
    except (Budget.DoesNotExist, ValueError):
        raise Http404("No such budget in this organization.") from None


@require_http_methods(["GET", "POST"])
@org_view(role="admin")
def budget_edit(request, budget_id):
    """Change a budget (raising a spent hard budget lifts its block within seconds). A GET
    (a reload after a refused edit, which leaves the browser on this URL) shows the Budgets
    page with this budget's edit form, as stored."""
    budget = _budget_of(request, budget_id)
    if request.method == "GET":
        return _budgets_page(request, editing_id=budget.id)
    form = BudgetForm(request.POST, org=request.org)
    if not form.is_valid():
        messages.error(request, form_message(form))
        # The form keeps what was typed.
        return _budgets_page(request, submitted=request.POST, editing_id=budget.id, status=400)
    fields = dict(form.cleaned_data)
    if not fields["webhook_url"] and not request.POST.get("clear_webhook"):
        fields["webhook_url"] = budget.webhook_url  # never shown (it carries its secret): kept
    try:
        budget_save(
            actor=Actor.from_request(request),
            org=request.org,
            budget=budget,
            is_active=request.POST.get("is_active", "on") == "on",
            **fields,
        )
        messages.success(request, "Budget saved; the gateways apply it within seconds.")
    except ValidationError as exc:
        messages.error(request, form_message(form, exc))
        return _budgets_page(request, submitted=request.POST, editing_id=budget.id, status=400)
    return redirect("budgets", org_slug=request.org.slug)


@require_POST
@org_view(role="admin")
def budget_remove(request, budget_id):
    budget = _budget_of(request, budget_id)
    budget_delete(actor=Actor.from_request(request), budget=budget)
    messages.success(request, "Budget deleted; a block it made is lifted within seconds.")
    return redirect("budgets", org_slug=request.org.slug)


@require_POST
@org_view(role="member")
def notice_dismiss(request, notice_id):
    """Hide an in-app notice for everyone in the org (it stays in the audit log): a write,
    so members and admins only. Back to ``next`` only when it is a path on this site."""
    try:
        notice = Notification.objects.for_org(request.org).get(pk=int(notice_id))
    except (Notification.DoesNotExist, ValueError):
        raise Http404("No such notice in this organization.") from None
    if notice.read_at is None:
        notice.read_at = timezone.now()
        notice.save(update_fields=["read_at"])
    back = request.POST.get("next") or ""
    # A path only (redirect() would take "overview" or "b" for a view's name to reverse).
    if not (
        back.startswith("/")
        and not back.startswith(("//", "/\\"))
        and url_has_allowed_host_and_scheme(
            back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
    ):
        back = reverse("overview", args=[request.org.slug])
    return HttpResponseRedirect(back)


@require_http_methods(["GET", "POST"])
@org_view(role="admin")
def budget_create(request):
    org = request.org
    if request.method == "GET":  # a reload after a refused form: the page that holds it
        return redirect("budgets", org_slug=org.slug)
    form = BudgetForm(request.POST, org=org)
    if not form.is_valid():
        messages.error(request, form_message(form))
        # Refused: 400, the form keeps its input.
        return _budgets_page(request, submitted=request.POST, status=400)
    try:
        budget_save(actor=Actor.from_request(request), org=org, **form.cleaned_data)
        messages.success(request, "Budget saved. Alerts fire at each threshold once per period.")
    except ValidationError as exc:
        messages.error(request, form_message(form, exc))
        return _budgets_page(request, submitted=request.POST, status=400)
    return redirect("budgets", org_slug=org.slug)
