"""The dashboard's Audit log page, for org admins."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import render

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
        error = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
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
