"""The dashboard's Models page: the catalog's prices and context windows, and which of the
org's deployments serve each model at which price."""

from django.core.paginator import Paginator
from django.shortcuts import render

from orgs.permissions import org_view

from .models import ModelCatalogEntry
from .selectors import catalog_entries, deployments_by_upstream

PER_PAGE = 50


@org_view()
def catalog(request):
    org = request.org
    page = Paginator(catalog_entries(request.GET, org=org), PER_PAGE).get_page(
        request.GET.get("page")
    )
    served = deployments_by_upstream(org, [e.name for e in page.object_list])
    for entry in page.object_list:
        entry.deployments = served.get(entry.name, [])
        entry.input_mtok = _mtok(entry.input_cost_per_token)
        entry.output_mtok = _mtok(entry.output_cost_per_token)
    params = request.GET.copy()
    params.pop("page", None)
    return render(
        request,
        "gateway/catalog.html",
        {
            "section": "catalog",
            "page": page,
            "query": params.urlencode(),
            "providers": ModelCatalogEntry.objects.order_by("provider")
            .values_list("provider", flat=True)
            .distinct(),
        },
    )


def _mtok(per_token):
    return None if per_token is None else per_token * 1e6
