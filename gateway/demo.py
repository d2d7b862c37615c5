"""The demo org's gateway set-up, used by `manage.py demo`."""

from .models import ProviderConnection
from .services import api_key_create, deployment_save, provider_save


def demo_gateway_setup(*, actor, org) -> str:
    """Mock provider with demo-chat and demo-embed; returns a fresh raw bn- key."""
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
    _key, raw = api_key_create(actor=actor, org=org, name="demo key")
    return raw
