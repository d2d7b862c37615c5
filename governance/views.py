"""The dashboard's Audit log page and its CSV export, for org admins."""

import json

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import render
from django.utils import timezone

from core.csv_export import csv_response
from orgs.permissions import org_view

from .selectors import audit_object_types, audit_rows

PER_PAGE = 50


@org_view(role="admin")
def audit_log(request):
    org = request.org
    error = None
    try:
        rows = audit_rows(org, request.GET)
    except ValidationError as exc:
        error = _errors(exc)
        messages.error(request, error)
        rows = audit_rows(org, {})
    page = Paginator(rows, PER_PAGE).get_page(request.GET.get("page"))
    params = request.GET.copy()
    params.pop("page", None)
    return render(
        request,
        "governance/audit.html",
        {
            "section": "audit_log",
            "page": page,
            "query": params.urlencode(),
            "object_types": audit_object_types(org),
        },
        status=400 if error else 200,
    )


# The export's columns, in order; ``changes`` is written as JSON (secrets were scrubbed from
# it when the row was recorded: orgs.audit.scrub).
CSV_COLUMNS = [
    "created_at",
    "actor_label",
    "via",
    "ip",
    "action",
    "target_type",
    "target_id",
    "target_repr",
    "changes",
]


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())


@org_view(role="admin")
def audit_csv(request):
    """The rows the page's filters select (every page of them), as a streamed CSV."""
    try:
        rows = audit_rows(request.org, request.GET)
    except ValidationError as exc:
        return HttpResponse(_errors(exc) + "\n", status=400, content_type="text/plain")

    def lines():
        for row in rows.values_list(*CSV_COLUMNS).iterator(chunk_size=2000):
            changes = row[-1]
            yield [*row[:-1], json.dumps(changes, sort_keys=True, default=str) if changes else ""]

    return csv_response(
        filename=f"bonito-audit-{request.org.slug}-{timezone.now():%Y%m%d%H%M}.csv",
        header=CSV_COLUMNS,
        rows=lines(),
        request=request,
    )
