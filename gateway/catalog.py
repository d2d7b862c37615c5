"""Seeding the model catalog from LiteLLM's bundled price map."""

from django.db import transaction

from .pricing import base_prices, litellm_price_map

CHAT_MODES = {"chat", "responses"}  # catalog modes of models that answer chat completions


def _int(value):
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


@transaction.atomic
def model_catalog_sync(model_class=None) -> int:
    from .models import ModelCatalogEntry

    model_class = model_class or ModelCatalogEntry
    rows = []
    for name, entry in litellm_price_map().items():
        if not isinstance(entry, dict) or len(name) > 255:
            continue
        input_cost, output_cost = base_prices(entry)
        rows.append(
            model_class(
                name=name,
                provider=str(entry.get("litellm_provider") or "")[:100],
                mode=str(entry.get("mode") or "")[:50],
                input_cost_per_token=input_cost,
                output_cost_per_token=output_cost,
                max_input_tokens=_int(entry.get("max_input_tokens")),
                max_output_tokens=_int(entry.get("max_output_tokens")),
            )
        )
    model_class.objects.bulk_create(
        rows,
        batch_size=500,
        update_conflicts=True,
        unique_fields=["name"],
        update_fields=[
            "provider",
            "mode",
            "input_cost_per_token",
            "output_cost_per_token",
            "max_input_tokens",
            "max_output_tokens",
        ],
    )
    return len(rows)


def answers_chat(model_name: str, upstream_model: str, modes: dict) -> bool:
    """Whether a deployment answers chat: its catalog mode (``modes``: catalog name ->
    mode) says so, or the catalog does not know it and its names do not say it embeds."""
    mode = modes.get(upstream_model) or modes.get(model_name)
    if mode:
        return mode in CHAT_MODES
    return "embed" not in f"{model_name} {upstream_model}".lower()
