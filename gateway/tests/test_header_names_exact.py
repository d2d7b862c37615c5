"""A name in a response header (the model used, its provider, the smart tier) decodes
with urllib.parse.unquote to exactly that name: a name with % in it is percent-encoded
too, so `café€` and a model named `caf%C3%A9%E2%82%AC` give different headers, and `x%41y`
reads back as itself, not `xAy`. A plain ASCII name is sent as it is."""

from urllib.parse import unquote

import httpx
import pytest

from gateway import services
from gateway.asgi_v1 import header_value
from gateway.tests.conftest import ACTOR, refresh_snapshot

NAMES = ["café€", "caf%C3%A9%E2%82%AC", "x%41y", "100%", "plain-name"]


@pytest.mark.parametrize("name", [*NAMES, "модель", "a\r\nb", "%", "%%25", "a b~"])
def test_every_value_decodes_to_itself_and_plain_ascii_is_unchanged(name):
    sent = header_value(name)
    assert sent.isascii() and b"\r" not in sent and b"\n" not in sent
    assert unquote(sent.decode("ascii")) == name
    if name.isascii() and name.isprintable() and "%" not in name:
        assert sent == name.encode()


def _smart_key(acme, tiers) -> str:
    """An rt- key whose smart policy sends every prompt to the first of ``tiers``."""
    from governance import services as gov

    policy = gov.routing_policy_save(
        actor=ACTOR,
        org=acme.org,
        name="tiers",
        strategy="smart",
        models=tiers,
        smart={"thresholds": [0.999999]},
    )
    _key, raw = services.api_key_create(actor=ACTOR, org=acme.org, name="t", routing_policy=policy)
    refresh_snapshot()
    return raw


def _ask(acme, key, model, stream):
    with httpx.stream(
        "POST",
        acme.base_url + "/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream},
        timeout=20,
    ) as answer:
        answer.read()
    assert answer.status_code == 200, answer.text
    return answer.headers


@pytest.mark.parametrize("stream", [False, True])
def test_names_that_percent_encoding_could_confuse_read_back_exactly(acme, gw, stream):
    for name in NAMES:
        services.deployment_save(
            actor=ACTOR,
            org=acme.org,
            model_name=name,
            provider=acme.providers["fake"],
            upstream_model="gpt-4o-mini",
        )
    refresh_snapshot()
    seen = {}
    for name in NAMES:
        headers = _ask(acme, acme.raw, name, stream)
        assert unquote(headers["x-bonito-model-used"]) == name
        assert unquote(headers["x-bonito-provider"]) == "fake"
        seen[headers["x-bonito-model-used"]] = name
    assert len(seen) == len(NAMES)  # no two names share a header
    assert seen["plain-name"] == "plain-name"
    # The smart tier chosen: the two names that once gave the same header as tiers.
    headers = _ask(acme, _smart_key(acme, ["café€", "caf%C3%A9%E2%82%AC"]), "auto", stream)
    assert unquote(headers["x-bonito-route-tier"]) == "café€"
    assert headers["x-bonito-route-tier"] == "caf%C3%A9%E2%82%AC"
