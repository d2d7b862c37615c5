"""The demo org's gateway set-up, used by `manage.py demo`."""

from .models import ApiKey, Deployment, ProviderConnection
from .services import (
    api_key_create,
    api_key_revoke,
    deployment_save,
    gateway_config_set,
    provider_save,
)

DEMO_KEY_NAME = "demo key"
# The demo's two chat models, priced like a strong model and one at 1/20 of it, so that
# smart routing (`model: "auto"`) and its savings show on the Usage page at once.
DEMO_CHAT_PRICES = {"demo-chat": (2.5, 10.0), "demo-chat-mini": (0.125, 0.5)}


def demo_gateway_setup(*, actor, org, new_key: bool = False) -> tuple[str | None, ApiKey]:
    """Mock provider with demo-chat, demo-chat-mini and demo-embed, smart routing between
    the two chat models for `auto` (turned on once, when demo-chat-mini is first made: an
    admin's later change stays), and the demo key. Idempotent: a second run changes nothing
    and keeps the demo key (its raw value was shown once, when made: the answer's raw key
    is None then); ``new_key`` revokes it and makes a new one."""
    provider = ProviderConnection.objects.for_org(org).filter(name="mock").first() or provider_save(
        actor=actor, org=org, name="mock", kind="mock"
    )
    first_smart = not Deployment.objects.for_org(org).filter(model_name="demo-chat-mini").exists()
    for name, (price_in, price_out) in DEMO_CHAT_PRICES.items():
        deployment_save(
            actor=actor,
            org=org,
            model_name=name,
            provider=provider,
            upstream_model=name.replace("demo", "mock"),
            priority=0,
            input_price_per_mtok=price_in,
            output_price_per_mtok=price_out,
        )
    if first_smart:
        gateway_config_set(actor=actor, org=org, smart_tiers=["demo-chat-mini", "demo-chat"])
    deployment_save(
        actor=actor,
        org=org,
        model_name="demo-embed",
        provider=provider,
        upstream_model="mock-embed",
        priority=0,
    )
    kept = ApiKey.objects.for_org(org).active().filter(name=DEMO_KEY_NAME)
    if kept.exists() and not new_key:
        return None, kept.order_by("-id").first()
    for old in kept:
        api_key_revoke(actor=actor, key=old)
    key, raw = api_key_create(actor=actor, org=org, name=DEMO_KEY_NAME)
    return raw, key
