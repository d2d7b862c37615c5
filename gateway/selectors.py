"""Reads for the gateway's pages and lists that are more than one query: the model catalog
(dashboard and REST), and the key list with each key's spend this month and when it was
last used."""

from decimal import Decimal

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


# billing (above the gateway) plugs in f(org_id) -> {key id: spend this month (USD)} in its
# AppConfig.ready(): billing.spend.key_spend_this_month, from rollups and the live edges.
_key_spend_source = None


def use_key_spend(source) -> None:
    global _key_spend_source
    _key_spend_source = source


def key_spend_this_month(org_id: int) -> dict[int, Decimal]:
    """key id -> what it spent this calendar month (UTC); a key absent spent nothing.
    A fixed number of queries, whatever the number of keys or rows."""
    return _key_spend_source(org_id) if _key_spend_source is not None else {}


def keys_with_spend(keys) -> list:
    """The key rows of one org (a queryset), each with ``spend_this_month`` (Decimal) set:
    one query for the keys and the spend's fixed few, never one per key. ``last_used_at``
    is the key's own column (moved by the usage writer once per batch)."""
    rows = list(keys)
    if not rows:
        return rows
    spend = key_spend_this_month(rows[0].org_id)
    for key in rows:
        key.spend_this_month = spend.get(key.id, Decimal(0))
    return rows
