"""The /v1 data plane on its own, in memory: a Gateway over a Snapshot built here, limits
on per-process counters (no Redis), a usage sink writing to a list, and the fake upstream
served over a socket pair (real HTTP from the gateway's own client, no port). No database,
no server: the module runs in a few seconds.

Each test drives ``Gateway.handle(Incoming(...))`` as the ASGI app does and checks what a
client sees (status, OpenAI-shaped error, headers, SSE), what the provider was sent, and
the usage records."""

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from core import keys
from core.months import month_key
from gateway.dataplane.limits import Limiter
from gateway.dataplane.proxy import Gateway, Incoming, Outgoing
from gateway.dataplane.routing import FAILURES_TO_OPEN
from gateway.dataplane.snapshot import (
    Block,
    DeploymentInfo,
    KeyInfo,
    OrgInfo,
    RoutingPolicyInfo,
    Snapshot,
)
from gateway.dataplane.state import SnapshotSource
from gateway.dataplane.upstream import Upstreams
from gateway.dataplane.usage import UsageSink
from gateway.tests.fake_upstream import IN_MEMORY_URL, Behaviour, FakeUpstream
from gateway.tests.fault.redis_server import RedisServer

SECRET = b"in-memory-test-hash-secret"
ORG = 7
APP = keys.generate("bn-")  # the raw key most tests send
UPSTREAM_CREDENTIAL = "sk-upstream-credential-never-shown"
# What the fake upstream reports for a chat (FakeUpstream: 11 prompt tokens, 5 words).
PROMPT_TOKENS, COMPLETION_TOKENS = 11, 5


def key_info(raw: str, id: int, **fields) -> KeyInfo:
    return KeyInfo(id=id, org_id=ORG, name=f"key {id}", hash=keys.digest(raw, SECRET), **fields)


def deployment(id: int, model: str, upstream_model: str, **fields) -> DeploymentInfo:
    fields = {"provider": "fake", "input_cost": 1e-6, "output_cost": 2e-6, **fields}
    return DeploymentInfo(
        id=id,
        model=model,
        kind="openai_compatible",
        upstream_model=upstream_model,
        api_base=IN_MEMORY_URL,
        credentials={"api_key": UPSTREAM_CREDENTIAL},
        **fields,
    )


def acme(**fields) -> OrgInfo:
    """The org of these tests: one plain model, one with two deployments (primary first by
    priority, a dearer secondary on another connection and in another region), one
    embedding model."""
    deployments = {
        "chat": (deployment(1, "chat", "gpt-4o-mini"),),
        "ha-chat": (
            deployment(2, "ha-chat", "primary-model", priority=0, region="us-east-1"),
            deployment(
                3,
                "ha-chat",
                "secondary-model",
                provider="fake2",
                region="eu-west-1",
                priority=1,
                input_cost=3e-6,
                output_cost=4e-6,
            ),
        ),
        "embed": (deployment(4, "embed", "text-embedding-3-small"),),
    }
    return OrgInfo(
        **{"id": ORG, "slug": "acme", "tier": "enterprise", "deployments": deployments, **fields}
    )


# The tier table's default ceilings for every key (orgs.TierLimit.key_rpm), as the snapshot
# carries them in OrgInfo.tier_key_rpm.
TIER_KEY_RPM = {"free": 30, "pro": 300, "enterprise": None}


def tiered(tier: str, **fields) -> OrgInfo:
    return acme(tier=tier, tier_key_rpm=TIER_KEY_RPM[tier], **fields)


def chat(model: str = "chat", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}


class Rig:
    """One Gateway, its snapshot source, the fake upstream and the records written."""

    def __init__(self, gateway: Gateway, upstream: FakeUpstream, rows: list):
        self.gateway, self.upstream, self.rows = gateway, upstream, rows
        self.version = 0
        self.publish()

    def publish(self, org: OrgInfo | None = None, *extra_keys: KeyInfo, app: KeyInfo | None = None):
        """A new snapshot (the default org and APP key unless given), live from the next request."""
        self.version += 1
        all_keys = [app or key_info(APP, 1), *extra_keys]
        org = org or acme()
        self.gateway.snapshots.publish(
            Snapshot(
                version=self.version,
                keys={k.hash: k for k in all_keys},
                orgs={org.id: org},
                hash_secret=SECRET,
                built_at=time.time(),
            )
        )

    async def send(
        self,
        body: dict | bytes | None = None,
        *,
        raw: str | None = APP,
        endpoint: str = "chat",
        headers: dict | None = None,
        **incoming,
    ) -> Outgoing:
        head = {"authorization": f"Bearer {raw}"} if raw is not None else {}
        head.update(headers or {})
        payload = (
            body if isinstance(body, bytes) else orjson.dumps(chat() if body is None else body)
        )
        return await self.gateway.handle(
            Incoming(endpoint=endpoint, headers=head, body=payload, **incoming)
        )

    def records(self) -> list[dict]:
        assert self.gateway.sink.flush(5)
        return list(self.rows)

    def models_called(self) -> list[str]:
        return [r["body"]["model"] for r in self.upstream.requests]


@pytest.fixture
async def rig(tmp_path):
    upstream = FakeUpstream()
    connector = await upstream.serve_in_memory()
    rows: list[dict] = []
    sink = UsageSink(rows.extend, tmp_path / "spool", flush_interval=0.01)
    gateway = Gateway(
        snapshots=SnapshotSource(),
        limiter=Limiter(),  # no REDIS_URL: per-process counters
        sink=sink,
        upstreams=Upstreams(connector=connector),
        backoff_s=0.001,
    )
    yield Rig(gateway, upstream, rows)
    await gateway.upstreams.http.close_loop_session()
    await upstream.stop_in_memory()
    sink.stop()


async def body_of(out: Outgoing) -> bytes:
    if out.stream is None:
        return out.body
    return b"".join([chunk async for chunk in out.stream])


def error_of(out: Outgoing) -> dict:
    """The OpenAI error object, checked for its exact shape."""
    assert out.headers["Content-Type"] == "application/json"
    data = orjson.loads(out.body)
    assert list(data) == ["error"]
    assert set(data["error"]) == {"message", "type", "param", "code"}
    assert isinstance(data["error"]["message"], str) and data["error"]["message"]
    return data["error"]


def sse_events(raw: bytes) -> list:
    events = [e for e in raw.split(b"\n\n") if e]
    assert all(e.startswith(b"data: ") for e in events), events
    return [e[6:] if e == b"data: [DONE]" else orjson.loads(e[6:]) for e in events]


# ---------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing", "didn't provide an API key"),
        ("malformed", "Incorrect API key"),
        ("unknown", "Incorrect API key"),
        ("other_secret", "Incorrect API key"),
        ("revoked", "has been revoked"),
        ("expired", "expired on"),
        ("org_gone", "Incorrect API key"),
    ],
)
async def test_a_request_without_a_valid_key_is_refused_with_401_and_goes_nowhere(
    rig, case, message
):
    raw = keys.generate("bn-")
    if case == "missing":
        raw = None
    elif case == "malformed":
        raw = "bn-not-a-key"
    elif case == "other_secret":  # a key whose hash was made under another secret
        rig.publish(None, KeyInfo(id=2, org_id=ORG, name="x", hash=keys.digest(raw, b"other")))
    elif case == "revoked":
        rig.publish(None, key_info(raw, 2, revoked=True))
    elif case == "expired":
        rig.publish(None, key_info(raw, 2, expires_at=time.time() - 1))
    elif case == "org_gone":
        rig.publish(None, replace(key_info(raw, 2), org_id=ORG + 1))
    out = await rig.send(raw=raw)
    assert out.status == 401
    error = error_of(out)
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
    assert message in error["message"]
    assert out.headers["x-request-id"]
    assert rig.upstream.requests == []
    assert rig.records() == []  # no key: nobody to record it against


async def test_a_key_is_read_from_either_header_and_works_until_it_expires(rig):
    raw = keys.generate("bn-")
    rig.publish(None, key_info(raw, 2, expires_at=time.time() + 60))
    assert (await rig.send(raw=raw)).status == 200
    assert (await rig.send(raw=None, headers={"api-key": raw})).status == 200  # Azure style
    assert [r["key_id"] for r in rig.records()] == [2, 2]


async def test_a_published_snapshot_applies_from_the_next_request(rig):
    assert (await rig.send()).status == 200
    rig.publish(app=key_info(APP, 1, revoked=True))
    assert (await rig.send()).status == 401
    rig.publish()
    assert (await rig.send()).status == 200


async def test_a_gateway_without_a_snapshot_answers_503_until_one_is_published(rig):
    rig.gateway.snapshots = SnapshotSource()  # nothing published, nothing to start
    out = await rig.send()
    assert out.status == 503 and error_of(out)["code"] == "gateway_not_ready"
    assert out.headers["Retry-After"] == "1"


async def test_the_first_request_starts_the_publisher_once_and_waits_for_it(rig):
    started = []
    snapshot = rig.gateway.snapshots.current

    def starter():
        started.append(1)
        source.publish(snapshot)

    source = rig.gateway.snapshots = SnapshotSource(starter=starter)
    assert (await rig.send()).status == 200
    assert (await rig.send()).status == 200
    assert started == [1]


async def test_the_playground_key_acts_for_its_org_without_a_bearer(rig):
    # Server code (the Playground) hands the key it read from the database; a key the
    # snapshot does not have yet works, a revoked one does not.
    fresh = key_info(keys.generate("bn-"), 9)
    out = await rig.send(raw=None, key=fresh)
    assert out.status == 200 and out.cost == pytest.approx(
        PROMPT_TOKENS * 1e-6 + COMPLETION_TOKENS * 2e-6
    )
    assert (await rig.send(raw=None, key=replace(fresh, revoked=True))).status == 401
    assert [r["key_id"] for r in rig.records()] == [9]


# ---------------------------------------------------------------------------- policy


@pytest.mark.parametrize(
    "org_fields,key_fields,model,status,code",
    [
        ({"allowed_models": frozenset({"embed"})}, {}, "chat", 403, "model_not_permitted"),
        (  # deny wins over allow
            {"allowed_models": frozenset({"chat"}), "denied_models": frozenset({"chat"})},
            {},
            "chat",
            403,
            "model_not_permitted",
        ),
        ({}, {"allowed_models": frozenset({"embed"})}, "chat", 403, "model_not_permitted"),
        (  # a key narrows the org's policy, never widens it
            {"denied_models": frozenset({"chat"})},
            {"allowed_models": frozenset({"chat"})},
            "chat",
            403,
            "model_not_permitted",
        ),
        ({"denied_providers": frozenset({"fake"})}, {}, "chat", 403, "model_not_permitted"),
        ({"allowed_providers": frozenset({"fake2"})}, {}, "chat", 403, "model_not_permitted"),
        ({"enabled_providers": frozenset({"fake2"})}, {}, "chat", 403, "model_not_permitted"),
        ({"allowed_regions": frozenset({"eu-west-1"})}, {}, "chat", 403, "model_not_permitted"),
        ({}, {"allowed_providers": frozenset({"fake2"})}, "chat", 403, "model_not_permitted"),
        ({}, {}, "no-such-model", 404, "model_not_found"),
    ],
)
async def test_policy_refuses_before_any_provider_is_called(
    rig, org_fields, key_fields, model, status, code
):
    rig.publish(acme(**org_fields), app=key_info(APP, 1, **key_fields))
    out = await rig.send(chat(model))
    assert out.status == status
    error = error_of(out)
    assert error["code"] == code and error["param"] == "model"
    assert rig.upstream.requests == []
    (record,) = rig.records()
    assert record["status"] == "rejected" and record["http_status"] == status
    assert record["model_requested"] == model and record["cost"] == 0


@pytest.mark.parametrize(
    "org_fields,key_fields",
    [
        ({"denied_providers": frozenset({"fake"})}, {}),
        ({"allowed_providers": frozenset({"fake2"})}, {}),
        ({}, {"allowed_providers": frozenset({"fake2"})}),
        ({}, {"allowed_providers": frozenset({"openai_compatible"})}),  # a kind names all
        ({"allowed_regions": frozenset({"eu-west-1"})}, {}),
    ],
)
async def test_only_the_deployments_a_policy_allows_are_called(rig, org_fields, key_fields):
    rig.publish(acme(**org_fields), app=key_info(APP, 1, **key_fields))
    rig.upstream.behaviours["primary-model"] = Behaviour(status=500)
    out = await rig.send(chat("ha-chat"))
    allowed_kind = key_fields.get("allowed_providers") == frozenset({"openai_compatible"})
    assert out.status == 200
    assert rig.models_called() == (
        ["primary-model", "secondary-model"] if allowed_kind else ["secondary-model"]
    )


@pytest.mark.parametrize(
    "org_fields,key_fields,listed",
    [
        ({}, {}, ["chat", "ha-chat", "embed"]),
        (
            {"denied_models": frozenset({"embed"})},
            {"allowed_models": frozenset({"chat", "embed"})},
            ["chat"],
        ),
        ({}, {"allowed_providers": frozenset({"fake2"})}, ["ha-chat"]),
        ({"allowed_regions": frozenset({"eu-west-1"})}, {}, ["ha-chat"]),
    ],
)
async def test_the_model_list_shows_only_what_the_key_may_use(rig, org_fields, key_fields, listed):
    rig.publish(acme(**org_fields), app=key_info(APP, 1, **key_fields))
    out = await rig.send(endpoint="models", body=b"")
    assert out.status == 200
    assert [m["id"] for m in orjson.loads(out.body)["data"]] == listed
    for model in ("chat", "ha-chat", "embed"):
        out = await rig.send(endpoint="model", body=b"", model_id=model)
        assert out.status == (200 if model in listed else 404)
    records = rig.records()
    assert len(records) == 4 and records[0]["endpoint"] == "models"
    assert [r["status"] == "success" for r in records[1:]] == [
        m in listed for m in ("chat", "ha-chat", "embed")
    ]


# ---------------------------------------------------------------------------- limits


@pytest.mark.parametrize(
    "org_fields,key_fields,scope",
    [
        ({}, {"rpm": 2}, "for this key"),
        ({"key_rpm": 2}, {}, "for this key"),  # the org's default for keys
        ({"key_rpm": 2}, {"rpm": 5}, "for this key"),  # a key's own limit only narrows
        ({"rpm": 2}, {}, "for this organization"),
    ],
)
async def test_the_request_past_an_rpm_limit_gets_429_and_never_reaches_the_provider(
    rig, org_fields, key_fields, scope
):
    rig.publish(acme(**org_fields), app=key_info(APP, 1, **key_fields))
    first, second, third = [await rig.send() for _ in range(3)]
    assert (first.status, second.status) == (200, 200)
    if scope == "for this key":
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert second.headers["x-ratelimit-remaining-requests"] == "0"
        assert third.headers["x-ratelimit-limit-requests"] == "2"
    assert third.status == 429
    error = error_of(third)
    assert error["code"] == "rate_limit_exceeded" and scope in error["message"]
    assert int(third.headers["Retry-After"]) >= 1
    assert len(rig.upstream.requests) == 2
    assert [r["http_status"] for r in rig.records()] == [200, 200, 429]


@pytest.mark.parametrize(
    "tier,org_fields,key_fields,rpm,tpm",
    [
        # A key saved wider than the org's default for keys (before the rule, or the default
        # was lowered since) gets the default.
        ("enterprise", {"key_rpm": 3, "key_tpm": 5000}, {"rpm": 100000, "tpm": 10**9}, 3, 5000),
        ("enterprise", {"key_rpm": 300, "key_tpm": 5000}, {"rpm": 7, "tpm": 2000}, 7, 2000),
        ("free", {"key_rpm": 300}, {"rpm": 1000}, 30, None),  # the tier narrows both
        ("pro", {}, {}, 300, None),
        ("enterprise", {}, {}, None, None),  # no limit at all
    ],
)
async def test_the_narrowest_limit_applies_and_is_shown(
    rig, tier, org_fields, key_fields, rpm, tpm
):
    rig.publish(tiered(tier, **org_fields), app=key_info(APP, 1, **key_fields))
    out = await rig.send()
    assert out.status == 200
    shown = (
        out.headers.get("x-ratelimit-limit-requests"),
        out.headers.get("x-ratelimit-limit-tokens"),
    )
    assert shown == (rpm and str(rpm), tpm and str(tpm))


async def test_the_free_tier_caps_its_keys_rpm(rig):
    rig.publish(tiered("free"), app=key_info(APP, 1, rpm=1000))
    statuses = [(await rig.send()).status for _ in range(31)]
    assert statuses == [200] * 30 + [429]


async def test_tpm_counts_the_prompt_and_the_tokens_asked_for(rig):
    rig.publish(app=key_info(APP, 1, tpm=250))
    ok = await rig.send(chat(max_tokens=100))
    assert ok.status == 200 and ok.headers["x-ratelimit-limit-tokens"] == "250"
    cost = 250 - int(ok.headers["x-ratelimit-remaining-tokens"])
    assert 100 < cost < 150  # the 100 asked for and the prompt's estimate
    refused = await rig.send(chat(max_tokens=100))  # needs `cost`, fewer are left
    assert refused.status == 429 and "tokens per minute" in error_of(refused)["message"]
    assert refused.headers["x-ratelimit-limit-tokens"] == "250"
    # A refused request takes nothing: a smaller one still fits in what is left.
    assert (await rig.send(chat(max_tokens=20))).status == 200
    # More than the whole limit in one request can never pass.
    too_big = await rig.send(chat(max_tokens=1000))
    assert too_big.status == 429 and int(too_big.headers["Retry-After"]) == 60
    assert len(rig.upstream.requests) == 2


# ---------------------------------------------------------------------------- routing


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_a_failing_deployment_fails_over_to_the_next(rig, status):
    rig.upstream.behaviours["primary-model"] = Behaviour(status=status)
    out = await rig.send(chat("ha-chat"))
    assert out.status == 200
    assert out.headers["x-bonito-provider"] == "fake2"
    assert out.headers["x-bonito-model-used"] == "ha-chat"
    assert rig.models_called() == ["primary-model", "secondary-model"]
    (record,) = rig.records()  # one record per request, not per attempt
    assert record["deployment"] == "fake2/secondary-model" and record["status"] == "success"
    assert record["cost"] == pytest.approx(PROMPT_TOKENS * 3e-6 + COMPLETION_TOKENS * 4e-6)


async def test_a_client_error_from_the_provider_is_passed_through_without_failover(rig):
    rig.upstream.behaviours["primary-model"] = Behaviour(
        status=400, error_message="max_tokens is too large", error_code="bad_max_tokens"
    )
    out = await rig.send(chat("ha-chat"))
    assert out.status == 400
    error = error_of(out)
    assert (error["message"], error["code"]) == ("max_tokens is too large", "bad_max_tokens")
    assert rig.models_called() == ["primary-model"]
    (record,) = rig.records()
    assert (record["status"], record["error_type"]) == ("rejected", "upstream_400")


async def test_when_every_deployment_fails_the_client_gets_one_502(rig):
    for model in ("primary-model", "secondary-model"):
        rig.upstream.behaviours[model] = Behaviour(status=503)
    out = await rig.send(chat("ha-chat"))
    assert out.status == 502 and error_of(out)["code"] == "upstream_error"
    assert UPSTREAM_CREDENTIAL not in out.body.decode()
    assert rig.models_called() == ["primary-model", "secondary-model"] * 2  # retry_rounds=2
    (record,) = rig.records()
    assert (record["status"], record["http_status"]) == ("error", 502)


async def test_a_deployment_that_does_not_answer_in_time_gets_504(rig):
    rig.publish(acme(timeout_s=0.2))
    rig.upstream.behaviours["gpt-4o-mini"] = Behaviour(hang=True)
    started = time.monotonic()
    out = await rig.send()
    assert out.status == 504 and error_of(out)["code"] == "upstream_timeout"
    assert time.monotonic() - started < 2
    (record,) = rig.records()
    assert record["error_type"] == "upstream_timeout"


async def test_the_orgs_fallback_model_answers_when_the_model_cannot(rig):
    rig.publish(acme(fallback_models=("chat",)))
    for model in ("primary-model", "secondary-model"):
        rig.upstream.behaviours[model] = Behaviour(status=500)
    out = await rig.send(chat("ha-chat"))
    assert out.status == 200 and out.headers["x-bonito-model-used"] == "chat"
    (record,) = rig.records()
    assert (record["model_requested"], record["model_used"]) == ("ha-chat", "chat")


async def test_a_deployment_that_keeps_failing_is_skipped_while_it_cools_down(rig):
    rig.upstream.behaviours["primary-model"] = Behaviour(status=500)
    for _ in range(FAILURES_TO_OPEN):
        assert (await rig.send(chat("ha-chat"))).status == 200
    rig.upstream.requests.clear()
    assert (await rig.send(chat("ha-chat"))).status == 200
    assert rig.models_called() == ["secondary-model"]


async def test_failover_keeps_to_priority_order(rig):
    for _ in range(4):
        assert (await rig.send(chat("ha-chat"))).status == 200
    assert rig.models_called() == ["primary-model"] * 4


async def test_round_robin_takes_each_deployment_in_turn(rig):
    rig.publish(acme(strategy="round_robin"))
    for _ in range(6):
        assert (await rig.send(chat("ha-chat"))).status == 200
    called = rig.models_called()
    assert sorted(called) == ["primary-model"] * 3 + ["secondary-model"] * 3
    assert all(a != b for a, b in zip(called, called[1:], strict=False))


@pytest.mark.parametrize("cheaper", ["primary-model", "secondary-model"])
async def test_cost_optimized_calls_the_cheapest_deployment_first(rig, cheaper):
    org = acme(strategy="cost_optimized")
    deps = tuple(
        replace(d, input_cost=0.5e-6, output_cost=0.5e-6) if d.upstream_model == cheaper else d
        for d in org.deployments["ha-chat"]
    )
    rig.publish(replace(org, deployments={**org.deployments, "ha-chat": deps}))
    for _ in range(3):
        assert (await rig.send(chat("ha-chat"))).status == 200
    assert rig.models_called() == [cheaper] * 3


async def test_a_routing_policy_key_uses_the_policys_models_and_strategy(rig):
    policy = RoutingPolicyInfo(name="spread", strategy="round_robin", models=("ha-chat",))
    rig.publish(
        acme(routing_policies={"spread": policy}), app=key_info(APP, 1, routing_policy="spread")
    )
    for _ in range(4):
        assert (await rig.send(chat("anything"))).status == 200
    assert sorted(rig.models_called()) == ["primary-model"] * 2 + ["secondary-model"] * 2
    rig.publish(acme(), app=key_info(APP, 1, routing_policy="spread"))  # policy deleted
    out = await rig.send()
    assert out.status == 503 and error_of(out)["code"] == "routing_policy_missing"


# ---------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("include_usage", [False, True])
async def test_a_stream_is_relayed_as_sse_and_recorded_once(rig, include_usage):
    body = chat(stream=True)
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    out = await rig.send(body)
    assert out.status == 200 and out.headers["Content-Type"] == "text/event-stream"
    events = sse_events(await body_of(out))
    assert events[-1] == b"[DONE]"
    chunks = events[:-1]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c.get("choices"))
    assert text == "word0 word1 word2 word3 word4"
    usage_chunks = [c for c in chunks if c.get("usage")]
    assert len(usage_chunks) == (1 if include_usage else 0)
    # The gateway asks the provider for usage either way, to record it.
    assert rig.upstream.requests[0]["body"]["stream_options"] == {"include_usage": True}
    (record,) = rig.records()
    assert (record["input_tokens"], record["output_tokens"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert record["cost"] == pytest.approx(PROMPT_TOKENS * 1e-6 + COMPLETION_TOKENS * 2e-6)
    assert record["status"] == "success" and record["ttft_ms"] is not None


async def test_a_stream_fails_over_before_its_first_chunk(rig):
    rig.upstream.behaviours["primary-model"] = Behaviour(status=500)
    out = await rig.send(chat("ha-chat", stream=True))
    assert out.status == 200 and out.headers["x-bonito-provider"] == "fake2"
    assert sse_events(await body_of(out))[-1] == b"[DONE]"
    (record,) = rig.records()
    assert record["deployment"] == "fake2/secondary-model"


async def test_a_stream_that_breaks_midway_ends_with_an_error_event_and_an_error_record(rig):
    rig.upstream.behaviours["gpt-4o-mini"] = Behaviour(reset_after_chunks=2)
    out = await rig.send(chat(stream=True))
    assert out.status == 200
    events = sse_events(await body_of(out))
    assert b"[DONE]" not in events
    assert events[-1]["error"]["code"] == "stream_broken"
    (record,) = rig.records()
    assert (record["status"], record["http_status"]) == ("error", 502)
    assert record["output_tokens"] > 0  # what was sent is counted


@pytest.mark.parametrize("stream", [False, True])
async def test_tokens_the_provider_did_not_report_are_counted_not_billed_as_zero(rig, stream):
    rig.upstream.behaviours["gpt-4o-mini"] = Behaviour(report_usage=False)
    out = await rig.send(chat(stream=stream))
    assert out.status == 200
    await body_of(out)
    (record,) = rig.records()
    assert record["input_tokens"] > 0 and record["output_tokens"] > 0
    assert record["cost"] == pytest.approx(
        record["input_tokens"] * 1e-6 + record["output_tokens"] * 2e-6
    )


# ---------------------------------------------------------------------------- usage records


async def test_every_request_with_a_key_leaves_exactly_one_record(rig):
    rig.publish(acme(denied_models=frozenset({"embed"})), app=key_info(APP, 1, rpm=3))
    rig.upstream.behaviours["secondary-model"] = Behaviour(status=500)
    rig.upstream.behaviours["primary-model"] = Behaviour(status=500)
    requests = [
        ({}, 200),
        ({"body": chat(stream=True)}, 200),
        ({"body": {"model": "embed", "input": "x"}, "endpoint": "embeddings"}, 403),
        ({"body": chat("nope")}, 404),
        ({"body": b"{not json"}, 400),
        ({"body": {"model": "chat"}}, 400),  # no messages
        ({"too_large": True}, 413),
        ({"body": chat("ha-chat")}, 502),
        ({}, 429),  # the 4th that reaches the limiter: past the key's 3 a minute
    ]
    sent = {}
    for i, (kwargs, status) in enumerate(requests):
        rid = f"req-{i}"
        out = await rig.send(headers={"x-request-id": rid}, **kwargs)
        await body_of(out)
        assert out.status == status, (kwargs, out.body)
        assert out.headers["x-request-id"] == rid
        sent[rid] = status
    records = rig.records()
    assert sorted(r["request_id"] for r in records) == sorted(sent)
    assert {r["request_id"]: r["http_status"] for r in records} == sent
    assert len({r["id"] for r in records}) == len(records)
    for r in records:
        assert (r["org_id"], r["key_id"], r["source"]) == (ORG, 1, "shared_gateway")
        assert (r["status"] == "success") == (r["http_status"] == 200)
    assert UPSTREAM_CREDENTIAL not in orjson.dumps(records).decode()


async def test_a_success_records_the_providers_tokens_and_the_deployments_prices(rig):
    rig.upstream.behaviours["gpt-4o-mini"] = Behaviour(cached_tokens=4)
    out = await rig.send(chat(), headers={"x-request-id": "req-cost"})
    assert out.status == 200
    assert orjson.loads(out.body)["usage"]["prompt_tokens"] == PROMPT_TOKENS
    (record,) = rig.records()
    assert record["request_id"] == "req-cost"
    assert (record["input_tokens"], record["output_tokens"], record["cached_tokens"]) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
        4,
    )
    expected = PROMPT_TOKENS * 1e-6 + COMPLETION_TOKENS * 2e-6
    assert record["cost"] == pytest.approx(expected) and out.cost == pytest.approx(expected)
    assert (record["model_requested"], record["deployment"]) == ("chat", "fake/gpt-4o-mini")
    assert record["latency_ms"] >= 0 and record["endpoint"] == "chat"


async def test_embeddings_record_input_tokens_only(rig):
    out = await rig.send({"model": "embed", "input": ["a", "b"]}, endpoint="embeddings")
    assert out.status == 200 and len(orjson.loads(out.body)["data"]) == 2
    (record,) = rig.records()
    assert (record["input_tokens"], record["output_tokens"]) == (6, 0)
    assert record["cost"] == pytest.approx(6 * 1e-6)


# ---------------------------------------------------------------------------- budgets


@pytest.mark.parametrize("scope", ["org", "team:5", "key:1"])
async def test_a_spent_budget_refuses_the_requests_in_its_scope(rig, scope):
    lifts_at = time.time() + 3600
    blocked = {scope: Block("The budget 'Q3' is spent.", lifts_at)}
    rig.publish(acme(blocked=blocked), app=key_info(APP, 1, team_id=5))
    out = await rig.send()
    assert out.status == 429
    error = error_of(out)
    assert (error["type"], error["code"]) == ("insufficient_quota", "budget_exceeded")
    assert error["message"] == "The budget 'Q3' is spent."
    assert 3590 <= int(out.headers["Retry-After"]) <= 3600
    assert rig.upstream.requests == []
    (record,) = rig.records()
    assert (record["status"], record["http_status"]) == ("rejected", 429)


async def test_a_spent_budget_lifts_when_its_period_ends(rig):
    """A month's spent budget is in the snapshot until the facts are read again (up to
    GATEWAY_FACTS_REFRESH_S into the next month): past its end it refuses nothing."""
    blocked = {"org": Block("The budget 'monthly' is spent.", time.time() - 1)}
    rig.publish(acme(blocked=blocked))
    assert (await rig.send()).status == 200


@pytest.mark.parametrize("scope", ["team:6", "key:2"])
async def test_another_scopes_spent_budget_does_not_refuse_this_key(rig, scope):
    blocked = {scope: f"The budget 'other' is spent.|{time.time() + 3600}"}
    rig.publish(acme(blocked=blocked), app=key_info(APP, 1, team_id=5))
    assert (await rig.send()).status == 200


async def test_the_spend_cap_refuses_once_the_months_spend_reaches_it(rig):
    # Each request costs 0.4: after three the month's spend (1.2) is past the cap of 1.0.
    org = acme(spend_cap=1.0)
    dep = replace(org.deployments["chat"][0], input_cost=0.02, output_cost=0.036)
    rig.publish(replace(org, deployments={**org.deployments, "chat": (dep,)}))
    statuses = [(await rig.send(chat(max_tokens=5))).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    records = rig.records()
    assert sum(r["cost"] for r in records) == pytest.approx(1.2)
    out = await rig.send()
    assert error_of(out)["code"] == "spend_cap_exceeded"


@pytest.mark.parametrize("field", ["n", "best_of"])
async def test_the_spend_reservation_holds_every_completion_the_provider_generates(rig, field):
    """A legacy completion with best_of generates that many completions server-side, and
    the provider bills every one, as it does the n choices: the reservation holds them all,
    so a request beside it that fits the cap with a single completion's worth is refused."""
    org = acme(spend_cap=0.003)
    rig.publish(org)
    rig.upstream.behaviours["gpt-4o-mini"] = Behaviour(latency=0.5)
    body = {"model": "chat", "prompt": "hello", "max_tokens": 100}
    # 20 completions of up to 100 tokens at $2 per million: $0.004, past the cap while it
    # runs; one completion's worth ($0.0002) is not.
    first = asyncio.ensure_future(rig.send({**body, field: 20}, endpoint="completions"))
    await asyncio.sleep(0.2)  # the first is admitted and waiting on the provider
    beside = await rig.send(body, endpoint="completions")
    assert beside.status == 429 and error_of(beside)["code"] == "spend_cap_exceeded"
    assert (await first).status == 200
    assert len(rig.upstream.requests) == 1


@pytest.mark.parametrize("limits", ["local", "redis"])
async def test_last_months_spend_is_no_floor_for_this_months_cap(rig, tmp_path, limits):
    """In a month's first minute the snapshot may still carry last month's spend (the
    refresher reads billing's facts every GATEWAY_FACTS_REFRESH_S): an org that spent its
    whole cap last month is served, and the new month's counter does not keep last
    month's figure once the facts say this month's."""
    server = RedisServer(tmp_path).start() if limits == "redis" else None
    try:
        if server is not None:
            rig.gateway.limiter = Limiter(server.url)
        last_month = month_key(datetime.now(UTC).replace(day=1) - timedelta(days=1))
        rig.publish(acme(spend_cap=10.0, spent_this_month=10.0, spent_month=last_month))
        assert (await rig.send(chat(max_tokens=5))).status == 200
        rig.publish(acme(spend_cap=10.0, spent_this_month=0.0, spent_month=month_key()))
        assert (await rig.send(chat(max_tokens=5))).status == 200
        # This month's own spend raises the counter, Redis's or the process's own (other
        # processes' and replicas' spend reaches a process without Redis only this way).
        rig.publish(acme(spend_cap=10.0, spent_this_month=10.0, spent_month=month_key()))
        assert error_of(await rig.send(chat(max_tokens=5)))["code"] == "spend_cap_exceeded"
    finally:
        if server is not None:
            server.stop()


IMAGE = "https://images.example.test/cat.png"
POINTING = {  # a request of each API that points to input its bytes do not size
    "chat": {
        "model": "chat",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is it"},
                    {"type": "image_url", "image_url": {"url": IMAGE}},
                ],
            }
        ],
    },
    "responses": {
        "model": "chat",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "what is it"},
                    {"type": "input_image", "image_url": IMAGE},
                ],
            }
        ],
    },
    "messages": {
        "model": "chat",
        "max_tokens": 100,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "url", "url": IMAGE}},
                    {"type": "text", "text": "what is it"},
                ],
            }
        ],
    },
}


@pytest.mark.parametrize("endpoint", list(POINTING))
@pytest.mark.parametrize("window, beside_allowed", [(0, False), (10_000, True)])
async def test_a_request_pointing_to_input_reserves_its_model_s_context_window(
    rig, endpoint, window, beside_allowed
):
    """An image (by URL or inline) costs tokens by its pixels, not its bytes; a stored
    response or file is not sent at all. While such a request runs, its reservation holds
    its model's whole context window (128k tokens where the map has none): a request beside
    it that the cap would take beside a small prompt is refused. With a model of a 10k
    window ($0.01 at $1 per million) the same cap takes it."""
    org = acme(spend_cap=0.05)
    chat = replace(org.deployments["chat"][0], max_input_tokens=window)
    rig.publish(replace(org, deployments={**org.deployments, "chat": (chat,)}))
    rig.upstream.behaviours["gpt-4o-mini"] = Behaviour(latency=0.5)
    first = asyncio.ensure_future(rig.send(POINTING[endpoint], endpoint=endpoint))
    await asyncio.sleep(0.2)  # the first is admitted and waiting on the provider
    beside = await rig.send()
    if beside_allowed:
        assert beside.status == 200
    else:
        assert beside.status == 429 and error_of(beside)["code"] == "spend_cap_exceeded"
    assert (await first).status == 200
    assert (await rig.send()).status == 200  # settled to what it cost: room again


async def test_a_month_already_spent_in_the_snapshot_is_refused_at_once(rig):
    rig.publish(acme(spend_cap=10.0, spent_this_month=10.0))
    out = await rig.send()
    assert out.status == 429
    error = error_of(out)
    assert (error["type"], error["code"]) == ("insufficient_quota", "spend_cap_exceeded")
    assert rig.upstream.requests == []
