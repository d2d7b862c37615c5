"""The demo org's gateway set-up, used by `manage.py demo`."""

from .models import ApiKey, ProviderConnection
from .services import api_key_create, api_key_revoke, deployment_save, provider_save

DEMO_KEY_NAME = "demo key"


def demo_gateway_setup(*, actor, org, new_key: bool = False) -> tuple[str | None, ApiKey]:
    """Mock provider with demo-chat and demo-embed, and the demo key. Idempotent: a second
    run changes nothing and keeps the demo key (its raw value was shown once, when made:
    the answer's raw key is None then); ``new_key`` revokes it and makes a new one."""
    provider = ProviderConnection.objects.for_org(org).filter(name="mock").first() or provider_save(
        actor=actor, org=org, name="mock", kind="mock"
    )
    deployment_save(
        actor=actor,
        org=org,
        model_name="demo-chat",
        provider=provider,
        upstream_model="mock-chat",
        priority=0,
    )
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
