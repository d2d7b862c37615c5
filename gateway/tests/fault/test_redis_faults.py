"""Limits and spend caps with two real worker processes on a Redis of the test's own,
which is overloaded, paused, killed and restarted under concurrent load.

Counts only, never timings: each burst is 2N requests fired at once, half to each worker.
A rate limit is a token bucket that refills N/60 per second, so a burst that takes T
seconds to arrive may see N + N*T/60 pass: that refill is the only slack allowed.
"""

import asyncio
import json
import math
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal

import aiohttp
import httpx
import orjson
import pytest

from gateway.dataplane import tokens
from gateway.dataplane.limits import REDIS_RETRY_AFTER_S, Limiter
from gateway.tests.conftest import free_port
from gateway.tests.external import ROOT, ExternalBonito
from gateway.tests.fault.redis_server import RedisServer

pytestmark = pytest.mark.slow

BODY = orjson.dumps(
    {"model": "chat", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
)
# The fake upstream reports 11 prompt and 5 completion tokens for every chat request.
IN_PRICE, OUT_PRICE = Decimal("100"), Decimal("1000")  # per million tokens
COST = (11 * IN_PRICE + 5 * OUT_PRICE) / 1_000_000
# What the gateway reserves before the call: its prompt estimate plus max_tokens.
RESERVATION = (tokens.estimate_prompt_tokens(BODY) * IN_PRICE + 5 * OUT_PRICE) / 1_000_000
TIMEOUT_S = 8  # the workers' Redis bound (see Stack)
LEVELS = [50, 250, 500]  # N: bursts of 100, 500 and 1,000 concurrent requests
# Spend caps that N requests of COST reach, in whole cents.
CAPS = {f"cap{n}": (n * COST).quantize(Decimal("0.01")) for n in LEVELS} | {
    "capfault": Decimal("0.40")
}
RATE_KEYS = {f"k{n}": n for n in LEVELS} | {"kslow": 50, "kdown": 50}

SETUP = """
import json
from decimal import Decimal
from gateway.services import api_key_create
from orgs.audit import Actor
from governance.services import policy_set
from orgs.models import Organization

actor, keys = Actor(via="test"), {{}}
rl = Organization.objects.get(slug="rl")
for name, rpm in {rate_keys}.items():
    keys[name] = api_key_create(actor=actor, org=rl, name=name, rpm_limit=rpm)[1]
for slug, cap in {caps}.items():
    org = Organization.objects.get(slug=slug)
    policy_set(actor=actor, org=org, monthly_spend_cap_usd=Decimal(cap))
    keys[slug] = api_key_create(actor=actor, org=org, name="app")[1]
print(json.dumps(keys))
"""


def _config(upstream_port: int) -> str:
    orgs = []
    for slug in ["rl", *CAPS]:
        orgs.append(
            f"""
  - slug: {slug}
    name: {slug}
    tier: enterprise
    providers:
      - {{name: fake, kind: openai_compatible, api_base: "http://127.0.0.1:{upstream_port}/v1", api_key: sk-fake}}
    deployments:
      - {{model: chat, provider: fake, upstream_model: gpt-4o-mini, input_price_per_mtok: {IN_PRICE}, output_price_per_mtok: {OUT_PRICE}}}
"""
        )
    return "orgs:" + "".join(orgs)


class Stack:
    """Two uvicorn workers on one SQLite database and a private Redis."""

    def __init__(self, tmp):
        self.redis = RedisServer(tmp).start()
        upstream_port = free_port()
        self.upstream = subprocess.Popen(
            [sys.executable, "-m", "gateway.tests.fake_upstream", "--port", str(upstream_port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.ext = ExternalBonito(
            tmp,
            redis_url=self.redis.url,
            # Two CPUs run both workers, Redis, the upstream and the client: a 1,000-request
            # burst delays event loops by seconds, which a production bound need not cover.
            env={"GATEWAY_FALLBACK_SHARE": "0.5", "GATEWAY_REDIS_TIMEOUT_S": str(TIMEOUT_S)},
        )
        self.ext.migrate()
        (tmp / "bonito.yaml").write_text(_config(upstream_port))
        self.ext.manage("apply_config", str(tmp / "bonito.yaml"))
        self.keys = json.loads(
            self.ext.manage(
                "shell",
                "-c",
                SETUP.format(rate_keys=RATE_KEYS, caps={k: str(v) for k, v in CAPS.items()}),
            )
            .strip()
            .splitlines()[-1]
        )
        self.workers = [self.ext.serve(free_port()), self.ext.serve(free_port())]
        for url in self.workers:  # each worker has built its snapshot before the first burst
            models = httpx.get(
                url + "/v1/models", headers={"Authorization": f"Bearer {self.keys['k50']}"}
            )
            assert models.status_code == 200
        self.sent: dict[str, int] = {}  # requests sent per key, for waiting on their rows
        self.elapsed = 0.0  # how long the last burst took to be answered

    def close(self):
        self.ext.close()
        self.upstream.terminate()
        self.upstream.wait(10)
        self.redis.stop()

    async def _burst(self, key: str, n: int) -> list[int]:
        """n requests at once, alternating between the two workers; their statuses."""
        self.sent[key] = self.sent.get(key, 0) + n
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=120)
        headers = {"Authorization": f"Bearer {self.keys[key]}", "Content-Type": "application/json"}
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def one(i):
                url = self.workers[i % 2] + "/v1/chat/completions"
                async with session.post(url, data=BODY, headers=headers) as resp:
                    await resp.read()
                    return resp.status

            t0 = time.monotonic()
            try:
                return list(await asyncio.gather(*[one(i) for i in range(n)]))
            finally:
                self.elapsed = time.monotonic() - t0

    def burst(self, key: str, n: int) -> list[int]:
        return asyncio.run(self._burst(key, n))

    def spent(self, slug: str) -> Decimal:
        """The org's spend in its usage rows, once every request sent has its row."""
        query = (
            "SELECT count(*), coalesce(sum(r.cost), 0) FROM gateway_requests r "
            "JOIN orgs_organization o ON o.id = r.org_id WHERE o.slug = %s"
        )
        deadline = time.time() + 60
        while True:
            if self.ext.pg_url:
                import psycopg

                with psycopg.connect(self.ext.direct_url) as conn:
                    count, total = conn.execute(query, (slug,)).fetchone()
            else:
                with sqlite3.connect(self.ext.db_dir / "bonito.sqlite3") as conn:
                    count, total = conn.execute(query.replace("%s", "?"), (slug,)).fetchone()
            if count >= self.sent[slug] or time.time() > deadline:
                assert count == self.sent[slug]
                return Decimal(str(total))
            time.sleep(0.2)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("redis-faults"))
    yield s
    s.close()


@pytest.mark.parametrize("n", LEVELS)
def test_2n_concurrent_requests_against_a_limit_of_n_let_exactly_n_through(stack, n):
    statuses = stack.burst(f"k{n}", 2 * n)
    assert n <= statuses.count(200) <= n + refill(n, stack.elapsed)
    assert statuses.count(200) + statuses.count(429) == 2 * n


def refill(n: int, seconds: float) -> int:
    """How many requests a bucket of n per minute may add while a burst arrives."""
    return math.ceil(n * seconds / 60)


@pytest.mark.parametrize("n", LEVELS)
def test_a_spend_cap_overshoots_by_at_most_one_reservation(stack, n):
    slug = f"cap{n}"
    statuses = stack.burst(slug, 2 * n)
    assert set(statuses) == {200, 429}
    spent = stack.spent(slug)
    assert CAPS[slug] / 2 < spent <= CAPS[slug] + RESERVATION


def test_a_redis_slower_than_a_second_is_waited_for(stack):
    async def run():
        stack.redis.pause()
        burst = asyncio.ensure_future(stack._burst("kslow", 100))
        await asyncio.sleep(1.2)
        stack.redis.resume()
        return await burst

    statuses = asyncio.run(run())
    assert 50 <= statuses.count(200) <= 50 + refill(50, stack.elapsed)
    assert statuses.count(200) + statuses.count(429) == 100


def test_while_redis_is_down_each_worker_admits_its_share_of_a_limit(stack):
    stack.redis.kill()
    try:
        statuses = stack.burst("kdown", 100)
    finally:
        stack.redis.start()
    # Requests are still served; each of the 2 workers admits half of the limit.
    assert 50 <= statuses.count(200) <= 50 + refill(50, stack.elapsed)
    assert statuses.count(200) + statuses.count(429) == 100


def test_a_spend_cap_holds_through_a_redis_restart(stack):
    cap = CAPS["capfault"]
    before = stack.burst("capfault", 20)  # about a quarter of the cap, through Redis
    assert before == [200] * 20
    stack.redis.kill()
    down = stack.burst("capfault", 100)  # each worker spends at most half of what was left
    stack.redis.start()  # empty: counters and scripts are gone
    after = stack.burst("capfault", 100)  # at once: a worker may hear from Redis first
    time.sleep(REDIS_RETRY_AFTER_S + Limiter(timeout_s=TIMEOUT_S).reconcile_s + 0.5)  # all back
    after += stack.burst("capfault", 20)
    assert set(down) <= {200, 429} and set(after) <= {200, 429}
    assert down.count(200) > 0
    assert stack.spent("capfault") <= cap + RESERVATION
