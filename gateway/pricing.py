"""Prices: a deployment's override, else the catalog (LiteLLM's bundled price map)."""

import importlib.util
import json
import math
import re
from functools import cache
from pathlib import Path

from .dataplane.snapshot import SERVICE_TIERS


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
    if row is None or row[0] is None:  # (a row synced before tables had a base price)
        row = base_prices(litellm_price_map().get(upstream_model) or {})
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
    out = {}
    for name, entry in litellm_price_map().items():
        base = _number(entry.get("input_cost_per_token")) if isinstance(entry, dict) else None
        if not base:
            continue
        ratios = tuple(
            None if v is None else v / base
            for v in (_number(entry.get(f)) for f in _STEP_FIELDS[2:])
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


# A price that changes with the prompt's size: "input_cost_per_token_above_200k_tokens" and its
# output, cache read and cache write siblings (Gemini, Claude's 1M context, GPT-5.x above 272k),
# and the same for a service tier ("..._above_272k_tokens_priority").
_ABOVE = re.compile(
    r"^(?P<kind>input_cost_per_token|output_cost_per_token|cache_read_input_token_cost"
    r"|cache_creation_input_token_cost_above_1hr|cache_creation_input_token_cost)"
    r"_above_(?P<n>\d+)(?P<k>k?)_tokens(?:_(?P<tier>[a-z]+))?$"
)
_STEP_FIELDS = (
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "cache_creation_input_token_cost_above_1hr",
)
# Providers that bill the dearer prices from a prompt of exactly the threshold on (LiteLLM's
# rule: xAI); everyone else from one token over it.
_INCLUSIVE = frozenset({"xai"})


def _number(v) -> float | None:
    """A price or token count from the map: a finite number, 0 or more, else None."""
    if isinstance(v, bool):
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v >= 0 else None


def _table(entry: dict) -> list[tuple[float, float, dict]]:
    """Alibaba's ``tiered_pricing`` rows that LiteLLM can pick: (start, end, prices) sorted
    by start, the prices those of _STEP_FIELDS (a row's read and write default to its input
    price, its output to the model's)."""
    rows = []
    for row in entry.get("tiered_pricing") or ():
        rng = row.get("range") if isinstance(row, dict) else None
        if not isinstance(rng, list | tuple) or len(rng) != 2:
            continue
        start, end, inp = _number(rng[0]), _number(rng[1]), _number(row.get("input_cost_per_token"))
        if start is None or end is None or inp is None:
            continue
        prices = {f: _number(row.get(f)) for f in _STEP_FIELDS}
        for f in _STEP_FIELDS[2:4]:
            prices[f] = inp if prices[f] is None else prices[f]
        if prices["output_cost_per_token"] is None:
            prices["output_cost_per_token"] = _number(entry.get("output_cost_per_token")) or 0.0
        rows.append((start, end, prices))
    return sorted(rows, key=lambda r: r[0])


def base_prices(entry: dict) -> tuple[float | None, float | None]:
    """A map entry's (input, output) price per token: its own, else (a model priced only by
    a table of prompt sizes) its smallest prompts' row's."""
    inp, out = (
        _number(entry.get("input_cost_per_token")),
        _number(entry.get("output_cost_per_token")),
    )
    if inp is None:
        table = _table(entry)
        if table:
            inp = table[0][2]["input_cost_per_token"]
            out = table[0][2]["output_cost_per_token"] if out is None else out
    return inp, out


def _table_steps(table) -> dict[int, dict]:
    """Steps (more than this many prompt tokens -> prices) that pick the row LiteLLM picks for
    each prompt size: the first row (by start) with start < tokens <= end, else the last."""
    bounds = sorted({0.0} | {r[0] for r in table} | {r[1] for r in table})
    steps = {}
    for b in bounds:
        t = math.floor(b) + 1  # every prompt size up to the next bound picks the same row
        row = next((r for r in table if r[0] < t <= r[1]), table[-1])
        steps[math.floor(b)] = row[2]
    return steps


def _ratio_steps(entry: dict, tier: str = "") -> tuple:
    """One map entry's price steps by the prompt's size, as shares of its base prices
    (base_prices): a tuple of (more than this many prompt tokens, input, output, cache read,
    cache write, 1-hour cache write), ascending; input-side prices as a share of the base
    input price, output of the base output price; None: as the step's input (reads, writes)
    or as any write (1 hour). For a service ``tier`` the first step (-1 tokens) is the
    tier's base prices; a price the tier does not set is the standard one. LiteLLM's rules
    throughout (llm_cost_calc/utils.py: _get_token_base_cost, _get_tiered_base_costs)."""
    base_in, base_out = base_prices(entry)
    table = _table(entry)
    if not base_in or (tier and table):
        return ()  # a table prices every service tier alike

    def price(name: str):
        value = _number(entry.get(f"{name}_{tier}")) if tier else None
        return value if value is not None else _number(entry.get(name))

    start = {f: price(f) for f in _STEP_FIELDS[:4]}
    start[_STEP_FIELDS[4]] = _number(entry.get(_STEP_FIELDS[4]))  # not priced by tier
    if start["input_cost_per_token"] is None and not table:
        return ()
    if table:  # a table, where it has a row, is all that prices the request
        found = _table_steps(table)
    else:
        inclusive = entry.get("litellm_provider") in _INCLUSIVE
        found = {-1: {}} if tier else {}
        for name, value in entry.items():
            m = _ABOVE.match(name)
            if m and m["tier"] in (None, tier or None) and _number(value) is not None:
                n = int(m["n"]) * (1000 if m["k"] else 1)
                step = found.setdefault(n - 1 if inclusive else n, {})
                if m["tier"] or m["kind"] not in step:  # the tier's own price wins
                    step[m["kind"]] = _number(value)
    steps = []
    current = dict(start)
    for threshold in sorted(found):
        # A price a step does not set keeps the one below it (the base, or the tier's).
        current.update(found[threshold])
        inp, out, read, write, hour = (current[f] for f in _STEP_FIELDS)
        steps.append(
            (
                threshold,
                inp / base_in,
                out / base_out if base_out else 0.0,  # no base output to scale: as the base
                *(None if v is None else v / base_in for v in (read, write, hour)),
            )
        )
    return tuple(steps)


def _scaled(steps: tuple, input_cost: float, output_cost: float) -> tuple:
    return tuple(
        (
            threshold,
            input_cost * inp,
            output_cost * out,
            *(None if r is None else input_cost * r for r in rest),
        )
        for threshold, inp, out, *rest in steps
    )


@cache
def _ratio_schedules() -> dict[str, dict[str, tuple]]:
    """upstream model -> {"": its prompt-size steps, "priority": that tier's schedule, …}
    for the models whose price depends on more than the token counts."""
    out = {}
    tiers = sorted(set(SERVICE_TIERS.values()))
    for name, entry in litellm_price_map().items():
        if not isinstance(entry, dict):
            continue
        try:
            schedules = {"": _ratio_steps(entry)}
            for tier in tiers:
                if any(f.endswith(f"_{tier}") for f in entry):
                    schedules[tier] = _ratio_steps(entry, tier)
        except (TypeError, ValueError, OverflowError, AttributeError):
            continue  # an entry the map got wrong: its base prices only, never a crash
        schedules = {t: steps for t, steps in schedules.items() if steps}
        if schedules:
            out[name] = schedules
    return out


def context_prices(upstream_model: str, input_cost: float, output_cost: float) -> tuple:
    """The deployment's prices by the prompt's size, where its provider charges more (or
    less) for a longer prompt: a tuple of (more than this many prompt tokens, then every
    token of the request at: input, output, cache read, cache write, 1-hour cache write),
    ascending; () where one price holds for every size. Like cache_prices they keep the
    catalog's ratios to the base prices, so a deployment's override moves them with it."""
    steps = _ratio_schedules().get(upstream_model, {}).get("", ())
    return _scaled(steps, input_cost, output_cost)


def tier_prices(upstream_model: str, input_cost: float, output_cost: float) -> dict:
    """The deployment's prices in each service tier its provider prices apart (OpenAI's
    flex at half the price, priority at about 1.75x…): tier -> its schedule, shaped like
    context_prices but whose first step (-1 tokens) holds for every prompt."""
    return {
        tier: _scaled(steps, input_cost, output_cost)
        for tier, steps in _ratio_schedules().get(upstream_model, {}).items()
        if tier
    }


def audio_prices(upstream_model: str, input_cost: float, output_cost: float) -> dict:
    """USD per audio token of the prompt and of the output, by service tier ("" standard,
    then the tiers whose audio input is priced apart), where LiteLLM's map prices audio
    apart from text (gpt-audio, gpt-4o-audio, Gemini's audio input): tier -> (input,
    output), None for either that is priced as text. Like cache_prices they keep the
    catalog's ratio to the base prices, so an override moves them with it. An audio token
    keeps its price at any prompt size, as LiteLLM prices it."""
    entry = litellm_price_map().get(upstream_model)
    if not isinstance(entry, dict):
        return {}
    base_in, base_out = base_prices(entry)
    audio_out = _number(entry.get("output_cost_per_audio_token"))
    audio_out = None if audio_out is None or not base_out else output_cost * audio_out / base_out

    def audio_in(name: str) -> float | None:
        price = _number(entry.get(name))
        return None if price is None or not base_in else input_cost * price / base_in

    standard = (audio_in("input_cost_per_audio_token"), audio_out)
    out = {"": standard} if standard != (None, None) else {}
    for tier in sorted(set(SERVICE_TIERS.values())):
        own = audio_in(f"input_cost_per_audio_token_{tier}")
        if own is not None:
            out[tier] = (own, audio_out)
    if out and "" not in out:
        out[""] = standard
    return out


def search_price(upstream_model: str) -> float | None:
    """USD per web search the provider runs for a request (Anthropic's web search tool: $10
    per 1,000; OpenAI's search models and web_search tool; Gemini's grounding), from
    LiteLLM's map (its medium search-context price, as LiteLLM bills a search when the
    request names no size; every provider Bonito calls has one price for every size); None
    where the map has none."""
    entry = litellm_price_map().get(upstream_model)
    prices = entry.get("search_context_cost_per_query") if isinstance(entry, dict) else None
    price = prices.get("search_context_size_medium") if isinstance(prices, dict) else prices
    return _number(price) or None


def takes_images(upstream_model: str) -> bool | None:
    """Whether the model reads images, as LiteLLM's map says (supports_vision); None where
    it does not say (a model it does not know: vLLM's, a fine-tune, the mock)."""
    entry = litellm_price_map().get(upstream_model)
    value = entry.get("supports_vision") if isinstance(entry, dict) else None
    return value if isinstance(value, bool) else None


def context_window(upstream_model: str) -> int:
    """The most prompt tokens the model reads, from LiteLLM's map (0 where it has none)."""
    entry = litellm_price_map().get(upstream_model)
    value = entry.get("max_input_tokens") if isinstance(entry, dict) else None
    return int(value) if isinstance(value, int | float) and value > 0 else 0


# The providers whose web searches (grounding with Google Search) LiteLLM prices by its
# Gemini calculators: once per grounded prompt unless the map says per_query (Gemini 3).
_GROUNDING_PROVIDERS = ("gemini", "vertex_ai", "vertex_ai-language-models")


def search_per_prompt(upstream_model: str) -> bool:
    """Whether the provider bills its web searches once per request that searched, however
    many queries it ran (Gemini 2.x grounding), not per search."""
    entry = litellm_price_map().get(upstream_model)
    if not isinstance(entry, dict) or entry.get("litellm_provider") not in _GROUNDING_PROVIDERS:
        return False
    return (entry.get("web_search_billing_unit") or "per_prompt") == "per_prompt"


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
