"""Key format and the routing strategies (pure data-plane behaviour), plus rt- keys and
fallback models through a live gateway."""

import collections
import dataclasses
import random

import openai
import orjson
import pytest

from core import keys
from gateway.dataplane import routing
from gateway.dataplane.snapshot import (
    Block,
    DeploymentInfo,
    RoutingPolicyInfo,
    snapshot_from_dict,
    snapshot_to_dict,
)
from gateway.tests.conftest import ACTOR, refresh_snapshot, usage_rows
from gateway.tests.fake_upstream import Behaviour


def test_a_key_has_over_128_random_bits_and_a_checksum():
    raw = keys.generate("bn-")
    assert raw.startswith("bn-") and keys.well_formed(raw)
    assert (keys.BODY_LEN * 5.954) > 128  # log2(62) bits per character
    assert len({keys.generate() for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    "mutation",
    [
        lambda k: k[:-1] + ("0" if k[-1] != "0" else "1"),  # checksum
        lambda k: k[:5] + ("a" if k[5] != "a" else "b") + k[6:],  # body
        lambda k: k + "x",
        lambda k: "sk-" + k[3:],
        lambda k: k.replace("bn-", "rt-"),
    ],
)
def test_a_mangled_key_is_not_well_formed(mutation):
    assert not keys.well_formed(mutation(keys.generate("bn-")))


def test_keys_are_stored_as_hmac_and_shown_as_prefix_and_last4():
    raw = keys.generate("bn-")
    digest = keys.digest(raw, b"secret")
    assert raw not in digest and len(digest) == 64
    assert keys.digest(raw, b"other") != digest
    prefix, last4 = keys.display(raw)
    assert raw.startswith(prefix) and raw.endswith(last4) and len(prefix) == 7


def _dep(i, **kw):
    return DeploymentInfo(
        id=i, model="m", provider=f"p{i}", kind="openai", upstream_model=f"u{i}", **kw
    )


def test_failover_keeps_the_listed_order_and_moves_cooling_deployments_last():
    health = routing.DeploymentHealth()
    deps = [_dep(1), _dep(2), _dep(3)]
    assert [d.id for d in routing.order("failover", deps, health)] == [1, 2, 3]
    for _ in range(routing.FAILURES_TO_OPEN):
        health.failure(1)
    assert [d.id for d in routing.order("failover", deps, health)] == [2, 3, 1]
    health.success(1, 10)
    assert [d.id for d in routing.order("failover", deps, health)] == [1, 2, 3]


def test_a_retry_after_cools_a_deployment_at_once():
    health = routing.DeploymentHealth()
    health.failure(1, retry_after_s=5)
    assert health.cooling(1)


def test_round_robin_rotates():
    health = routing.DeploymentHealth()
    firsts = [
        routing.order("round_robin", [_dep(1), _dep(2), _dep(3)], health)[0].id for _ in range(6)
    ]
    assert firsts == [1, 2, 3, 1, 2, 3]


def test_weighted_follows_the_weights():
    health = routing.DeploymentHealth()
    deps = [_dep(1, weight=9), _dep(2, weight=1)]
    counts = collections.Counter(routing.order("weighted", deps, health)[0].id for _ in range(2000))
    assert 0.85 < counts[1] / 2000 < 0.95


def test_cost_optimized_picks_the_cheapest():
    deps = [_dep(1, input_cost=3e-6, output_cost=1e-5), _dep(2, input_cost=1e-7, output_cost=4e-7)]
    assert routing.order("cost_optimized", deps, routing.DeploymentHealth())[0].id == 2


def test_latency_optimized_picks_the_fastest_observed():
    health = routing.DeploymentHealth()
    health.success(1, 300)
    health.success(2, 40)
    assert routing.order("latency_optimized", [_dep(1), _dep(2)], health)[0].id == 2


def test_least_busy_picks_the_fewest_in_flight():
    health = routing.DeploymentHealth()
    health.get(1).in_flight = 4
    health.get(2).in_flight = 1
    assert routing.order("least_busy", [_dep(1), _dep(2)], health)[0].id == 2


def test_snapshot_survives_a_json_round_trip_without_credentials(acme):
    from gateway import runtime

    snap = runtime.snapshots().current
    blocked = {"org": Block("The monthly budget is spent.", 1.9e9), "key:7": Block("Spent.", 2e9)}
    org = dataclasses.replace(snap.orgs[acme.org.id], blocked=blocked)
    snap = dataclasses.replace(snap, orgs={**snap.orgs, acme.org.id: org})
    data = orjson.loads(orjson.dumps(snapshot_to_dict(snap)))  # as the agent receives it
    assert "sk-fake-upstream-credential" not in str(data)
    again = snapshot_from_dict(data, snap.hash_secret)
    assert again.keys == snap.keys
    org = again.orgs[acme.org.id]
    assert org.blocked == blocked
    assert [d.upstream_model for d in org.deployments["ha-chat"]] == [
        "primary-model",
        "secondary-model",
    ]


def test_an_rt_key_routes_through_its_policy(acme, gw):
    from gateway import services
    from governance import services as gov

    policy = gov.routing_policy_save(
        actor=ACTOR, org=acme.org, name="ha", strategy="failover", models=["ha-chat", "chat-small"]
    )
    key, raw = services.api_key_create(
        actor=ACTOR, org=acme.org, name="router", routing_policy=policy
    )
    assert raw.startswith("rt-") and key.kind == "rt"
    refresh_snapshot()
    acme.fake.behaviours["primary-model"] = Behaviour(status=500)
    acme.fake.behaviours["secondary-model"] = Behaviour(status=500)
    client = openai.OpenAI(base_url=acme.base_url, api_key=raw, max_retries=0)
    response = client.chat.completions.with_raw_response.create(
        model="anything", messages=[{"role": "user", "content": "x"}]
    )
    assert response.headers["x-bonito-model-used"] == "chat-small"  # the policy's second model
    assert sorted(m.id for m in client.models.list()) == ["chat-small", "ha-chat"]
    [row] = [r for r in usage_rows(acme.org) if r.endpoint == "chat"]
    assert (row.model_requested, row.model_used) == ("anything", "chat-small")


def test_a_weighted_routing_policy_splits_traffic_by_its_weights(acme, gw):
    """Issue 13: the policy's weights were stored but routing read only Deployment.weight."""
    from gateway import services
    from governance import services as gov

    weights = {"chat-small": 90, "ha-chat": 10}
    policy = gov.routing_policy_save(
        actor=ACTOR,
        org=acme.org,
        name="ab",
        strategy="weighted",
        models=list(weights),
        weights=weights,
    )
    _key, raw = services.api_key_create(actor=ACTOR, org=acme.org, name="ab", routing_policy=policy)
    refresh_snapshot()
    gw.health = routing.DeploymentHealth(rng=random.Random(13))  # reproducible draws
    client = openai.OpenAI(base_url=acme.base_url, api_key=raw, max_retries=0)
    n = 250  # within the Pro tier's 300 requests a minute per key
    served, ha_providers = collections.Counter(), set()
    for _ in range(n):
        response = client.chat.completions.with_raw_response.create(
            model="ab", messages=[{"role": "user", "content": "x"}]
        )
        served[response.headers["x-bonito-model-used"]] += 1
        if response.headers["x-bonito-model-used"] == "ha-chat":
            ha_providers.add(response.headers["x-bonito-provider"])
    assert set(served) == set(weights)
    assert abs(served["chat-small"] / n - 0.9) < 0.06, served
    # ha-chat's two deployments share its tenth by their own weights (1 each).
    assert ha_providers == {"fake", "fake2"}
    upstreams = collections.Counter(
        r.model_used for r in usage_rows(acme.org) if r.endpoint == "chat"
    )
    assert upstreams == served


@pytest.mark.django_db
def test_the_snapshot_carries_the_scopes_the_data_plane_applies(org_a):
    # What the policy, gateway config, deployments and keys say, as the data plane reads it
    # (how it applies them is tested in memory: test_dataplane_memory.py).
    from gateway import services
    from gateway.snapshot_builder import build_snapshot
    from governance import services as gov

    mock = services.provider_save(actor=ACTOR, org=org_a, name="mock", kind="mock")
    services.deployment_save(
        actor=ACTOR,
        org=org_a,
        model_name="chat",
        provider=mock,
        upstream_model="mock-chat",
        region="eu-west-1",
    )
    gov.policy_set(
        actor=ACTOR,
        org=org_a,
        allowed_models=["chat"],
        denied_models=["risky"],
        denied_providers=["fake2"],
        allowed_regions=["eu-west-1"],
    )
    services.gateway_config_set(actor=ACTOR, org=org_a, fallback_models=["chat"])
    key, _raw = services.api_key_create(
        actor=ACTOR, org=org_a, name="scoped", allowed_models=["chat"], allowed_providers=["mock"]
    )
    snap = build_snapshot()
    org = snap.orgs[org_a.id]
    assert (org.allowed_models, org.denied_models) == ({"chat"}, {"risky"})
    assert (org.denied_providers, org.allowed_regions) == ({"fake2"}, {"eu-west-1"})
    assert org.fallback_models == ("chat",)
    [dep] = org.deployments["chat"]
    assert (dep.provider, dep.kind, dep.region) == ("mock", "mock", "eu-west-1")
    scoped = snap.keys[key.key_hash]
    assert (scoped.allowed_models, scoped.allowed_providers) == ({"chat"}, {"mock"})


def test_a_newer_control_planes_unknown_fields_are_ignored_not_a_crash(acme):
    """An agent older than its control plane reads a document with fields it does not know
    (in the snapshot's keys, orgs, deployments, routing policies and blocks): it keeps what
    it knows and serves, instead of failing every config pull."""
    from gateway import runtime

    snap = runtime.snapshots().current
    blocked = {"org": Block("The monthly budget is spent.", 1.9e9)}
    policy = RoutingPolicyInfo("spread", "weighted", ("chat-small",), {"chat-small": 3})
    org = dataclasses.replace(
        snap.orgs[acme.org.id], blocked=blocked, routing_policies={"spread": policy}
    )
    snap = dataclasses.replace(snap, orgs={**snap.orgs, acme.org.id: org})
    data = orjson.loads(orjson.dumps(snapshot_to_dict(snap)))
    for key in data["keys"].values():
        key["added_in_a_later_release"] = 1
    for o in data["orgs"].values():
        o["added_in_a_later_release"] = {"x": 1}
        for b in o["blocked"].values():
            b["added_in_a_later_release"] = True
        for deps in o["deployments"].values():
            for d in deps:
                d["added_in_a_later_release"] = "y"
        for p in o["routing_policies"].values():
            p["added_in_a_later_release"] = []
    again = snapshot_from_dict(data, snap.hash_secret)
    assert again.keys == snap.keys
    assert again.orgs[acme.org.id].blocked == blocked

    def shape(o):  # credentials are not in the document
        return {m: [(d.id, d.upstream_model, d.api_base) for d in ds] for m, ds in o.items()}

    assert shape(again.orgs[acme.org.id].deployments) == shape(snap.orgs[acme.org.id].deployments)
    assert again.orgs[acme.org.id].routing_policies == {"spread": policy}
