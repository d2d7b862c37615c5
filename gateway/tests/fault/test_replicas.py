"""Three replicas (`make serve`, two workers each) behind nginx, on one PostgreSQL and one
Redis (gateway/tests/replicas.py): limits and caps hold across replicas, a key's creation
and revocation reach every replica within 2 s, every answered request has exactly one usage
row, and a replica killed mid-load and restarted on its folders loses none.

Small loads (about 150 requests/s): this is about counts, not speed."""

import asyncio
import contextlib
import math
import subprocess
import sys
import threading
import time
from decimal import Decimal

import aiohttp
import httpx
import orjson
import pytest

from gateway.dataplane import tokens
from gateway.tests.external import ROOT
from gateway.tests.fault.postgres_server import free_port, postgres_bin
from gateway.tests.replicas import Replicas, nginx_binary

# alone: a change reaches every replica within 2 s
pytestmark = [pytest.mark.slow, pytest.mark.alone]

BODY = orjson.dumps(
    {"model": "chat", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
)
# The fake upstream reports 11 prompt and 5 completion tokens for every chat request.
IN_PRICE, OUT_PRICE = Decimal("100"), Decimal("1000")  # per million tokens
COST = (11 * IN_PRICE + 5 * OUT_PRICE) / 1_000_000
RESERVATION = (tokens.estimate_prompt_tokens(BODY) * IN_PRICE + 5 * OUT_PRICE) / 1_000_000
RPM = 40  # the rate-limited key's limit
CAP = (30 * COST).quantize(Decimal("0.01"))  # about 30 requests' worth, in whole cents

CONFIG = """
orgs:
{orgs}
"""
ORG = """
  - slug: {slug}
    name: {slug}
    tier: enterprise
    providers:
      - {{name: fake, kind: openai_compatible, api_base: "http://127.0.0.1:{port}/v1", api_key: sk-fake}}
    deployments:
      - {{model: chat, provider: fake, upstream_model: gpt-4o-mini, input_price_per_mtok: {inp}, output_price_per_mtok: {out}}}
"""
SETUP = """
import json
from decimal import Decimal
from gateway.services import api_key_create
from governance.services import policy_set
from orgs.audit import Actor
from orgs.models import Organization

actor = Actor(via="test")
org = {{slug: Organization.objects.get(slug=slug) for slug in ("load", "rl", "cap")}}
policy_set(actor=actor, org=org["cap"], monthly_spend_cap_usd=Decimal("{cap}"))
print(json.dumps({{
    "load": api_key_create(actor=actor, org=org["load"], name="load")[1],
    "rl": api_key_create(actor=actor, org=org["rl"], name="rl", rpm_limit={rpm})[1],
    "cap": api_key_create(actor=actor, org=org["cap"], name="cap")[1],
}}))
"""
CREATE = """
import json
from gateway.services import api_key_create
from orgs.audit import Actor
from orgs.models import Organization

import time

key, raw = api_key_create(actor=Actor(via="test"), org=Organization.objects.get(slug="load"), name="new")
print(json.dumps({"id": key.id, "raw": raw, "at": time.time()}))
"""
REVOKE = """
import json
from gateway.models import ApiKey
from gateway.services import api_key_revoke
from orgs.audit import Actor
import time

api_key_revoke(actor=Actor(via="test"), key=ApiKey.objects.get(pk={id}))
print(json.dumps({{"at": time.time()}}))
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if postgres_bin() is None or nginx_binary() is None:
        pytest.skip("PostgreSQL server binaries or nginx are not installed (make bench-deps)")
    tmp = tmp_path_factory.mktemp("replicas")
    upstream_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "gateway.tests.fake_upstream", "--port", str(upstream_port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        harness = Replicas(tmp, n=3, workers=2)
    except BaseException:
        upstream.terminate()
        raise
    try:
        harness.manage("migrate", "--noinput", "-v0")  # the setup needs the tables
        orgs = "".join(
            ORG.format(slug=slug, port=upstream_port, inp=IN_PRICE, out=OUT_PRICE)
            for slug in ("load", "rl", "cap")
        )
        (tmp / "bonito.yaml").write_text(CONFIG.format(orgs=orgs))
        harness.manage("apply_config", str(tmp / "bonito.yaml"))
        harness.keys = harness.shell(SETUP.format(cap=CAP, rpm=RPM))
        harness.start()
        for replica in harness.replicas:  # every worker has built its snapshot
            _warm(replica.url, harness.keys["load"])
        yield harness
    finally:
        harness.close()
        upstream.terminate()
        upstream.wait(10)


def _warm(url, key):
    for _ in range(8):
        r = _post(url, key)
        assert r.status_code == 200, r.text


def _post(url, key, request_id=None):
    """One request on a fresh connection (so it may reach either worker of a replica)."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    if request_id:
        headers["x-request-id"] = request_id
    with httpx.Client(timeout=30) as client:
        return client.post(url + "/v1/chat/completions", content=BODY, headers=headers)


async def _burst(url, key, n):
    """n requests at once through the balancer; their statuses, and how long they took."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:

        async def one():
            async with session.post(url + "/v1/chat/completions", data=BODY, headers=headers) as r:
                await r.read()
                return r.status

        t0 = time.monotonic()
        statuses = await asyncio.gather(*[one() for _ in range(n)])
        return list(statuses), time.monotonic() - t0


def test_2n_concurrent_requests_through_the_balancer_let_exactly_n_through(cluster):
    statuses, elapsed = asyncio.run(_burst(cluster.url, cluster.keys["rl"], 2 * RPM))
    # A bucket refills RPM/60 per second while the burst arrives: the only slack.
    assert RPM <= statuses.count(200) <= RPM + math.ceil(RPM * elapsed / 60)
    assert statuses.count(200) + statuses.count(429) == 2 * RPM


def test_a_spend_cap_overshoots_by_at_most_one_reservation_across_replicas(cluster):
    sent = 0
    for _ in range(4):  # bursts of 30 at once until the cap refuses
        statuses, _ = asyncio.run(_burst(cluster.url, cluster.keys["cap"], 30))
        sent += len(statuses)
        assert set(statuses) <= {200, 429}
        if 429 in statuses:
            break
    # Settlements trail responses: one at a time then fills the cap exactly.
    for _ in range(20):
        time.sleep(0.05)
        sent += 1
        if _post(cluster.url, cluster.keys["cap"]).status_code == 429:
            break
    deadline = time.time() + 30
    count, total = cluster.spent("cap")
    while count < sent and time.time() < deadline:
        time.sleep(0.2)
        count, total = cluster.spent("cap")
    assert count == sent  # refused requests are recorded too
    assert CAP <= total <= CAP + RESERVATION


STREAK = 12  # answers in a row on fresh connections: both workers of a replica, surely


async def _poll(url, key, expected: int, deadline: float) -> float | None:
    """Requests to one replica one after another, each on a fresh connection (so it may
    reach either worker), until STREAK in a row answer `expected`. Returns the wall time
    the first answer of that last run arrived (an upper bound on when the change reached
    the replica), or None if it never did before `deadline`."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        run_start, run = None, 0
        while time.time() < deadline:
            async with session.post(url + "/v1/chat/completions", data=BODY, headers=headers) as r:
                await r.read()
                if r.status == expected:
                    run_start = run_start if run else time.time()
                    run += 1
                    if run == STREAK:
                        return run_start
                else:
                    run = 0
    return None


def _every_replica(harness, key, expected: int) -> list[float | None]:
    """Polls every replica at once; per replica, when it answered `expected` for good."""

    async def run():
        deadline = time.time() + 15
        return await asyncio.gather(
            *[_poll(r.url, key, expected, deadline) for r in harness.replicas]
        )

    return asyncio.run(run())


def test_a_key_created_or_revoked_is_enforced_on_every_replica_within_2s(cluster):
    created = cluster.shell(CREATE)  # "at": the wall time the service returned
    accepted = _every_replica(cluster, created["raw"], 200)
    revoked = cluster.shell(REVOKE.format(id=created["id"]))
    refused = _every_replica(cluster, created["raw"], 401)
    # Per replica: from the service's return to its first answer of a run of STREAK right
    # ones (the shell's exit and the poll's start count against the bound, never for it).
    assert None not in accepted and None not in refused, (accepted, refused)
    after_create = [t - created["at"] for t in accepted]
    after_revoke = [t - revoked["at"] for t in refused]
    assert max(after_create) <= 2.0, after_create
    assert max(after_revoke) <= 2.0, after_revoke


def _gateway_answer(response_type: str) -> bool:
    """A response Bonito sent (JSON or a stream), not the balancer's own 502 page."""
    return response_type in ("application/json", "text/event-stream")


async def _one(session, url, key, rid, stream, received):
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    headers = {"Authorization": f"Bearer {key}", "x-request-id": rid}
    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
        async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as r:
            data = await r.read()
            if _gateway_answer(r.content_type) and (not stream or b"data: [DONE]" in data):
                received[rid] = (r.status, r.headers.get("X-Upstream", ""))


def _load(url, key, prefix, seconds, rate=150, at=None):
    """`rate` requests/s through the balancer for `seconds`, a quarter streamed; `at` =
    (delay, callable) runs mid-load. Returns request id -> (status, nginx's X-Upstream) of
    every request Bonito answered in full, and how many were sent."""

    async def run():
        received: dict[str, tuple[int, str]] = {}
        connector = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=30)
        ) as session:
            loop = asyncio.get_running_loop()
            if at is not None:
                loop.call_later(at[0], at[1])
            start, tasks, i = loop.time(), [], 0
            while loop.time() - start < seconds:
                rid = f"{prefix}-{i:05d}"
                tasks.append(
                    asyncio.ensure_future(_one(session, url, key, rid, i % 4 == 0, received))
                )
                i += 1
                await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
            await asyncio.gather(*tasks)
        return received, i

    return asyncio.run(run())


def _wait_for_rows(harness, prefix, expected: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    rows = harness.rows(prefix)
    while not expected <= rows.keys() and time.monotonic() < deadline:
        time.sleep(0.25)
        rows = harness.rows(prefix)
    return rows


def test_usage_rows_equal_the_requests_answered_across_replicas(cluster):
    prefix = f"spread-{time.time_ns()}"
    received, sent = _load(cluster.url, cluster.keys["load"], prefix, 2.0)
    assert len(received) == sent and {status for status, _ in received.values()} == {200}
    rows = _wait_for_rows(cluster, prefix, set(received))
    assert rows == dict.fromkeys(received, 1)


def test_a_replica_killed_mid_load_loses_no_usage_row(cluster):
    """SIGKILL to one replica's whole process group at 1.2 s of a 3 s load, while the
    database is slow (the usage table locked from 0.5 s to 2 s, so the victim's last records
    are only in its memory and journal): nginx sends new requests to the others; restarted
    on the same folders, the replica stores what its journal holds, and every answered
    request has exactly one row."""
    prefix = f"kill-{time.time_ns()}"
    victim = cluster.replicas[0]
    slow = threading.Thread(target=cluster.hold_usage_table, args=(1.5,))
    timer = threading.Timer(0.5, slow.start)
    timer.start()
    received, sent = _load(cluster.url, cluster.keys["load"], prefix, 3.0, at=(1.2, victim.kill))
    timer.join()
    slow.join(30)
    assert victim.proc is None
    ok = sum(1 for status, _ in received.values() if status == 200)
    assert ok >= sent * 0.8, f"only {ok} of {sent} requests answered"
    by_victim = {rid for rid, (_, upstream) in received.items() if victim.answered(upstream)}
    by_others = set(received) - by_victim
    assert by_victim and by_others
    # The live replicas store theirs; the dead one's records of its last moments wait in
    # its journal only: some of the requests it answered have no row (so the restart below
    # is what stores them).
    rows = _wait_for_rows(cluster, prefix, by_others)
    assert by_others <= rows.keys(), f"{len(by_others - rows.keys())} rows of live replicas"
    unstored = by_victim - rows.keys()
    assert unstored, "every request the killed replica answered was already stored"
    victim.start()
    rows = _wait_for_rows(cluster, prefix, set(received))
    missing = sorted(set(received) - rows.keys())
    assert not missing, (
        f"{len(missing)} of {len(received)} answered requests have no row "
        f"({len(unstored)} of the killed replica's {len(by_victim)} were waiting in its journal)"
    )
    doubled = {rid: n for rid, n in rows.items() if n != 1}
    assert not doubled, f"request ids with more than one row: {doubled}"
    _warm(victim.url, cluster.keys["load"])  # and it serves again
