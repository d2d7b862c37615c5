"""Prices: a deployment's override, else the catalog (LiteLLM's bundled price map)."""

import importlib.util
import json
import re
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


@cache
def _cache_ratios() -> dict[str, tuple]:
    """upstream model -> (cache read, cache write, 1-hour cache write) price as a share of
    its input price, from LiteLLM's map, for the models it prices prompt caching of (None:
    not priced apart)."""
    fields = (
        "cache_read_input_token_cost",
        "cache_creation_input_token_cost",
        "cache_creation_input_token_cost_above_1hr",
    )
    out = {}
    for name, entry in litellm_price_map().items():
        base = entry.get("input_cost_per_token") if isinstance(entry, dict) else None
        if not isinstance(base, int | float) or base <= 0:
            continue
        ratios = tuple(
            v / base if isinstance(v, int | float) and v >= 0 else None
            for v in (entry.get(f) for f in fields)
        )
        if ratios != (None, None, None):
            out[name] = ratios
    return out


def cache_prices(upstream_model: str, input_cost: float) -> tuple:
    """Per-token prices of input tokens read from, written to and written for an hour to
    the provider's prompt cache, or None for each that is priced as plain input (a 1-hour
    write without a price of its own: as a write). They keep the catalog's ratio to the
    input price, so a deployment's input price override moves them with it (Anthropic: a
    read 0.1x, a write 1.25x, a 1-hour write 2x; OpenAI: a read 0.5x or less, no write)."""
    ratios = _cache_ratios().get(upstream_model, (None, None, None))
    return tuple(None if r is None else input_cost * r for r in ratios)


# A catalog key that prices one image size (and quality) of a model: "1024-x-1024/dall-e-2",
# "hd/1024-x-1792/dall-e-3" (the provider's prefix, "azure/…", is a model of its own).
_SIZED = re.compile(r"^(?:(?P<quality>[a-z]+)/)?(?P<w>\d+)-x-(?P<h>\d+)/(?P<model>.+)$")


def _image_price(entry: dict, pixels: int | None) -> float | None:
    for name in ("output_cost_per_image", "input_cost_per_image"):
        if entry.get(name):
            return float(entry[name])
    per_pixel = (entry.get("input_cost_per_pixel") or 0) + (entry.get("output_cost_per_pixel") or 0)
    return float(per_pixel) * pixels if per_pixel and pixels else None


@cache
def _catalog_unit_costs() -> dict[str, dict[str, float]]:
    """upstream model -> its unit prices in LiteLLM's map (see DeploymentInfo.unit_costs)."""
    out: dict[str, dict[str, float]] = {}
    for name, entry in litellm_price_map().items():
        if not isinstance(entry, dict):
            continue
        sized = _SIZED.match(name)
        if sized:
            w, h = int(sized["w"]), int(sized["h"])
            price = _image_price(entry, w * h)
            if price is not None:
                key = f"{w}x{h}" if not sized["quality"] else f"{sized['quality']}/{w}x{h}"
                out.setdefault(sized["model"], {})[f"image:{key}"] = price
            continue
        costs = out.setdefault(name, {})
        price = _image_price(entry, None)
        if price is not None:
            costs["image"] = price
        for unit, names in (
            ("second", ("input_cost_per_second", "output_cost_per_second")),
            ("character", ("input_cost_per_character",)),
            ("query", ("input_cost_per_query",)),
        ):
            # Whisper's map lists the same price as input and output per second: one of
            # them is what a second of audio costs.
            value = next((entry[n] for n in names if entry.get(n)), None)
            if value:
                costs[unit] = float(value)
    for costs in out.values():
        if "image" not in costs:  # a model priced by size only: its default size's price
            for default in (
                "image:1024x1024",
                "image:standard/1024x1024",
                "image:medium/1024x1024",
            ):
                if default in costs:
                    costs["image"] = costs[default]
                    break
    return {name: costs for name, costs in out.items() if costs}


def unit_costs(deployment) -> dict[str, float]:
    """USD per image / second of audio / character / rerank search for this deployment:
    its own unit_price for every unit if set, else the catalog's."""
    if deployment.unit_price is not None:
        price = float(deployment.unit_price)
        return {"image": price, "second": price, "character": price, "query": price}
    return dict(_catalog_unit_costs().get(deployment.upstream_model, {}))


def unpriced(deployment, catalog: dict | None = None) -> bool:
    """Whether every request to this deployment is billed $0: no unit price and no token
    price, its own or the catalog's. LiteLLM's bundled map has no price for some models
    apps call by their provider's name (OpenAI's ``dall-e-2``/``dall-e-3`` are there only
    as ``azure/…`` keys, at Azure's prices, and ``aiml/…``, a reseller's): such a
    deployment needs a unit price (or token prices) to be billed."""
    return not unit_costs(deployment) and price_per_token(deployment, catalog) == (0.0, 0.0)
