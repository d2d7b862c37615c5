"""Every verdict of the limiter carries the state of every bucket it checked, whatever
refused (a bucket, the spend cap) and wherever it was decided (per process, Redis, the
fallback while Redis is unreachable): the per-process limiter stopped at the first bucket
that refused, a spend-cap refusal carried no bucket at all, and the gateway asked Redis a
second time for what was missing. The limit a verdict reports is the one applied: during
an outage a process's share, which the x-ratelimit-limit-* headers showed as the whole."""

import asyncio
import socket
import time

import pytest

from gateway.dataplane.limits import Bucket, Limiter, SpendReservation
from gateway.models import ApiKey
from gateway.tests.conftest import (
    pricey_chat_small_under_a_cap,
    refresh_snapshot,
    usage_rows,
)
from gateway.tests.fault.redis_server import RedisServer
from gateway.tests.test_limits import _settings_redis
from gateway.tests.test_v1_edges_ratelimit import _chat


def _buckets(tag: str, rpm=2, tpm=1000, org_rpm=100, org_tpm=5000, cost=300) -> list[Bucket]:
    return [
        Bucket(f"bonito:{{o{tag}}}:rl:k:1:r", rpm, 1, "requests", "key"),
        Bucket(f"bonito:{{o{tag}}}:rl:k:1:t", tpm, cost, "tokens", "key"),
        Bucket(f"bonito:{{o{tag}}}:rl:o:r", org_rpm, 1, "requests", "org"),
        Bucket(f"bonito:{{o{tag}}}:rl:o:t", org_tpm, cost, "tokens", "org"),
    ]


LABELS = {"requests", "tokens", "org requests", "org tokens"}


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{s.getsockname()[1]}/0"


@pytest.fixture(params=["local", "redis"])
def limiter(request, tmp_path):
    if request.param == "local":
        yield Limiter("")
        return
    server = RedisServer(tmp_path).start()
    yield Limiter(server.url)
    server.stop()


def _run(coro):
    return asyncio.run(coro)


def test_a_refusal_by_the_first_bucket_reports_every_bucket(limiter):
    async def go():
        buckets = _buckets("51", rpm=1)
        first = await limiter.acquire(buckets, None)
        second = await limiter.acquire(buckets, None)
        return first, second

    first, second = _run(go())
    assert first.allowed and not second.allowed
    assert second.failed.label == "requests"
    assert set(second.remaining) == LABELS  # it stopped at "requests"
    assert second.remaining["requests"] == 0
    assert 1000 - 300 <= second.remaining["tokens"] < 1000 - 290  # what the first took
    assert second.remaining["org requests"] in (99, 100)
    assert second.limits == {"requests": 1, "tokens": 1000, "org requests": 100, "org tokens": 5000}


def test_a_spend_cap_refusal_reports_every_bucket_and_takes_nothing(limiter):
    async def go():
        buckets = _buckets("52")
        spend = SpendReservation(org_id=52, cap=1.0, reserve=0.6, baseline=0.0)
        ok = await limiter.acquire(buckets, spend)
        limiter.settle(spend, 1.0, ok.backend)  # the cap is reached
        await asyncio.sleep(0.1)  # the settlement reaches Redis
        capped = await limiter.acquire(buckets, SpendReservation(52, 1.0, 0.1, 0.0))
        after = await limiter.acquire([replace_cost(b, 0) for b in buckets], None)
        return ok, capped, after

    ok, capped, after = _run(go())
    assert ok.allowed and not capped.allowed and capped.spend_exceeded
    assert capped.failed is None
    assert set(capped.remaining) == LABELS  # there was none
    assert capped.remaining["requests"] == 1
    assert capped.limits["requests"] == 2
    # the refused request took nothing from the buckets
    assert after.remaining["requests"] == 1
    assert after.remaining["tokens"] >= capped.remaining["tokens"]


def replace_cost(bucket: Bucket, cost: int) -> Bucket:
    return Bucket(bucket.key, bucket.capacity, cost, bucket.unit, bucket.scope)


def test_the_retry_after_is_the_longest_wait_of_the_buckets_that_refuse(limiter):
    """Both the requests and the tokens bucket are short: the request passes only when
    both have refilled, so the wait is the longer one (the first's alone was too short)."""

    async def go():
        buckets = _buckets("53", rpm=60, tpm=600, cost=600)
        await limiter.acquire(buckets, None)  # empties tokens; one request of 60 gone
        for _ in range(59):  # empties requests, taking no tokens
            await limiter.acquire([buckets[0]], None)
        return await limiter.acquire(buckets, None)

    refused = _run(go())
    assert not refused.allowed
    # requests refill one a second; 600 tokens take a whole minute
    assert refused.retry_after_s > 50
    assert refused.failed.label == "tokens"


def test_during_an_outage_the_limits_reported_are_the_share_applied():
    limiter = Limiter(_dead_url(), fallback_share=0.5, timeout_s=0.5)

    async def go():
        buckets = _buckets("54", rpm=10, tpm=1000, cost=100)
        results = [await limiter.acquire(buckets, None) for _ in range(6)]
        return results

    results = _run(go())
    assert {r.backend for r in results} == {"fallback"}
    assert [r.allowed for r in results] == [True] * 5 + [False]
    assert results[0].limits == {
        "requests": 5,
        "tokens": 500,
        "org requests": 50,
        "org tokens": 2500,
    }
    assert results[4].remaining["requests"] == 0
    assert set(results[5].remaining) == LABELS


# ------------------------------------------------------------------ through the gateway
def _limits(acme, **fields):
    ApiKey.objects.filter(pk=acme.key.pk).update(**fields)
    refresh_snapshot()


def _scripts_run(server: RedisServer) -> int:
    stats = server.client().info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


@pytest.mark.parametrize("refusal", ["bucket", "spend_cap", "never"])
def test_a_429_on_redis_costs_one_script_and_reports_the_buckets(acme, gw, own_redis, refusal):
    """The gateway asked Redis again, with the missing buckets, on every refusal."""
    gw.limiter = Limiter(own_redis.url)
    try:
        if refusal == "spend_cap":
            pricey_chat_small_under_a_cap(acme, "0.01")
        _limits(acme, rpm_limit=1 if refusal == "bucket" else 10, tpm_limit=6000)
        ok = _chat(acme)
        assert ok.status_code == 200, ok.text
        time.sleep(0.3)  # its settlement has reached Redis
        before = _scripts_run(own_redis)
        refused = _chat(acme, 10_000 if refusal == "never" else 5)
        assert refused.status_code == 429, refused.text
        assert _scripts_run(own_redis) - before == 1
        assert refused.headers["x-ratelimit-limit-requests"] in ("1", "10")
        assert int(refused.headers["x-ratelimit-remaining-requests"]) in (0, 9)
        # The tokens bucket as it is: the first request's tokens, or (on a loaded machine,
        # its refill having caught up before the refusal) full again; never the whole
        # limit reported as gone.
        assert 5000 < int(refused.headers["x-ratelimit-remaining-tokens"]) <= 6000
        assert refused.headers["x-ratelimit-limit-tokens"] == "6000"
        assert [r.http_status for r in usage_rows(acme.org)] == [200, 429]
    finally:
        gw.limiter = Limiter(_settings_redis())


def test_during_an_outage_the_headers_show_the_share_applied(acme, gw):
    gw.limiter = Limiter(_dead_url(), fallback_share=0.5, timeout_s=0.5)
    try:
        _limits(acme, rpm_limit=4, tpm_limit=6000)
        answers = [_chat(acme) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        for a in answers:
            assert a.headers["x-ratelimit-limit-requests"] == "2"
            assert a.headers["x-ratelimit-limit-tokens"] == "3000"
        assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["1", "0", "0"]
        assert float(answers[2].headers["x-ratelimit-reset-requests"].removesuffix("s")) > 20
    finally:
        gw.limiter = Limiter(_settings_redis())
