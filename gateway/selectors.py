"""Reads of the model catalog for the dashboard and the REST API."""

from django.db.models import Q

from .models import Deployment, ModelCatalogEntry

SEARCH_MAX = 200


def catalog_entries(params, *, org=None):
    """The catalog filtered by ``search`` (in the name or the provider), ``provider`` and
    ``mode``; with ``org`` and ``served=1``, only the models the org's deployments call."""
    qs = ModelCatalogEntry.objects.all()
    search = _text(params.get("search"))
    if search:
        qs = qs.filter(Q(name__icontains=search) | Q(provider__icontains=search))
    if _text(params.get("provider")):
        qs = qs.filter(provider=_text(params["provider"]))
    if _text(params.get("mode")):
        qs = qs.filter(mode=_text(params["mode"]))
    if org is not None and params.get("served") in ("1", "on", "true"):
        qs = qs.filter(name__in=Deployment.objects.for_org(org).values("upstream_model"))
    return qs


def _text(value):
    """A search term as typed, cut to a sane length; NUL (which PostgreSQL refuses) dropped."""
    if not value:
        return ""
    return str(value).replace("\x00", "").strip()[:SEARCH_MAX]


def deployments_by_upstream(org, names) -> dict[str, list]:
    """The org's deployments calling each of ``names`` (upstream models), in one query,
    each with the price in use per million tokens and whether it is the org's own."""
    from .pricing import catalog_prices, price_per_token

    deployments = list(
        Deployment.objects.for_org(org)
        .filter(upstream_model__in=list(names))
        .select_related("provider")
    )
    catalog = catalog_prices(d.upstream_model for d in deployments)
    found: dict[str, list] = {}
    for d in deployments:
        inp, out = price_per_token(d, catalog)
        d.price_in_mtok, d.price_out_mtok = inp * 1e6, out * 1e6
        d.custom_price = d.input_price_per_mtok is not None or d.output_price_per_mtok is not None
        found.setdefault(d.upstream_model, []).append(d)
    return found
