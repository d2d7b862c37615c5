#!/usr/bin/env python3
"""Bonito at scale, end to end (issue 14): many orgs and keys, a month of usage rows,
two workers, config changes landing while traffic flows.

Black box: it seeds a PostgreSQL database of its own with SQL, starts the server the
`make serve` way (uvicorn, WEB_CONCURRENCY workers, lifespan on) against it and a Redis
database of its own, and measures from outside what the code of this checkout does:

- ready: process start until every worker answers `/v1` with a key (its first snapshot);
- propagation: a key created through gateway.services (in this process, same database)
  until every worker answers 200 with it; a key revoked until every worker refuses it;
- `/v1` p99 added latency under a steady, paced load (wrk) while a config change lands
  every second (create a key, change a policy, revoke a key, in turn): client-side
  latency against the bare upstream at the same rate, and Bonito's own
  `x-bonito-overhead-ms`; the same on one connection (`--c1-rate`), where no request of
  the load waits behind another in the worker;
- worker RSS after start and after the load, and the workers' CPU time (/proc) per phase.

"Every worker": uvicorn's workers share one listening socket, so which worker answers a
fresh connection is up to the kernel. The bench pins one keep-alive connection to each
worker: it opens connections until, for each worker, one is held by it (the server side
of the connection found in /proc/net/tcp and in the worker's /proc/<pid>/fd), then asks
every question once per worker on its own connection.

Needs DATABASE_URL pointing at a PostgreSQL server (the database named there is only used
to create and drop the bench's own, `--db`), Redis at REDIS_URL's host (database
`--redis-db`, flushed), nginx and wrk. `--smoke` is a small, quick run that keeps the
harness working; its numbers mean nothing.
"""

import argparse
import contextlib
import http.client
import json
import os
import queue
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (  # noqa: E402 - the harness pieces of bench/run.py
    ROOT,
    Procs,
    free_port,
    start_upstream,
)

sys.path.insert(0, str(ROOT))

# Fixed, so that a database seeded by one run (--keep-db) decrypts in the next (--reuse-db).
SECRET = "bonito-scale-bench-secret-0123456789-not-for-production-use"  # noqa: S105
UPSTREAM_KEY = "bench-upstream-key"
CHAT = {
    "model": "bench-chat",
    "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
}
TEMPLATE = """
orgs:
  - slug: scale-00000
    name: Scale 00000
    tier: enterprise
    teams: [Research, Support]
    providers:
      - {{name: nginx, kind: openai_compatible, api_base: "http://127.0.0.1:{port}/json/v1", api_key: {key}}}
      - {{name: nginx-b, kind: openai_compatible, api_base: "http://127.0.0.1:{port}/json/v1", api_key: {key}}}
    deployments:
      - {{model: bench-chat, provider: nginx, upstream_model: gpt-4o-mini}}
      - {{model: bench-chat, provider: nginx-b, upstream_model: gpt-4o-mini}}
      - {{model: bench-mini, provider: nginx-b, upstream_model: gpt-4o-mini}}
    policy:
      allowed_models: [bench-chat, bench-mini]
      monthly_spend_cap_usd: 1000000000
    routing_policies:
      - {{name: ha, strategy: failover, models: [bench-chat, bench-mini]}}
      - {{name: split, strategy: weighted, models: [bench-chat, bench-mini], weights: {{bench-chat: 9, bench-mini: 1}}}}
    gateway:
      default_strategy: failover
"""

# The load's pacing and Bonito's own time per request, collected in wrk's Lua threads.
LUA = r"""
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) overhead = {} ; statuses = {} end
if pause > 0 then function delay() return pause end end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  local o = headers["x-bonito-overhead-ms"] or headers["X-Bonito-Overhead-Ms"]
  if o then
    local b = math.floor(tonumber(o) * 100)
    overhead[b] = (overhead[b] or 0) + 1
  end
end
function done(summary, latency, requests)
  local o, s = {}, {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("overhead")) do o[k] = (o[k] or 0) + v end
    for k, v in pairs(t:get("statuses")) do s[k] = (s[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(o) do table.insert(parts, k .. ":" .. v) end
  io.write("OVERHEAD " .. table.concat(parts, ",") .. "\n")
  parts = {}
  for k, v in pairs(s) do table.insert(parts, k .. ":" .. v) end
  io.write("STATUSES " .. table.concat(parts, ",") .. "\n")
  for _, p in ipairs({50, 90, 99, 99.9}) do
    io.write(string.format("PCT %s %.3f\n", p, latency:percentile(p) / 1000))
  end
  io.write(string.format("MAXLAT %.3f\n", latency.max / 1000))
end
"""


# ---------------------------------------------------------------------------- seeding
SERVER_URL = os.environ.get("DATABASE_URL", "")  # read before the bench points it at --db


def server_url() -> str:
    url = SERVER_URL
    if not url.startswith("postgres"):
        sys.exit("bench/scale.py needs DATABASE_URL=postgres://… (a PostgreSQL server)")
    return url


def create_database(name: str) -> str:
    import psycopg

    url = server_url()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + "/" + name


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(server_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def clone_sql(table: str, columns: list[str], remap: dict[str, str], extra_from="") -> str:
    """INSERT a copy of the template org's rows of `table` for every other scale org."""
    cols = [c for c in columns if c != "id"]
    select = [remap.get(c, f"t.{c}") for c in cols]
    # Table and column names come from this file and the catalog, never from input.
    return (
        f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(select)} "  # noqa: S608
        f"FROM {table} t JOIN scale_orgs o ON o.idx > 0 {extra_from} "
        f"WHERE t.org_id = (SELECT id FROM scale_orgs WHERE idx = 0)"
    )


def insert_seed_keys(cur, lo: int, hi: int) -> None:
    """Seed keys lo..hi-1: random hashes (never presented), spread over the scale orgs;
    every 5th in a team, every 50th an rt- key on its org's "ha" routing policy."""
    cur.execute(
        "INSERT INTO gateway_apikey (name, kind, key_hash, prefix, last4, allowed_models, "
        "allowed_providers, rpm_limit, tpm_limit, created_at, org_id, team_id, "
        "routing_policy_id, previous_key_hash, previous_masked, is_active) "
        "SELECT 'seed-' || g, CASE WHEN g %% 50 = 0 THEN 'rt' ELSE 'sk' END, "
        "md5(g::text || 'a') || md5(g::text || 'b'), 'sk-seed', right(g::text, 4), "
        "'[]'::jsonb, '[]'::jsonb, CASE WHEN g %% 3 = 0 THEN 600 END, NULL, now(), o.id, "
        "CASE WHEN g %% 5 = 0 THEN (SELECT min(id) FROM orgs_team WHERE org_id = o.id) END, "
        "CASE WHEN g %% 50 = 0 THEN (SELECT id FROM governance_routingpolicy "
        "  WHERE org_id = o.id AND name = 'ha') END, '', '', true "
        "FROM generate_series(%s, %s) g "
        "JOIN scale_orgs o ON o.idx = g %% (SELECT count(*) FROM scale_orgs)",
        [lo, hi - 1],
    )


def seed(args, up_port: int, log) -> dict:
    """Orgs, keys and usage rows by SQL; the template org and the bench's own keys by the
    real code (apply_config, gateway.services), so hashes and credentials are genuine."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection, transaction

    from billing.models import RollupState, UsageRecord
    from billing.services import align, rollup_recent

    USAGE_ROLLUP_GRACE_S = settings.USAGE_ROLLUP_GRACE_S

    timings = {}
    started = time.perf_counter()
    call_command("migrate", "--noinput", verbosity=0)
    timings["migrate_s"] = time.perf_counter() - started

    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bonito-scale-"))
    (tmp / "template.yaml").write_text(TEMPLATE.format(port=up_port, key=UPSTREAM_KEY))
    call_command("apply_config", str(tmp / "template.yaml"), verbosity=0)
    shutil.rmtree(tmp, ignore_errors=True)

    def columns(table):
        with connection.cursor() as cur:
            cur.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                "ORDER BY ordinal_position",
                [table],
            )
            return [r[0] for r in cur.fetchall()]

    source = UsageRecord._meta.get_field("source").default
    n_orgs, n_keys, n_rows = args.orgs, args.keys, args.rows
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SET LOCAL synchronous_commit = off")
        cur.execute(
            "INSERT INTO orgs_organization (slug, name, tier, deployment_mode, created_at) "
            "SELECT 'scale-' || lpad(g::text, 5, '0'), 'Scale ' || lpad(g::text, 5, '0'), "
            "'enterprise', 'shared', now() FROM generate_series(1, %s) g",
            [n_orgs - 1],
        )
        cur.execute(
            "CREATE TABLE scale_orgs AS SELECT id, (row_number() OVER (ORDER BY slug)) - 1 AS idx "
            "FROM orgs_organization WHERE slug LIKE 'scale-%'"
        )
        cur.execute("CREATE UNIQUE INDEX ON scale_orgs (idx)")
        for table in (
            "orgs_team",
            "gateway_providerconnection",
            "governance_policy",
            "governance_routingpolicy",
            "gateway_gatewayconfig",
        ):
            cur.execute(clone_sql(table, columns(table), {"org_id": "o.id"}))
        # Deployments point at the new org's provider of the same name.
        cur.execute(
            clone_sql(
                "gateway_deployment",
                columns("gateway_deployment"),
                {"org_id": "o.id", "provider_id": "np.id"},
                extra_from="JOIN gateway_providerconnection tp ON tp.id = t.provider_id "
                "JOIN gateway_providerconnection np ON np.org_id = o.id AND np.name = tp.name",
            )
        )
        # A monthly org budget everywhere; every 10th org's is hard (checked per build).
        cur.execute(
            "INSERT INTO billing_budget (scope, period, amount_usd, hard, thresholds, "
            "webhook_url, is_active, created_at, org_id) SELECT 'org', 'monthly', 1000000, "
            "o.idx % 10 = 0, '[50, 80, 100]'::jsonb, '', true, now(), o.id FROM scale_orgs o"
        )
        insert_seed_keys(cur, 0, n_keys)
    timings["orgs_keys_s"] = time.perf_counter() - started
    log(f"seeded {n_orgs:,} orgs and {n_keys:,} keys in {timings['orgs_keys_s']:.1f} s")

    # Usage rows this month, spread from the 1st until now, by 1M-row statements. Traffic
    # is skewed as it is in life: 90% of the rows on 1% of the keys, the rest on all.
    started = time.perf_counter()
    now = datetime.now(UTC)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    with connection.cursor() as cur:
        cur.execute(
            "CREATE TABLE scale_keys AS SELECT id, org_id, team_id, "
            "(row_number() OVER (ORDER BY id)) - 1 AS idx FROM gateway_apikey"
        )
        cur.execute("CREATE UNIQUE INDEX ON scale_keys (idx)")
        n_all_keys = n_keys + 0
        chunk = 1_000_000
        for lo in range(0, n_rows, chunk):
            hi = min(n_rows, lo + chunk) - 1
            with transaction.atomic():
                cur.execute("SET LOCAL synchronous_commit = off")
                cur.execute(
                    "INSERT INTO gateway_requests (id, model_requested, model_used, provider, "
                    "deployment, endpoint, input_tokens, output_tokens, cached_tokens, cost, "
                    "latency_ms, ttft_ms, status, http_status, error_type, request_id, source, "
                    "created_at, key_id, org_id, team_id, routing_policy, route_classifier, "
                    "route_tier, unit) "
                    "SELECT gen_random_uuid(), 'bench-chat', 'gpt-4o-mini', 'nginx', "
                    "'gpt-4o-mini', 'chat', 10 + g %% 3000, 1 + g %% 700, 0, "
                    "round((random() / 1000)::numeric, 8), 50 + g %% 900, NULL, "
                    "CASE WHEN g %% 50 = 0 THEN 'error' ELSE 'success' END, "
                    "CASE WHEN g %% 50 = 0 THEN 502 ELSE 200 END, '', '', %s, "
                    "%s::timestamptz + (%s::timestamptz - %s::timestamptz) * (g::float8 / %s), "
                    "k.id, k.org_id, k.team_id, '', '', '', '' "
                    "FROM generate_series(%s, %s) g JOIN scale_keys k ON k.idx = CASE WHEN g %% 10 < 9 "
                    "THEN (g::bigint * 7919) %% %s ELSE (g::bigint * 7919) %% %s END",
                    [
                        source,
                        month_start,
                        now,
                        month_start,
                        max(1, n_rows),
                        lo,
                        hi,
                        max(1, n_all_keys // 100),
                        n_all_keys,
                    ],
                )
            log(f"  usage rows {hi + 1:,}/{n_rows:,} ({time.perf_counter() - started:.0f} s)")
        cur.execute("DROP TABLE scale_keys")
    timings["usage_rows_s"] = time.perf_counter() - started

    # Rollups as the deployment would have them: backfill_rollups (a day at a time; the
    # rollup task's first run would take the whole month in one window and hold every
    # group in memory), then the task's watermark, then one run of the task itself.
    started = time.perf_counter()
    call_command("backfill_rollups", since=f"{month_start:%Y-%m-%d}", verbosity=0)
    RollupState.objects.update_or_create(
        period="hour",
        defaults={"rolled_until": align(now - timedelta(seconds=USAGE_ROLLUP_GRACE_S), "hour")},
    )
    rollup_recent(now=datetime.now(UTC))
    timings["rollup_s"] = time.perf_counter() - started
    log(f"rolled up in {timings['rollup_s']:.1f} s")
    started = time.perf_counter()
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    timings["vacuum_s"] = time.perf_counter() - started
    return {k: round(v, 1) for k, v in timings.items()}


def bench_keys(n: int):
    """Real keys of the template org through the services: hashes match the key secret."""
    from gateway import services as gateway_services
    from orgs.audit import Actor
    from orgs.models import Organization

    org = Organization.objects.get(slug="scale-00000")
    return [
        gateway_services.api_key_create(
            actor=Actor(via="bench"), org=org, name=f"bench-{i}", rpm_limit=100_000_000
        )
        for i in range(n)
    ]


# ---------------------------------------------------------------------------- the workers
def worker_pids(master: int) -> list[int]:
    """uvicorn's worker processes (children of the master, not multiprocessing helpers)."""
    out = []
    for pid in subprocess.run(
        ["pgrep", "-P", str(master)], capture_output=True, text=True
    ).stdout.split():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"resource_tracker" not in cmd:
            out.append(int(pid))
    return sorted(out)


def uvicorn_master(make_pid: int) -> int:
    """`make serve` execs uvicorn from its recipe shell: the master is make's child."""
    for _ in range(600):
        for pid in subprocess.run(
            ["pgrep", "-P", str(make_pid)], capture_output=True, text=True
        ).stdout.split():
            with contextlib.suppress(FileNotFoundError):
                if b"uvicorn" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return int(pid)
        time.sleep(0.1)
    raise RuntimeError("uvicorn did not start")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (/proc/<pid>/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def socket_owner(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """The worker holding the server side of the loopback connection from client_port."""
    want_local = f":{server_port:04X}"
    want_remote = f":{client_port:04X}"
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[1].endswith(want_local) and parts[2].endswith(want_remote):
            inode = parts[9]
            break
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(FileNotFoundError, OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
    return None


class Pinned:
    """One keep-alive connection per worker, each known to be held by that worker."""

    def __init__(self, port: int, pids: list[int], probe_key: str):
        self.port, self.pids, self.probe_key = port, pids, probe_key
        self.conns: dict[int, http.client.HTTPConnection] = {}
        self.lock = threading.Lock()

    def pin(self, attempts=400) -> None:
        with self.lock:
            self._pin(attempts)

    def _pin(self, attempts) -> None:
        spare = []
        for _ in range(attempts):
            missing = [p for p in self.pids if p not in self.conns]
            if not missing:
                break
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            conn.connect()
            owner = None
            for _ in range(50):  # accepted by a worker once it has read the request
                status = self._ask(conn, self.probe_key, probe=True)
                owner = socket_owner(self.port, conn.sock.getsockname()[1], self.pids)
                if owner is not None or status is None:
                    break
            if owner in missing:
                self.conns[owner] = conn
            else:
                spare.append(conn)
        for conn in spare:
            conn.close()
        if len(self.conns) < len(self.pids):
            raise RuntimeError(f"could not reach every worker: {sorted(self.conns)}")

    @staticmethod
    def _ask(conn, key, probe=False) -> int | None:
        try:
            if probe:
                conn.request("GET", "/v1/models", headers={"Authorization": f"Bearer {key}"})
            else:
                conn.request(
                    "POST",
                    "/v1/chat/completions",
                    body=json.dumps(CHAT),
                    headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                )
            resp = conn.getresponse()
            resp.read()
            return resp.status
        except (OSError, http.client.HTTPException):
            return None

    def ask(self, pid: int, key: str) -> int | None:
        """A chat completion with `key` on `pid`'s connection (re-pinned if it was closed)."""
        status = self._ask(self.conns[pid], key)
        if status is None:
            with self.lock:
                self.conns.pop(pid).close()
            self.pin()
            status = self._ask(self.conns[pid], key)
        return status

    def until(self, key: str, want: int, timeout: float, interval: float, t0: float) -> dict:
        """Per worker, seconds from t0 until it first answers `want` (one thread each)."""
        seen: dict[int, float | None] = {}

        def watch(pid):
            while time.monotonic() - t0 < timeout:
                with contextlib.suppress(OSError, RuntimeError, KeyError):
                    if self.ask(pid, key) == want:
                        seen[pid] = time.monotonic() - t0
                        return
                time.sleep(interval)
            seen[pid] = None

        threads = [threading.Thread(target=watch, args=(p,)) for p in self.pids]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return seen

    def close(self):
        for conn in self.conns.values():
            conn.close()
        self.conns.clear()


# ---------------------------------------------------------------------------- load
def wrk_paced(url, key, body, rate, seconds, tmp: Path, connections=8) -> dict:
    """`connections` connections, each pausing so that together they send ~`rate` req/s."""
    script = tmp / "scale.lua"
    script.write_text(LUA)
    env = {
        **os.environ,
        "BENCH_BODY": json.dumps(body),
        "BENCH_KEY": key,
        "BENCH_DELAY_MS": f"{connections * 1000 / rate:.3f}",
    }
    out = subprocess.run(
        [
            "wrk",
            f"-t{min(2, connections)}",
            f"-c{connections}",
            f"-d{seconds}s",
            "-s",
            str(script),
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
    }
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["socket_errors"] = sum(map(int, errors.groups())) if errors else 0
    for m in re.finditer(r"^PCT (\S+) (\S+)$", out, re.M):
        result[f"p{m.group(1)}_ms"] = float(m.group(2))
    result["max_ms"] = float(re.search(r"^MAXLAT (\S+)$", out, re.M).group(1))
    statuses = re.search(r"^STATUSES (.*)$", out, re.M).group(1)
    result["statuses"] = {k: int(v) for k, v in (p.split(":") for p in statuses.split(",") if p)}
    hist = re.search(r"^OVERHEAD (.*)$", out, re.M).group(1)
    pairs = sorted((int(k), int(v)) for k, v in (p.split(":") for p in hist.split(",") if p))
    total = sum(v for _, v in pairs)
    if total:
        for pct in (50, 99, 99.9):
            need, acc = total * pct / 100, 0
            for bucket, count in pairs:
                acc += count
                if acc >= need:
                    result[f"overhead_p{pct}_ms"] = bucket / 100
                    break
        result["overhead_max_ms"] = pairs[-1][0] / 100
    return result


# ---------------------------------------------------------------------------- main
class ReadyOnly(Exception):
    """--ready-only: the run stops after the start-up figures."""


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orgs", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--smoke", action="store_true", help="20 orgs, 2k keys, 20k rows, short")
    parser.add_argument("--db", default="bonito_bench_scale", help="database created and dropped")
    parser.add_argument("--reuse-db", action="store_true", help="keep a seeded --db, skip seeding")
    parser.add_argument("--keep-db", action="store_true", help="do not drop --db at the end")
    parser.add_argument("--redis-db", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=200.0, help="req/s of the steady load")
    parser.add_argument("--load-seconds", type=int, default=30)
    parser.add_argument(
        "--c1-rate", type=float, default=50.0, help="req/s of the one-connection load"
    )
    parser.add_argument("--propagation-runs", type=int, default=5)
    parser.add_argument(
        "--ready-only", action="store_true", help="stop after ready and the RSS at start"
    )
    parser.add_argument("--out", default=str(ROOT / "var" / "bench" / "scale.json"))
    args = parser.parse_args()
    if not SERVER_URL.startswith("postgres"):
        # make bench runs this too; on the embedded defaults there is nothing to measure.
        print("bench/scale.py: skipped, it needs DATABASE_URL=postgres://… (see docs/scaling.md)")
        return None
    if args.smoke:
        args.orgs, args.keys, args.rows = 20, 2000, 20_000
        args.load_seconds, args.propagation_runs = 5, 2
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is missing: make bench-deps installs it")

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="bonito-scale-"))
    procs = Procs()
    results: dict = {
        "orgs": args.orgs,
        "keys": args.keys,
        "usage_rows": args.rows,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
    }
    base_redis = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    redis_url = base_redis.rsplit("/", 1)[0] + f"/{args.redis_db}"
    try:
        # ------------------------------------------------------------ upstream (nginx)
        up_port = start_upstream(procs, tmp)
        direct = f"http://127.0.0.1:{up_port}/json/v1/chat/completions"

        # ------------------------------------------------------------ database, seed
        if args.reuse_db:
            db_url = server_url().rsplit("/", 1)[0] + "/" + args.db
        else:
            db_url = create_database(args.db)
        os.environ.update(
            {
                "DATABASE_URL": db_url,
                "REDIS_URL": redis_url,
                "SECRET_KEY": SECRET,
                "DEBUG": "0",
                "SECURE_SSL_REDIRECT": "0",
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LOG_LEVEL": "WARNING",
                "PROVIDER_ALLOWED_NETWORKS": "127.0.0.1/32",
                "GATEWAY_SPOOL_DIR": str(tmp / "spool"),
                "WEB_CONCURRENCY": str(args.workers),
            }
        )
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bonito.settings")
        import django

        django.setup()
        import redis
        from django.db import connection

        from gateway import services as gateway_services
        from gateway.models import ApiKey
        from governance import services as governance_services
        from orgs.audit import Actor
        from orgs.models import Organization

        redis.Redis.from_url(redis_url).flushdb()
        started = time.perf_counter()
        if args.reuse_db:
            from django.core.management import call_command

            call_command("migrate", "--noinput", verbosity=0)
            with connection.cursor() as cur:  # --keys above the seeded count: add the rest
                cur.execute("SELECT count(*) FROM gateway_apikey WHERE name LIKE 'seed-%%'", [])
                seeded = cur.fetchone()[0]
                if args.keys > seeded:
                    insert_seed_keys(cur, seeded, args.keys)
                    cur.execute("VACUUM ANALYZE gateway_apikey")
                    log(f"added {args.keys - seeded:,} seed keys")
            # The upstream moved: point the seeded providers at this run's nginx.
            with connection.cursor() as cur:
                cur.execute(
                    "UPDATE gateway_providerconnection SET api_base = %s",
                    [f"http://127.0.0.1:{up_port}/json/v1"],
                )
            from core.config_version import config_version_bump

            config_version_bump()
            results["seed"] = "reused"
        else:
            log(f"seeding {args.db}: {args.orgs:,} orgs, {args.keys:,} keys, {args.rows:,} rows")
            results["seed"] = seed(args, up_port, log)
        with connection.cursor() as cur:
            cur.execute("SELECT count(*) FROM gateway_apikey")
            results["keys_in_db"] = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM gateway_requests")
            results["usage_rows_in_db"] = cur.fetchone()[0]
            cur.execute("SELECT pg_database_size(current_database())")
            results["database_mb"] = round(cur.fetchone()[0] / 2**20)
        # The load's key, the probe's, and the keys revoked under load: created before the
        # server starts, so every worker has them (a key revoked before a worker saw it
        # would measure nothing).
        # A third of each run's changes is a revocation: the eight-connection and the
        # one-connection runs (load_seconds each) and the watched run (at least 10 s).
        revocations = (2 * args.load_seconds + max(10, args.load_seconds // 2)) // 3
        created = bench_keys(2 + revocations + 4)
        load_key, probe_key = created[0][1], created[1][1]
        revoke_pool = created[2:]
        connection.close()
        log(
            f"database ready ({time.perf_counter() - started:.0f} s): "
            f"{results['keys_in_db']:,} keys, {results['usage_rows_in_db']:,} usage rows"
        )

        # ------------------------------------------------------------ start: make serve
        port = free_port()
        env = {**os.environ, "PORT": str(port)}
        started = time.monotonic()
        make = procs.start(
            ["make", "-s", "serve"],
            cwd=ROOT,
            env=env,
            stdout=open(tmp / "bonito.log", "w"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        master = uvicorn_master(make.pid)
        uvicorn_started = time.monotonic()
        for _ in range(600):
            pids = worker_pids(master)
            if len(pids) >= args.workers:
                break
            time.sleep(0.1)
        log(f"uvicorn master {master}, workers {pids}")
        pinned = Pinned(port, pids, probe_key)
        ready = {}
        deadline = time.monotonic() + 600
        while len(ready) < len(pids) and time.monotonic() < deadline:
            with contextlib.suppress(OSError, RuntimeError):
                if not pinned.conns:
                    pinned.pin()
                for pid in pids:
                    if pid not in ready and pinned.ask(pid, probe_key) == 200:
                        ready[pid] = time.monotonic() - uvicorn_started
            time.sleep(0.05)
        if len(ready) < len(pids):
            raise RuntimeError(f"workers not ready: {ready}; see {tmp / 'bonito.log'}")
        results["ready_s"] = {
            "make_serve_to_all_workers": round(time.monotonic() - started, 2),
            "uvicorn_to_each_worker": [round(v, 2) for v in ready.values()],
        }
        log(f"ready: {results['ready_s']}")
        time.sleep(2)
        results["rss_mb_after_start"] = [round(rss_mb(p), 1) for p in pids]
        cpu0 = {p: cpu_s(p) for p in pids}
        results["cpu_s_start"] = [round(v, 2) for v in cpu0.values()]
        if args.ready_only:
            raise ReadyOnly

        # ------------------------------------------------------------ propagation, quiet
        actor = Actor(via="bench")
        org = Organization.objects.get(slug="scale-00000")
        other_orgs = list(
            Organization.objects.exclude(pk=org.pk).values_list("slug", flat=True)[:50]
        )

        def create_and_watch(interval, timeout=120):
            key, raw = gateway_services.api_key_create(
                actor=actor, org=org, name="propagation", rpm_limit=100_000_000
            )
            t0 = time.monotonic()
            return key, raw, pinned.until(raw, 200, timeout, interval, t0)

        def revoke_and_watch(key, raw, interval, timeout=120):
            gateway_services.api_key_revoke(actor=actor, key=ApiKey.objects.get(pk=key.pk))
            t0 = time.monotonic()
            return pinned.until(raw, 401, timeout, interval, t0)

        quiet = {"create": [], "revoke": []}
        pinned.close()
        pinned.pin()
        for _ in range(args.propagation_runs):
            key, raw, seen = create_and_watch(0.02)
            quiet["create"].append(max(v if v is not None else 1e9 for v in seen.values()))
            time.sleep(0.5)
            seen = revoke_and_watch(key, raw, 0.02)
            quiet["revoke"].append(max(v if v is not None else 1e9 for v in seen.values()))
            time.sleep(0.5)
        results["propagation_quiet_s"] = {k: [round(v, 3) for v in vs] for k, vs in quiet.items()}
        log(f"propagation (quiet): {results['propagation_quiet_s']}")
        cpu1 = {p: cpu_s(p) for p in pids}
        results["cpu_s_propagation_quiet"] = [round(cpu1[p] - cpu0[p], 2) for p in pids]

        # ------------------------------------------------------------ load + changes
        direct_load = wrk_paced(
            direct, "none", {**CHAT, "model": "gpt-4o-mini"}, args.rate, 10, tmp
        )
        results["upstream_paced"] = direct_load
        bonito_url = f"http://127.0.0.1:{port}/v1/chat/completions"
        wrk_paced(bonito_url, load_key, CHAT, args.rate, 3, tmp)  # warm-up
        # As long as the run under changes: a longer run meets more of the rare slow requests.
        quiet_load = wrk_paced(bonito_url, load_key, CHAT, args.rate, args.load_seconds, tmp)
        results["bonito_paced_no_changes"] = quiet_load
        log(f"paced load, no changes: p99 {quiet_load.get('p99_ms')} ms")

        live = list(revoke_pool)  # known to every worker

        def run_with_changes(seconds: int, watch: bool, rate=args.rate, connections=8) -> dict:
            """Paced load while a change lands every second; with ``watch``, the bench also
            polls every worker for each change's effect (propagation under load) — that
            polling is load of its own, so the latency figure comes from a run without it."""
            changes = {"create": [], "policy": [], "revoke": [], "errors": []}
            watched: queue.Queue = queue.Queue()
            loaded = {"create": [], "revoke": []}
            stop = threading.Event()

            def changer():
                step = 0
                rng = random.Random(14)
                while not stop.is_set():
                    t = time.monotonic()
                    try:
                        kind = ("create", "policy", "revoke")[step % 3]
                        if kind == "create" or not live and kind == "revoke":
                            key, raw = gateway_services.api_key_create(
                                actor=actor, org=org, name="under-load", rpm_limit=100_000_000
                            )
                            if watch:
                                watched.put(("create", raw, time.monotonic()))
                            kind = "create"
                        elif kind == "policy":
                            other = Organization.objects.get(slug=rng.choice(other_orgs))
                            governance_services.policy_set(
                                actor=actor,
                                org=other,
                                monthly_spend_cap_usd=rng.randrange(10_000, 1_000_000),
                            )
                        else:
                            key, raw = live.pop(0)
                            gateway_services.api_key_revoke(
                                actor=actor, key=ApiKey.objects.get(pk=key.pk)
                            )
                            if watch:
                                watched.put(("revoke", raw, time.monotonic()))
                        changes[kind].append(round(time.monotonic() - t, 3))
                    except Exception as exc:  # noqa: BLE001 - reported, the run goes on
                        changes["errors"].append(repr(exc)[:200])
                    step += 1
                    stop.wait(max(0.0, 1.0 - (time.monotonic() - t)))
                connection.close()

            def watcher():
                # Upper bounds: a change waits here while the one before it is watched.
                while True:
                    item = watched.get()
                    if item is None:
                        return
                    kind, raw, t0 = item
                    seen = pinned.until(raw, 200 if kind == "create" else 401, 120, 0.05, t0)
                    loaded[kind].append(max(v if v is not None else 1e9 for v in seen.values()))

            threads = [threading.Thread(target=changer), threading.Thread(target=watcher)]
            for t in threads:
                t.start()
            try:
                load = wrk_paced(bonito_url, load_key, CHAT, rate, seconds, tmp, connections)
            finally:
                stop.set()
                threads[0].join()
                watched.put(None)
                threads[1].join()
            return {
                "load": load,
                "changes": {k: (len(v) if k != "errors" else v) for k, v in changes.items()},
                "propagation": {k: [round(v, 3) for v in vs] for k, vs in loaded.items()},
            }

        cpu2 = {p: cpu_s(p) for p in pids}
        under = run_with_changes(args.load_seconds, watch=False)
        cpu3 = {p: cpu_s(p) for p in pids}
        results["bonito_paced_with_changes"] = under["load"]
        results["changes"] = under["changes"]
        results["cpu_s_load_with_changes"] = [round(cpu3[p] - cpu2[p], 2) for p in pids]
        results["load_seconds"] = args.load_seconds
        log(
            f"under changes: p99 {under['load'].get('p99_ms')} ms,"
            f" overhead p99 {under['load'].get('overhead_p99_ms')}"
        )
        # One connection at a time (paced, --c1-rate): a request's added latency with no other
        # request of the load queued beside it in the worker, with and without changes.
        c1 = args.c1_rate
        results["upstream_c1"] = wrk_paced(
            direct, "none", {**CHAT, "model": "gpt-4o-mini"}, c1, 10, tmp, connections=1
        )
        results["bonito_c1_no_changes"] = wrk_paced(
            bonito_url, load_key, CHAT, c1, args.load_seconds, tmp, connections=1
        )
        c1_changes = run_with_changes(args.load_seconds, watch=False, rate=c1, connections=1)
        results["bonito_c1_with_changes"] = c1_changes["load"]
        results["changes_c1"] = c1_changes["changes"]
        log(
            f"one connection at {c1} req/s: p99 {results['bonito_c1_no_changes'].get('p99_ms')}"
            f" ms, with changes {c1_changes['load'].get('p99_ms')} ms"
        )
        pinned.close()
        pinned.pin()
        watched_run = run_with_changes(max(10, args.load_seconds // 2), watch=True)
        results["propagation_under_load_s"] = watched_run["propagation"]
        results["changes_while_watched"] = watched_run["changes"]
        time.sleep(1)
        results["rss_mb_after_load"] = [round(rss_mb(p), 1) for p in pids]
        pinned.close()
    except ReadyOnly:
        pass
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        if not args.keep_db and not args.reuse_db:
            drop_database(args.db)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    if args.ready_only:
        print(json.dumps({k: results[k] for k in ("ready_s", "rss_mb_after_start", "cpu_s_start")}))
    else:
        print(table(results))
    print(f"\nJSON: {out}")
    return results


def table(r: dict) -> str:
    up = r["upstream_paced"]
    q, u = r["bonito_paced_no_changes"], r["bonito_paced_with_changes"]
    pq, pl = r["propagation_quiet_s"], r["propagation_under_load_s"]

    def worst(values):
        v = [x for x in values if x is not None]
        return f"{max(v):.2f} s" if v else "n/a"

    def med(values):
        return f"{statistics.median(values):.2f} s" if values else "n/a"

    def added(run, field):
        if run.get(field) is None or up.get(field) is None:
            return "n/a"
        return f"{run[field] - up[field]:.2f} ms"

    def added_c1(run, field):
        base = r["upstream_c1"]
        if run.get(field) is None or base.get(field) is None:
            return "n/a"
        return f"{run[field] - base[field]:.2f} ms"

    lines = [
        f"{r['orgs']:,} orgs, {r['keys_in_db']:,} keys, {r['usage_rows_in_db']:,} usage rows "
        f"({r['database_mb']:,} MB), {r['workers']} workers, commit {r['commit']}",
        "",
        "| | value |",
        "|---|---|",
        f"| seed | {r['seed']} |",
        f"| ready: make serve → every worker answers /v1 | {r['ready_s']['make_serve_to_all_workers']} s |",
        f"| key created → 200 on every worker (quiet; median, max of {len(pq['create'])}) | "
        f"{med(pq['create'])}, {worst(pq['create'])} |",
        f"| key revoked → refused on every worker (quiet; median, max) | "
        f"{med(pq['revoke'])}, {worst(pq['revoke'])} |",
        f"| key created → 200 everywhere, under load + changes (median, max of {len(pl['create'])}) | "
        f"{med(pl['create'])}, {worst(pl['create'])} |",
        f"| key revoked → refused everywhere, under load + changes (median, max) | "
        f"{med(pl['revoke'])}, {worst(pl['revoke'])} |",
        f"| /v1 p99 added latency at {up['rps']:.0f} req/s, no changes | {added(q, 'p99_ms')} |",
        f"| /v1 p99 added latency at {u['rps']:.0f} req/s, a change every second | "
        f"{added(u, 'p99_ms')} (max {u['max_ms']:.0f} ms) |",
        f"| x-bonito-overhead-ms p50 / p99, a change every second | "
        f"{u.get('overhead_p50_ms')} / {u.get('overhead_p99_ms')} ms |",
        f"| x-bonito-overhead-ms p50 / p99, no changes | "
        f"{q.get('overhead_p50_ms')} / {q.get('overhead_p99_ms')} ms |",
        f"| one connection at {r['upstream_c1']['rps']:.0f} req/s: /v1 p99 added, no changes | "
        f"{added_c1(r['bonito_c1_no_changes'], 'p99_ms')} |",
        f"| one connection: /v1 p99 added, a change every second | "
        f"{added_c1(r['bonito_c1_with_changes'], 'p99_ms')} "
        f"(max {r['bonito_c1_with_changes']['max_ms']:.0f} ms; changes {r['changes_c1']}) |",
        f"| one connection: x-bonito-overhead-ms p99, no changes / a change every second | "
        f"{r['bonito_c1_no_changes'].get('overhead_p99_ms')} / "
        f"{r['bonito_c1_with_changes'].get('overhead_p99_ms')} ms |",
        f"| responses under changes (status: count) | {u['statuses']} |",
        f"| changes landed in {r['load_seconds']} s | {r['changes']} |",
        f"| worker RSS after start | {', '.join(f'{v} MB' for v in r['rss_mb_after_start'])} |",
        f"| worker RSS after the load | {', '.join(f'{v} MB' for v in r['rss_mb_after_load'])} |",
        f"| worker CPU, start to ready | {', '.join(f'{v} s' for v in r['cpu_s_start'])} |",
        f"| worker CPU, quiet propagation runs | "
        f"{', '.join(f'{v} s' for v in r['cpu_s_propagation_quiet'])} |",
        f"| worker CPU, {r['load_seconds']} s of load + changes | "
        f"{', '.join(f'{v} s' for v in r['cpu_s_load_with_changes'])} |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
