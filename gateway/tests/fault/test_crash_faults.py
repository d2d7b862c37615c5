"""Usage is never lost, whatever happens to the server or the database.

Real processes: Bonito under uvicorn (ExternalBonito), the fake upstream over HTTP, and a
private PostgreSQL server (postgres_server.py) that a test may stop. A bounded load of
about 200 requests/s comes from an asyncio client that sends an `x-request-id` with each
request and notes which responses it received in full (a stream counts once its
`[DONE]` arrived). Every one of those must end up as exactly one usage row."""

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time

import aiohttp
import pytest

from gateway.tests.conftest import free_port
from gateway.tests.external import ExternalBonito
from gateway.tests.fake_upstream import FakeUpstream
from gateway.tests.fault.postgres_server import PostgresServer, postgres_bin

pytestmark = pytest.mark.slow

RATE = 200  # requests per second, a quarter of them streamed
CONFIG = """
orgs:
  - slug: acme
    name: Acme Corp
    tier: enterprise                 # no per-key RPM: the load is 200 requests/s
    providers:
      - {{name: fake, kind: openai_compatible, api_base: "{api_base}", api_key: sk-fake}}
    deployments:
      - {{model: chat-small, provider: fake, upstream_model: gpt-4o-mini}}
    policy:
      allowed_models: [chat-small]
"""


@pytest.fixture(scope="module")
def upstream():
    return FakeUpstream().start(free_port())


@pytest.fixture(scope="module")
def private_pg():
    if postgres_bin() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    server = PostgresServer().start()
    yield server
    server.close()


class Deployment:
    """One Bonito install (database, spool, journal) whose servers come and go."""

    def __init__(self, ext: ExternalBonito, key: str):
        self.ext, self.key = ext, key

    def serve(self, workers: int = 1) -> tuple[str, subprocess.Popen]:
        url = self.ext.serve(free_port(), workers=workers)
        # Every worker builds its snapshot and warms up on its first requests.
        load(url, self.key, f"warm-{time.time_ns()}", 1.0, rate=50)
        return url, self.ext.procs[-1]

    def hold_usage_table(self, seconds: float) -> None:
        """A slow database: inserts into gateway_requests wait behind a lock for a while."""
        if self.ext.pg_url:
            import psycopg

            with psycopg.connect(self.ext.direct_url) as conn:
                conn.execute("LOCK TABLE gateway_requests IN SHARE MODE")
                time.sleep(seconds)
            return
        import sqlite3

        conn = sqlite3.connect(self.ext.db_dir / "bonito.sqlite3", isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")  # the write lock
            time.sleep(seconds)
            conn.execute("COMMIT")
        finally:
            conn.close()

    def rows(self, prefix: str) -> dict[str, int]:
        """request_id -> number of usage rows, for the request ids a test sent."""
        query = (
            "SELECT request_id, count(*) FROM gateway_requests"
            " WHERE request_id LIKE %s GROUP BY request_id"
        )
        if self.ext.pg_url:
            import psycopg

            with psycopg.connect(self.ext.direct_url) as conn:
                return dict(conn.execute(query, (prefix + "%",)).fetchall())
        import sqlite3

        with sqlite3.connect(self.ext.db_dir / "bonito.sqlite3") as conn:
            return dict(conn.execute(query.replace("%s", "?"), (prefix + "%",)).fetchall())

    def model_requested(self, request_id: str) -> str:
        query = "SELECT model_requested FROM gateway_requests WHERE request_id = %s"
        if self.ext.pg_url:
            import psycopg

            with psycopg.connect(self.ext.direct_url) as conn:
                return conn.execute(query, (request_id,)).fetchone()[0]
        import sqlite3

        with sqlite3.connect(self.ext.db_dir / "bonito.sqlite3") as conn:
            return conn.execute(query.replace("%s", "?"), (request_id,)).fetchone()[0]

    def wait_for_rows(self, prefix: str, expected: set[str], timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        rows = self.rows(prefix)
        while not expected <= rows.keys() and time.monotonic() < deadline:
            time.sleep(0.25)
            rows = self.rows(prefix)
        return rows


def _deployment(tmp, upstream, database_url: str | None) -> Deployment:
    with pytest.MonkeyPatch.context() as mp:
        # ExternalBonito creates its own database on the server DATABASE_URL names (or a
        # SQLite file when it names none).
        if database_url:
            mp.setenv("DATABASE_URL", database_url)
        else:
            mp.delenv("DATABASE_URL", raising=False)
        ext = ExternalBonito(tmp)
    ext.migrate()
    (tmp / "bonito.yaml").write_text(CONFIG.format(api_base=upstream.url))
    ext.manage("apply_config", str(tmp / "bonito.yaml"))
    key = ext.manage("create_api_key", "--org", "acme", "--name", "load").strip().splitlines()[-1]
    return Deployment(ext, key)


@pytest.fixture(scope="module")
def sqlite_bonito(tmp_path_factory, upstream):
    deployment = _deployment(tmp_path_factory.mktemp("sqlite"), upstream, None)
    yield deployment
    deployment.ext.close()


@pytest.fixture(scope="module")
def pg_bonito(tmp_path_factory, upstream, private_pg):
    deployment = _deployment(tmp_path_factory.mktemp("pg"), upstream, private_pg.url)
    yield deployment
    deployment.ext.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def bonito(request):
    return request.getfixturevalue("sqlite_bonito" if request.param == "sqlite" else "pg_bonito")


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


def _workers(pid: int) -> list[int]:
    """uvicorn's worker processes (not multiprocessing's resource tracker)."""
    workers = []
    for child in _children(pid):
        with contextlib.suppress(OSError), open(f"/proc/{child}/cmdline", "rb") as f:
            if b"spawn_main" in f.read():
                workers.append(child)
    return workers


def _signal(proc: subprocess.Popen, sig: signal.Signals) -> None:
    """SIGTERM goes to the supervisor, which stops its workers gracefully (as systemd or
    Docker stop it); SIGKILL goes to every process, workers first (a lost machine)."""
    if sig == signal.SIGKILL:
        for child in _children(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, sig)
    proc.send_signal(sig)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def _one(session, url, key, request_id, stream, received, failed):
    body = {"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    headers = {"Authorization": f"Bearer {key}", "x-request-id": request_id}
    try:
        async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as r:
            data = await r.read()
            if not stream or b"data: [DONE]" in data:
                received[request_id] = r.status
                return
    except (TimeoutError, aiohttp.ClientError):
        pass
    failed.append(request_id)


def load(url, key, prefix, seconds, at=None, rate=RATE, until_refused=False):
    """`rate` requests/s for `seconds`; `at` = (delay, callable) runs mid-load. Returns
    request id -> status for every response received in full. With `until_refused`, the
    load goes on past `seconds` (15 s at most) until a request is not answered: on a loaded
    machine the server may take a while to act on a signal sent mid-load."""

    async def run():
        received: dict[str, int] = {}
        failed: list[str] = []
        timeout = aiohttp.ClientTimeout(total=15)
        connector = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            loop = asyncio.get_running_loop()
            if at is not None:
                loop.call_later(at[0], at[1])
            start, tasks, i = loop.time(), [], 0
            while loop.time() - start < seconds or (
                until_refused and not failed and loop.time() - start < seconds + 15
            ):
                rid = f"{prefix}-{i:05d}"
                tasks.append(
                    asyncio.ensure_future(
                        _one(session, url, key, rid, i % 4 == 0, received, failed)
                    )
                )
                i += 1
                await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
            await asyncio.gather(*tasks)
        return received, i

    return asyncio.run(run())


def _assert_exactly_once(rows: dict[str, int], received: dict[str, int]) -> None:
    missing = sorted(set(received) - rows.keys())
    assert not missing, f"{len(missing)} of {len(received)} answered requests have no row"
    doubled = {rid: n for rid, n in rows.items() if n != 1}
    assert not doubled, f"request ids with more than one row: {doubled}"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_signalled_server_loses_no_usage_row_for_an_answered_request(bonito, sig):
    """`make serve` with two workers at 200 requests/s; the database is slow (a lock on
    the usage table from 0.8 s to 2.4 s), so records wait in memory when the signal comes."""
    prefix = f"{sig.name.lower()}-{bonito.ext.pg_url and 'pg' or 'sqlite'}-{time.time_ns()}"
    url, proc = bonito.serve(workers=2)
    slow = threading.Thread(target=bonito.hold_usage_table, args=(1.6,))
    timer = threading.Timer(0.8, slow.start)
    timer.start()
    received, sent = load(
        url, bonito.key, prefix, 2.5, at=(1.6, lambda: _signal(proc, sig)), until_refused=True
    )
    timer.join()
    slow.join(30)
    proc.wait(30)
    ok = sum(1 for status in received.values() if status == 200)
    # Enough answered that records were waiting in memory when the signal came (about 300
    # are sent before it; a CI machine shared with other runs answered 123 of them once).
    assert ok >= 50, f"only {ok} of {sent} requests succeeded before the {sig.name}"
    assert len(received) < sent, "the server was still answering after the signal"

    if sig == signal.SIGTERM:
        # A graceful stop writes every record before the process ends: no restart needed.
        _assert_exactly_once(bonito.rows(prefix), received)
        return
    # Killed processes left their records in their journals: the next server stores them.
    url, proc = bonito.serve()
    try:
        _assert_exactly_once(bonito.wait_for_rows(prefix, set(received)), received)
    finally:
        _stop(proc)


def test_a_killed_worker_loses_no_usage_row_and_the_server_keeps_serving(bonito):
    """One of two workers is killed under load: uvicorn starts a new one, which stores
    the records the dead worker left in its journal; no restart by hand."""
    prefix = f"worker-{bonito.ext.pg_url and 'pg' or 'sqlite'}-{time.time_ns()}"
    url, proc = bonito.serve(workers=2)
    try:
        victim = _workers(proc.pid)[0]
        slow = threading.Thread(target=bonito.hold_usage_table, args=(1.6,))
        timer = threading.Timer(0.8, slow.start)
        timer.start()
        received, sent = load(
            url, bonito.key, prefix, 3.0, at=(1.6, lambda: os.kill(victim, signal.SIGKILL))
        )
        timer.join()
        slow.join(30)
        assert sum(1 for status in received.values() if status == 200) >= 300
        # uvicorn's supervisor notices the dead worker on its next check and starts another
        # (on a loaded machine that can be after the load ends).
        deadline = time.monotonic() + 15
        while len(_workers(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert victim not in _workers(proc.pid) and len(_workers(proc.pid)) == 2
        _assert_exactly_once(bonito.wait_for_rows(prefix, set(received)), received)
    finally:
        _stop(proc)


def test_postgresql_stopped_under_load_loses_nothing_and_doubles_nothing(pg_bonito, private_pg):
    prefix = f"pgstop-{time.time_ns()}"
    url, proc = pg_bonito.serve()
    try:

        def bounce():
            private_pg.stop()  # open transactions roll back, connections are cut
            time.sleep(1.0)
            private_pg.start()

        bouncer = threading.Thread(target=bounce)
        received, sent = load(url, pg_bonito.key, prefix, 4.0, at=(1.0, bouncer.start))
        bouncer.join(60)
        from collections import Counter

        assert sum(1 for status in received.values() if status == 200) == len(received) == sent, (
            Counter(received.values())
        )
        _assert_exactly_once(pg_bonito.wait_for_rows(prefix, set(received)), received)
        assert not list((pg_bonito.ext.tmp / "spool").glob("*.jsonl"))
    finally:
        _stop(proc)


def test_a_nul_in_the_model_name_blocks_no_later_usage(bonito):
    prefix = f"nul-{time.time_ns()}"
    url, proc = bonito.serve()
    try:
        import httpx

        headers = {"Authorization": f"Bearer {bonito.key}"}
        poison = httpx.post(
            url + "/v1/chat/completions",
            content=b'{"model": "chat\\u0000small", "messages": [{"role": "user", "content": "hi"}]}',
            headers={
                **headers,
                "x-request-id": f"{prefix}-poison",
                "Content-Type": "application/json",
            },
            timeout=30,
        )
        assert poison.status_code < 500
        after = [
            httpx.post(
                url + "/v1/chat/completions",
                json={"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]},
                headers={**headers, "x-request-id": f"{prefix}-{i:02d}"},
                timeout=30,
            ).status_code
            for i in range(20)
        ]
        assert after == [200] * 20
        expected = {f"{prefix}-poison"} | {f"{prefix}-{i:02d}" for i in range(20)}
        rows = bonito.wait_for_rows(prefix, expected, timeout=15)
        assert rows == dict.fromkeys(expected, 1)
        # Refused with a 400 (a model name holds no control characters), and recorded.
        assert poison.status_code == 400
        assert poison.json()["error"]["param"] == "model"
        assert "\x00" not in bonito.model_requested(f"{prefix}-poison")
        assert not list((bonito.ext.tmp / "spool").glob("*.jsonl"))
    finally:
        _stop(proc)
