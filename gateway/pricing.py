"""Prices: a deployment's override, else the catalog (LiteLLM's bundled price map)."""

import importlib.util
import json
from functools import cache
from pathlib import Path


def _price_map_path() -> Path:
    spec = importlib.util.find_spec("litellm")
    return Path(spec.submodule_search_locations[0]) / "model_prices_and_context_window_backup.json"


@cache
def litellm_price_map() -> dict:
    """LiteLLM's price map read from the copy it ships (no import of litellm, no network)."""
    data = json.loads(_price_map_path().read_text())
    data.pop("sample_spec", None)
    return data


def catalog_prices(upstream_models) -> dict[str, tuple]:
    """Catalog rows for many upstream models in one query: name -> (input, output) per token."""
    from .models import ModelCatalogEntry

    rows = ModelCatalogEntry.objects.filter(name__in=set(upstream_models)).values_list(
        "name", "input_cost_per_token", "output_cost_per_token"
    )
    return {name: (inp, out) for name, inp, out in rows}


def catalog_price(upstream_model: str, catalog: dict | None = None) -> tuple[float, float]:
    if catalog is None:
        catalog = catalog_prices([upstream_model])
    row = catalog.get(upstream_model)
    if row is None:
        entry = litellm_price_map().get(upstream_model) or {}
        row = (entry.get("input_cost_per_token"), entry.get("output_cost_per_token"))
    return float(row[0] or 0.0), float(row[1] or 0.0)


def price_per_token(deployment, catalog: dict | None = None) -> tuple[float, float]:
    """Per-token prices; pass `catalog` (from catalog_prices) when pricing many deployments."""
    base_in, base_out = catalog_price(deployment.upstream_model, catalog)
    inp = (
        float(deployment.input_price_per_mtok) / 1e6
        if deployment.input_price_per_mtok is not None
        else base_in
    )
    out = (
        float(deployment.output_price_per_mtok) / 1e6
        if deployment.output_price_per_mtok is not None
        else base_out
    )
    return inp, out
