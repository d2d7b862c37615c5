"""The demo org's gateway set-up, used by `manage.py demo`."""

from .services import api_key_create


def demo_gateway_setup(*, actor, org) -> str:
    """Give the demo org what it needs to answer at once; returns a fresh raw bn- key."""
    _key, raw = api_key_create(actor=actor, org=org, name="demo key")
    return raw
