"""gateway_requests at 100M rows on PostgreSQL: build them with SQL, then EXPLAIN every logs filter.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/partitions.py load --database bench_h3 --rows 100000000 --days 20
    ... bench/partitions.py explain --database bench_h3 > plans.txt
    ... bench/partitions.py drop --database bench_h3

`load` creates the database, migrates it (so the table, partitions and indexes are exactly
what migration 0014 and the model make), adds 1,000 orgs with 10 keys and 3 teams each, then
fills one day partition at a time with generate_series (no ORM): the day is loaded into a
plain table and attached, so its indexes are built once, sorted, as a restore would. Org ids
are skewed (org 1 has about a tenth of all rows) so plans are shown for a large tenant. It
stops early, and says so, when the disk would have less than --min-free-gb left.

`explain` runs the logs page's and the REST logs API's own querysets (billing.selectors) for
each filter against org 1 over the default 30 days, and prints EXPLAIN of every SQL they
send (the page and count queries), with the planner's row estimates from ANALYZE.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ORGS, KEYS_PER_ORG, TEAMS_PER_ORG = 1000, 10, 3
MODELS = [
    ("gpt-4o", "openai"),
    ("gpt-4o-mini", "openai"),
    ("claude-sonnet", "anthropic"),
    ("claude-haiku", "anthropic"),
    ("llama-3-70b", "bedrock"),
    ("mistral-large", "bedrock"),
    ("gemini-pro", "vertex"),
    ("gpt-4.1", "azure"),
]


def _url(database: str) -> str:
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    return base.rsplit("/", 1)[0] + "/" + database


def _connect(database: str):
    import psycopg

    return psycopg.connect(_url(database), autocommit=True)


def _env(database: str) -> dict:
    return {
        **os.environ,
        "DATABASE_URL": _url(database),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "SECRET_KEY": os.environ.get("SECRET_KEY", "bench-partitions-" + "x" * 40),
        "USAGE_PARTITION_INTERVAL": "day",
        "USAGE_RETENTION_DAYS": "120",  # `day` needs a retention (bonito/settings.py)
    }


def _seed(conn) -> None:
    now = datetime.now(UTC)
    conn.execute(
        "INSERT INTO orgs_organization (id, slug, name, tier, deployment_mode, created_at)"
        " SELECT g, 'org-' || g, 'Org ' || g, 'enterprise', 'shared', %s"
        " FROM generate_series(1, %s) g",
        [now, ORGS],
    )
    conn.execute(
        "INSERT INTO orgs_team (id, name, description, created_at, org_id)"
        " SELECT g, 'team-' || g, '', %s, (g - 1) / %s + 1 FROM generate_series(1, %s) g",
        [now, TEAMS_PER_ORG, ORGS * TEAMS_PER_ORG],
    )
    conn.execute(
        "INSERT INTO gateway_apikey (id, name, kind, key_hash, prefix, last4, allowed_models,"
        " allowed_providers, created_at, org_id, previous_key_hash, previous_masked, is_active)"
        " SELECT g, 'key-' || g, 'bn', md5(g::text) || md5(g::text), 'bn-', '0000', '[]', '[]',"
        " %s, (g - 1) / %s + 1, '', '', true FROM generate_series(1, %s) g",
        [now, KEYS_PER_ORG, ORGS * KEYS_PER_ORG],
    )


def _day_sql(table: str) -> str:
    models = "ARRAY[" + ", ".join(f"'{m}'" for m, _ in MODELS) + "]"
    providers = "ARRAY[" + ", ".join(f"'{p}'" for _, p in MODELS) + "]"
    # Only this module's constants and a partition name it made go into the string.
    return f"""
INSERT INTO {table} (id, model_requested, model_used, provider, deployment, endpoint,
    input_tokens, output_tokens, cached_tokens, cost, latency_ms, ttft_ms, status, http_status,
    error_type, request_id, source, created_at, key_id, org_id, team_id,
    routing_policy, route_classifier, route_tier, unit)
SELECT gen_random_uuid(), m, m, p, p || '-prod', 'chat', tin, tout, 0,
    round((tin * 0.0000025 + tout * 0.00001)::numeric, 8), lat, lat / 4,
    CASE WHEN rs < 0.97 THEN 'success' WHEN rs < 0.99 THEN 'error' ELSE 'rejected' END,
    CASE WHEN rs < 0.97 THEN 200 WHEN rs < 0.99 THEN 502 ELSE 429 END,
    CASE WHEN rs < 0.97 THEN '' WHEN rs < 0.99 THEN 'upstream_error' ELSE 'rate_limited' END,
    'req_' || substr(md5(g::text || %(day)s::text), 1, 24), 'shared_gateway',
    %(day)s::timestamptz + ((g - 1)::float8 / %(n)s) * interval '1 day',
    (o - 1) * {KEYS_PER_ORG} + 1 + floor(rk * {KEYS_PER_ORG})::int, o,
    CASE WHEN rk < 0.3 THEN NULL ELSE (o - 1) * {TEAMS_PER_ORG} + 1 + floor(rt * {TEAMS_PER_ORG})::int END,
    '', '', '', ''
FROM (
    SELECT g, 1 + floor({ORGS} * power(random(), 3))::int AS o, random() AS rk, random() AS rt,
        random() AS rs, ({models})[mi] AS m, ({providers})[mi] AS p,
        10 + floor(random() * 2000)::int AS tin, 1 + floor(random() * 800)::int AS tout,
        50 + floor(random() * 3000)::int AS lat
    FROM (SELECT g, 1 + floor(random() * {len(MODELS)})::int AS mi
          FROM generate_series(1, %(n)s) g) s0
) s"""  # noqa: S608


# What one stored row costs with the table's ten indexes, measured on a 2M-row day partition
# (docs/usage-data.md): the heap ~230 bytes, the indexes ~395. The first day loaded replaces it
# with its own measure; the margin covers a day's sort files and WAL beyond what is stored.
BYTES_PER_ROW_PRIOR = 650
DAY_MARGIN = 1.25


def _disk_path(args, conn) -> str:
    """Where PostgreSQL writes: its data directory when it is on this machine, else --disk-path."""
    if args.disk_path:
        return args.disk_path
    try:
        data = conn.execute("SHOW data_directory").fetchone()[0]
    except Exception:  # noqa: BLE001 - not a superuser, or a remote server: no local path
        data = ""
    return data if data and os.path.isdir(data) else str(ROOT)


def _free_gb(path: str) -> float:
    return shutil.disk_usage(path).free / 2**30


class _Watchdog(threading.Thread):
    """Cancels the loading statements when the disk falls below the hard floor mid-day
    (another process may fill it too): the day's transaction rolls back and frees its files."""

    def __init__(self, path: str, floor_gb: float):
        super().__init__(daemon=True)
        self.path, self.floor_gb = path, floor_gb
        self.conns: list = []
        self.tripped = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            if _free_gb(self.path) < self.floor_gb:
                self.tripped.set()
                for conn in list(self.conns):
                    conn.cancel_safe()


def _parent_ddl(conn) -> list[str]:
    """The parent's indexes and foreign keys as statements for one plain table ({table}):
    made on the day's table before ATTACH, which then adopts them (same definitions, the
    names PostgreSQL gives a partition's own) instead of building them under the parent's
    lock, so days load in parallel, as pg_restore does it."""
    ddl = []
    for (definition,) in conn.execute(
        "SELECT pg_get_indexdef(indexrelid) FROM pg_index"
        " WHERE indrelid = 'gateway_requests'::regclass AND NOT indisprimary"
    ):
        ddl.append("CREATE INDEX ON {table} USING " + definition.split(" USING ", 1)[1])
    for name, kind, definition in conn.execute(
        "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = 'gateway_requests'::regclass AND contype IN ('p', 'f')"
    ):
        if kind == "p":
            ddl.append("ALTER TABLE {table} ADD " + definition)  # named {table}_pkey
        else:
            ddl.append(f"ALTER TABLE {{table}} ADD CONSTRAINT {name} {definition}")
    return ddl


def _load_day(conn, name: str, day: datetime, per_day: int, existing: set, ddl: list) -> None:
    from psycopg import sql

    if name in existing:  # made by the migration (today and ahead): detach, refill
        conn.execute(f"ALTER TABLE gateway_requests DETACH PARTITION {name}")
        conn.execute(f"DROP TABLE {name}")
    bounds = [sql.Literal(day), sql.Literal(day + timedelta(days=1))]  # DDL takes no parameters
    try:
        conn.execute(
            f"CREATE TABLE {name} (LIKE gateway_requests INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        conn.execute(_day_sql(name), {"day": day, "n": per_day})
        # Visibility map and statistics while the table has no index yet (one cheap pass):
        # what VACUUM ANALYZE would leave, so the plans may use index-only scans.
        conn.execute(f"VACUUM (ANALYZE) {name}")
        for statement in ddl:
            conn.execute(statement.format(table=name))
        # A CHECK matching the bounds spares ATTACH its scan of the rows under the lock.
        conn.execute(
            sql.SQL(
                f"ALTER TABLE {name} ADD CONSTRAINT bench_bounds"
                " CHECK (created_at >= {} AND created_at < {})"
            ).format(*bounds)
        )
        conn.execute(
            sql.SQL(
                f"ALTER TABLE gateway_requests ATTACH PARTITION {name}"
                " FOR VALUES FROM ({}) TO ({})"
            ).format(*bounds)
        )
        conn.execute(f"ALTER TABLE {name} DROP CONSTRAINT bench_bounds")
    except Exception:
        # A cancelled or failed day leaves no half-built table behind.
        conn.execute(f"DROP TABLE IF EXISTS {name}")
        raise


def load(args) -> None:
    from psycopg import sql

    if not args.resume:
        with _connect("postgres") as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{args.database}"')
        env = _env(args.database)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True
        )
    per_day = args.rows // args.days
    first = (datetime.now(UTC) - timedelta(days=args.days - 1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    loaded_before = 0
    with _connect(args.database) as conn:
        if not args.resume:
            _seed(conn)
        path = _disk_path(args, conn)
        existing = {
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'gateway_requests'::regclass"
            )
        }
        todo = list(range(args.days))
        if args.resume:  # keep the days attached with rows; redo the others
            for i in list(todo):
                name = f"gateway_requests_p{first + timedelta(days=i):%Y%m%d}"
                if (
                    name in existing
                    and conn.execute(
                        sql.SQL("SELECT EXISTS (SELECT FROM {})").format(sql.Identifier(name))
                    ).fetchone()[0]
                ):
                    todo.remove(i)
                    loaded_before += per_day
                elif name not in existing:
                    conn.execute(f"DROP TABLE IF EXISTS {name}")  # a day that failed
            print(f"resuming: {loaded_before:,} rows kept, {len(todo)} days to load", flush=True)
        ddl = _parent_ddl(conn)
    hard_floor = args.min_free_gb - 2
    print(
        f"disk {path}: {_free_gb(path):.1f} GB free; a day starts only if {args.min_free_gb} GB"
        f" would stay free after it; the loading stops at once below {hard_floor} GB",
        flush=True,
    )
    watchdog = _Watchdog(path, hard_floor)
    watchdog.start()
    lock = threading.Lock()
    state = {"loaded": loaded_before, "days": 0, "in_flight": 0, "stop": ""}
    days = iter(todo)

    def worker() -> None:
        with _connect(args.database) as conn:
            conn.execute("SET maintenance_work_mem = '512MB'")
            conn.execute("SET max_parallel_maintenance_workers = 0")  # a shared machine
            watchdog.conns.append(conn)
            while True:
                with lock:
                    i = next(days, None)
                    if i is None or state["stop"]:
                        return
                    stored = conn.execute(  # the days attached so far, with their indexes
                        "SELECT sum(pg_total_relation_size(inhrelid))::float8 FROM pg_inherits"
                        " WHERE inhparent = 'gateway_requests'::regclass"
                    ).fetchone()[0]
                    per_row = stored / state["loaded"] if state["loaded"] else BYTES_PER_ROW_PRIOR
                    written = conn.execute(  # by the days in flight (not attached yet)
                        "SELECT coalesce(sum(pg_total_relation_size(oid)), 0)::float8"
                        " FROM pg_class WHERE relname LIKE 'gateway_requests_p%%'"
                        " AND relkind = 'r' AND NOT relispartition"
                    ).fetchone()[0]
                    day_bytes = per_day * per_row * DAY_MARGIN
                    need = max(0, (state["in_flight"] + 1) * day_bytes - written) / 2**30
                    free = _free_gb(path)
                    if free - need < args.min_free_gb:
                        state["stop"] = (
                            f"stopped: {free:.1f} GB free, a day needs ~{need:.1f} GB"
                            f" ({per_row:.0f} bytes a row), {args.min_free_gb} GB must stay free"
                        )
                        return
                    state["in_flight"] += 1
                day = first + timedelta(days=i)
                name = f"gateway_requests_p{day:%Y%m%d}"
                started = time.monotonic()
                try:
                    _load_day(conn, name, day, per_day, existing, ddl)
                except Exception as exc:
                    with lock:
                        state["in_flight"] -= 1
                        state["stop"] = state["stop"] or (
                            f"stopped: the disk fell below {hard_floor} GB free during {name}"
                            if watchdog.tripped.is_set()
                            else f"stopped: {name} failed: {exc}"
                        )
                    return
                with lock:
                    state["in_flight"] -= 1
                    state["loaded"] += per_day
                    state["days"] += 1
                    print(
                        f"{name}: {per_day:,} rows in {time.monotonic() - started:.0f}s"
                        f" ({state['loaded']:,} in all, {_free_gb(path):.1f} GB free)",
                        flush=True,
                    )

    def guarded() -> None:
        try:
            worker()
        except Exception as exc:
            with lock:
                state["stop"] = state["stop"] or f"stopped: {exc!r}"
            raise

    threads = [threading.Thread(target=guarded) for _ in range(args.jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    watchdog.done.set()
    if state["stop"]:
        print(state["stop"], flush=True)
    with _connect(args.database) as conn:
        started = time.monotonic()
        conn.execute("ANALYZE gateway_requests")  # the parent's statistics over all partitions
        stored = conn.execute(
            "SELECT sum(pg_relation_size(inhrelid))::float8, sum(pg_indexes_size(inhrelid))::float8"
            " FROM pg_inherits WHERE inhparent = 'gateway_requests'::regclass"
        ).fetchone()
    rows = max(state["loaded"], 1)
    print(
        f"ANALYZE in {time.monotonic() - started:.0f}s; {state['loaded']:,} rows"
        f" ({state['days']} days loaded now); stored: heap {stored[0] / 2**30:.1f} GB"
        f" ({stored[0] / rows:.0f} bytes a row), indexes {stored[1] / 2**30:.1f} GB"
        f" ({stored[1] / rows:.0f} bytes a row); {_free_gb(path):.1f} GB free",
        flush=True,
    )


def explain(args) -> None:
    os.environ.update(_env(args.database))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bonito.settings")
    import django

    django.setup()
    from django.db import connection
    from django.http import QueryDict
    from django.test.utils import CaptureQueriesContext

    from billing import selectors
    from billing.pagination import BoundedPaginator
    from orgs.models import Organization

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sum(c.reltuples)::bigint FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'gateway_requests'::regclass AND c.reltuples > 0"
        )
        total = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM gateway_requests WHERE org_id = %s", [args.small_org])
        small = cursor.fetchone()[0]
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'gateway_requests'::regclass AND c.relpages > 0"
        )
        holding = {r[0] for r in cursor.fetchall()}
    print(
        f"gateway_requests: {total:,} rows (ANALYZE's count); org {args.small_org}: {small:,} rows\n"
    )
    filters = {
        "none (30 days)": "",
        "key": "key={key}",
        "team": "team={team}",
        "model": "model=claude-haiku",
        "provider": "provider=vertex",
        "status": "status=rejected",
        "1 hour range": "range=1h",
        "key + status": "key={key}&status=error",
    }
    summary = []
    cases = [(1, label, query) for label, query in filters.items()]
    cases += [(args.small_org, label, query) for label, query in filters.items()]
    for org_id, label, query in cases:
        org = Organization.objects.get(pk=org_id)
        label = f"org {org_id}: {label}"
        query = query.format(
            key=(org_id - 1) * KEYS_PER_ORG + 3, team=(org_id - 1) * TEAMS_PER_ORG + 2
        )
        qs, _since, _until = selectors.usage_records(org, QueryDict(query), "30d")
        with CaptureQueriesContext(connection) as captured:
            page = BoundedPaginator(qs.select_related("key", "team"), 50).get_page(1)
            list(page)
        for q in captured.captured_queries:
            if "gateway_requests" not in q["sql"]:
                continue
            kind = "count" if "COUNT(*)" in q["sql"] else "page"  # the count: LIMIT 10001
            # Both are cheap to run again (the count stops at 10,001 rows): real row counts.
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + q["sql"])
                plan = "\n".join(r[0] for r in cursor.fetchall())
            print(f"### filter: {label} ({kind}, {float(q['time']) * 1000:.0f} ms)\n")
            print(q["sql"] + "\n")
            print(plan + "\n")
            summary.append((label, kind, float(q["time"]) * 1000, *_scans(plan, holding)))
    print("| filter | query | time (ms) | scans (× how many partitions) |\n|---|---|---|---|")
    for label, kind, ms, scans, _seq in summary:
        print(f"| {label} | {kind} | {ms:.0f} | {scans} |")
    print(
        f"\nsequential scans of a partition holding rows: {sum(r[4] for r in summary)}"
        f" (partitions holding rows: {len(holding)})\n"
    )
    detail = qs.first()
    if detail is not None:
        with CaptureQueriesContext(connection) as captured:
            selectors.UsageRecord.objects.for_org(org).get(pk=detail.pk)
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN " + captured.captured_queries[-1]["sql"])
            plan = "\n".join(r[0] for r in cursor.fetchall())
        print("### one request by id (log detail)\n\n" + plan + "\n")


_SCAN = re.compile(
    r"(Index Only Scan Backward|Index Only Scan|Index Scan Backward|Index Scan|"
    r"Bitmap Index Scan|Bitmap Heap Scan|Parallel Seq Scan|Seq Scan) (?:using|on) (\S+)"
)


def _scans(plan: str, holding: set) -> tuple[str, int]:
    """The plan's scans, one per kind and index (partition names folded), with how many
    partitions use each, a scan the run never started apart; and how many sequential
    scans read a partition that holds rows (`holding`)."""
    counts: dict = {}
    seq_on_rows = 0
    for line in plan.splitlines():
        found = _SCAN.search(line)
        if not found or found.group(1) == "Bitmap Heap Scan":
            continue
        kind, name = found.groups()
        if kind.endswith("Seq Scan"):
            if name in holding:
                seq_on_rows += 1
                key = f"**{kind} on a partition holding rows**"
            elif name.startswith("gateway_requests_"):
                key = f"{kind} on an empty partition"
            else:
                key = f"{kind} on {name}"
        else:
            key = f"{kind} using {re.sub(r'^gateway_requests_(p[0-9]{8}|default)_', '', name)}"
        if "never executed" in line:
            key += " (never run)"
        counts[key] = counts.get(key, 0) + 1
    return "; ".join(f"{k} ×{n}" for k, n in counts.items()), seq_on_rows


def drop(args) -> None:
    with _connect("postgres") as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("load", "explain", "drop"):
        p = sub.add_parser(name)
        p.add_argument("--database", default="bench_partitions")
        if name == "explain":
            p.add_argument("--small-org", type=int, default=500, help="a small tenant's id")
        if name == "load":
            p.add_argument("--rows", type=int, default=100_000_000)
            p.add_argument("--days", type=int, default=20)
            p.add_argument(
                "--min-free-gb",
                type=float,
                default=12.0,
                help="a day starts only if this much stays free after it; 2 GB less stops at once",
            )
            p.add_argument("--disk-path", help="default: PostgreSQL's data directory, if local")
            p.add_argument("--jobs", type=int, default=1, help="days loaded at once")
            p.add_argument("--resume", action="store_true", help="keep the days already loaded")
    args = parser.parse_args()
    {"load": load, "explain": explain, "drop": drop}[args.command](args)


if __name__ == "__main__":
    main()
