"""Limits only narrow: a key's RPM/TPM stays within the org's default for keys, which stays
within the tier's; refused when a key is saved, and enforced by the data plane for keys
saved before the rule (tested in memory: test_dataplane_memory.py)."""

import httpx
import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from gateway import services
from gateway.models import ApiKey
from gateway.snapshot_builder import build_snapshot
from gateway.tests.conftest import ACTOR, refresh_snapshot
from orgs import services as org_services
from orgs.audit import Actor


def _messages(exc: ValidationError) -> str:
    return " ".join(exc.messages)


@pytest.mark.django_db
def test_a_member_cannot_create_a_key_wider_than_the_org_default(org_a, bob):
    services.gateway_config_set(actor=ACTOR, org=org_a, default_key_rpm=3, default_key_tpm=1000)
    member = Actor(user=bob, via="test")
    with pytest.raises(ValidationError) as refused:
        services.api_key_create(actor=member, org=org_a, name="wide", rpm_limit=100000)
    assert refused.value.message_dict == {
        "rpm_limit": [
            "rpm_limit: at most 3 requests per minute per key in this organization (org default)."
        ]
    }
    with pytest.raises(ValidationError) as refused:
        services.api_key_create(actor=member, org=org_a, name="wide", tpm_limit=1001)
    assert "tpm_limit: at most 1000 tokens per minute" in _messages(refused.value)
    assert not ApiKey.objects.exists()
    key, _raw = services.api_key_create(
        actor=member, org=org_a, name="narrow", rpm_limit=2, tpm_limit=1000
    )
    assert (key.rpm_limit, key.tpm_limit) == (2, 1000)


@pytest.mark.django_db
def test_the_tier_caps_keys_and_the_org_default(org_b, charlie):
    admin = Actor(user=charlie, via="test")  # an org admin: the same ceilings apply
    with pytest.raises(ValidationError) as refused:
        services.api_key_create(actor=admin, org=org_b, name="wide", rpm_limit=100000)
    assert "rpm_limit: at most 30 requests per minute per key on the Free tier." in _messages(
        refused.value
    )
    with pytest.raises(ValidationError) as refused:
        services.gateway_config_set(actor=admin, org=org_b, default_key_rpm=31)
    assert "default_key_rpm: at most 30 requests per minute per key on the Free tier." in (
        _messages(refused.value)
    )
    services.gateway_config_set(actor=admin, org=org_b, default_key_rpm=30)
    with pytest.raises(ValidationError):
        services.api_key_create(actor=admin, org=org_b, name="zero", rpm_limit=0)
    key, _raw = services.api_key_create(actor=admin, org=org_b, name="ok", rpm_limit=30)
    assert key.rpm_limit == 30


@pytest.mark.django_db
def test_the_rest_api_and_the_dashboard_refuse_a_wider_key(org_a, bob, bob_client):
    services.gateway_config_set(actor=ACTOR, org=org_a, default_key_rpm=3)
    response = bob_client.post(
        "/api/gateway/keys", {"name": "ci", "rpm_limit": 100000}, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json() == {
        "rpm_limit": [
            "rpm_limit: at most 3 requests per minute per key in this organization (org default)."
        ]
    }
    response = bob_client.post(
        reverse("keys", args=[org_a.slug]), {"name": "web", "rpm_limit": "100000"}
    )
    assert response.status_code == 400
    assert b"rpm_limit: at most 3 requests per minute per key" in response.content
    assert b'name="rpm_limit" type="number" min="1" max="3"' in response.content
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_the_snapshot_carries_a_key_saved_wider_with_the_limits_that_narrow_it(org_a):
    # A key saved before the rule (or whose org default was lowered since) keeps its value
    # in the database and the snapshot; the data plane applies the narrowest of the key's,
    # the org default's and the tier's (test_dataplane_memory.py tests that, in memory).
    key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="old")
    ApiKey.objects.filter(pk=key.pk).update(rpm_limit=100000, tpm_limit=10**9)
    services.gateway_config_set(actor=ACTOR, org=org_a, default_key_rpm=3, default_key_tpm=5000)
    org_services.org_update(actor=ACTOR, org=org_a, tier="free")  # a downgrade
    snap = build_snapshot()
    assert (snap.keys[key.key_hash].rpm, snap.keys[key.key_hash].tpm) == (100000, 10**9)
    org = snap.orgs[org_a.id]
    assert (org.key_rpm, org.key_tpm, org.tier) == (3, 5000, "free")


BODY = {"model": "chat-small", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def _post(acme):
    return httpx.post(
        acme.base_url + "/chat/completions",
        json=BODY,
        timeout=30,
        headers={"Authorization": f"Bearer {acme.raw}"},
    )


@pytest.mark.parametrize("whose", ["key", "org"])
def test_a_refusal_says_whose_limit_it_is_and_the_headers_describe_only_the_keys(acme, whose):
    # An enterprise org has no tier limit for keys: only the limit set here applies.
    org_services.org_update(actor=ACTOR, org=acme.org, tier="enterprise")
    if whose == "key":
        ApiKey.objects.filter(pk=acme.key.pk).update(rpm_limit=2)
    else:
        services.gateway_config_set(actor=ACTOR, org=acme.org, org_rpm_limit=2)
    refresh_snapshot()
    responses = [_post(acme) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    message = responses[2].json()["error"]["message"]
    if whose == "key":
        assert message.startswith("Rate limit reached: 2 requests per minute for this key. ")
        assert responses[0].headers["x-ratelimit-limit-requests"] == "2"
        assert responses[1].headers["x-ratelimit-remaining-requests"] == "0"
    else:
        assert message.startswith(
            "Rate limit reached: 2 org requests per minute for this organization. "
        )
        # OpenAI's x-ratelimit-* headers are the caller's (the key's) limits, not the org's.
        for response in responses:
            assert not [h for h in response.headers if h.startswith("x-ratelimit-")]
