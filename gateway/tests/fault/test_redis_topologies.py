"""REDIS_URL as a Sentinel URL: every component works through it, and the limiter keeps
working when the sentinels fail the master over to its replica."""

import asyncio
import json
import math
import os
import subprocess
import sys
import time

import pytest
import redis

from gateway.dataplane.limits import (
    REDIS_RETRY_AFTER_S,
    Bucket,
    Limiter,
    SpendReservation,
)
from gateway.tests.external import ROOT
from gateway.tests.fault.redis_topology import RedisSentinelServers

pytestmark = pytest.mark.slow


@pytest.fixture
def sentinels(tmp_path):
    servers = RedisSentinelServers(tmp_path).start()
    yield servers
    servers.stop()


def test_the_limiter_keeps_counting_across_a_sentinel_failover(sentinels):
    workers = [Limiter(sentinels.url, fallback_share=0.5) for _ in range(2)]
    buckets = [Bucket("bonito:{o1}:rl:k:1:r", 20, 1, "requests")]
    spend = SpendReservation(org_id=1, cap=100.0, reserve=1.0, baseline=0.0)

    async def burst(n):
        return await asyncio.gather(*[workers[i % 2].acquire(buckets, spend) for i in range(n)])

    async def run():
        started = time.monotonic()
        before = await burst(8)
        old_master = redis.Redis(port=sentinels.master_port())
        old_master.wait(1, 2000)  # the replica has every write: this tests failover, not loss
        promoted = sentinels.kill_master()
        during = await burst(8)  # refused connections: each worker its share, locally
        await asyncio.to_thread(sentinels.wait_promoted, promoted)
        await asyncio.sleep(
            REDIS_RETRY_AFTER_S + workers[0].reconcile_s + 0.5
        )  # PING, then the shares settle
        after = await burst(8)
        return before, during, after, promoted, time.monotonic() - started

    before, during, after, promoted, elapsed = asyncio.run(run())
    assert all(r.allowed and r.backend == "redis" for r in before)
    assert {r.backend for r in during} <= {"fallback", "redis"}
    assert {r.backend for r in after} == {"redis"}
    # The bucket moved with the data: 20 per minute, 8 before, up to 2 x 5 meanwhile (the
    # shares, owed to the new master), so the last burst gets what is left plus what
    # refilled while the test ran (counted twice: the new master's bucket refills, and what
    # is owed drains, at the bucket's rate).
    refill = 2 * elapsed * 20 / 60
    assert sum(r.allowed for r in before + during + after) <= 20 + math.ceil(refill)
    # The spend counter too: what was reserved before the kill and meanwhile is counted
    # on the promoted master (the reservations are never settled here).
    spent = max(r.spent for r in after if r.allowed) if any(r.allowed for r in after) else None
    counter = redis.Redis(port=promoted, decode_responses=True).hgetall(spend.key)
    total = float(counter["fl"]) + float(counter["inc"])
    admitted = sum(r.allowed for r in before + during + after)
    assert total == pytest.approx(admitted * 1.0)
    assert spent is None or spent <= total


SCRIPT = """
import asyncio, json
import django
django.setup()
from django.conf import settings
from django.core.cache import cache
from channels.layers import get_channel_layer
from kombu import Connection
from bonito.health import system_status

cache.set("h4-probe", "cached", 30)
out = {"cache": cache.get("h4-probe")}

async def channels():
    layer = get_channel_layer()
    name = await layer.new_channel()
    await layer.send(name, {"type": "probe", "text": "tail"})
    return (await layer.receive(name))["text"]

out["channels"] = asyncio.run(channels())
with Connection(settings.CELERY_BROKER_URL,
                transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS) as conn:
    queue = conn.SimpleQueue("h4-probe")
    queue.put({"task": "probe"})
    message = queue.get(timeout=5)
    out["celery"] = message.payload["task"]
    message.ack()
    queue.close()
out["ready"] = system_status()["redis"]
out["broker_url"] = settings.CELERY_BROKER_URL.split(";")[0].split("://")[0]
print(json.dumps(out))
"""


def test_every_component_works_through_a_sentinel_url(sentinels):
    env = {**os.environ, "REDIS_URL": sentinels.url, "DATABASE_URL": "sqlite:///:memory:"}
    env.pop("CELERY_BROKER_URL", None)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {
        "cache": "cached",
        "channels": "tail",
        "celery": "probe",
        "ready": {"ok": True, "detail": "ok"},
        "broker_url": "sentinel",
    }
    # Everything landed on the master the sentinels name.
    master = redis.Redis(port=sentinels.master_port())
    assert master.dbsize() > 0


def test_a_cluster_url_in_redis_url_is_refused_with_the_setting_to_use():
    env = {**os.environ, "REDIS_URL": "redis+cluster://127.0.0.1:7000"}
    proc = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "GATEWAY_REDIS_URL" in proc.stderr and "Traceback" in proc.stderr
