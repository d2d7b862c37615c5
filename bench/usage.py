"""Usage analytics at scale: roll up 1M usage rows, then time the usage page,
/api/gateway/usage and /api/gateway/analytics with them in the database.

Runs on a database of its own: a temporary SQLite file, or `bonito_bench_usage` on the
PostgreSQL server of DATABASE_URL. Server time is measured in-process (Django's test
client: the whole view, ORM and template, without a network hop). Results go to
docs/benchmarks.md; the 300 ms target is checked by people reading the table, not by CI.
"""

import argparse
import json
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def database_url(tmp: Path) -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        return f"sqlite:///{tmp / 'usage.sqlite3'}"
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS bonito_bench_usage WITH (FORCE)")
        conn.execute("CREATE DATABASE bonito_bench_usage")
    return url.rsplit("/", 1)[0] + "/bonito_bench_usage"


def timed(fn, runs: int) -> dict:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}


WRITER_BATCHES = (1, 10, 50)


def writer_cpu(org, keys, runs: int) -> dict:
    """The usage writer's CPU (this thread's, time.thread_time) per batch of recent rows,
    by step of billing.usage_writer.write_usage: what a worker's writer thread holds the
    GIL for beside the event loop. Every step is timed on every batch; medians."""
    from billing import budgets, live, usage_writer

    steps = {
        "insert (one statement)": usage_writer._insert,
        "keys' last use": usage_writer.keys_last_used,
        "hard budgets": budgets.hard_budgets_reached,
        "live tail publish": live.publish_usage,
    }
    out: dict = {name: {} for name in [*steps, "total"]}
    rng = random.Random(11)
    for size in WRITER_BATCHES:
        spent: dict = {name: [] for name in out}
        for _ in range(runs):
            batch = []
            for _ in range(size):
                key = keys[rng.randrange(len(keys))]
                batch.append(
                    {
                        "id": uuid.uuid4().hex,
                        "org_id": org.pk,
                        "key_id": key.pk,
                        "team_id": key.team_id,
                        "model_requested": "gpt-4o-mini",
                        "model_used": "gpt-4o-mini",
                        "provider": "openai",
                        "endpoint": "chat",
                        "input_tokens": rng.randrange(10, 4000),
                        "output_tokens": rng.randrange(1, 800),
                        "cost": rng.random() / 100,
                        "latency_ms": 300,
                        "status": "success",
                        "http_status": 200,
                        "created_at": time.time(),
                    }
                )
            total = 0.0
            for name, step in steps.items():
                started = time.thread_time()
                step(batch)
                took = time.thread_time() - started
                spent[name].append(took)
                total += took
            spent["total"].append(total)
        for name, values in spent.items():
            out[name][str(size)] = round(statistics.median(values) * 1000, 3)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="20k rows, for CI")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--out", default=str(ROOT / "var" / "bench" / "usage.json"))
    args = parser.parse_args()
    rows = args.rows or (20_000 if args.smoke else 1_000_000)
    runs = 3 if args.smoke else 7

    tmp = Path(tempfile.mkdtemp(prefix="bonito-bench-usage-"))
    server_url = os.environ.get("DATABASE_URL", "")
    os.environ.update(
        {
            "DATABASE_URL": os.environ.get("BENCH_USAGE_DB") or database_url(tmp),
            "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(48),
            "DEBUG": "0",
            "SECURE_SSL_REDIRECT": "0",
            "SECURE_COOKIES": "0",
            "ALLOWED_HOSTS": "testserver",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LOG_LEVEL": "WARNING",
            "REDIS_URL": "",
        }
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bonito.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    from billing.selectors import UsageQuery, usage_records
    from billing.services import rollup_recent
    from billing.usage_writer import _insert
    from gateway import services as gateway_services
    from orgs import services as org_services
    from orgs.audit import Actor
    from orgs.models import User

    setup_test_environment()
    call_command("migrate", "--noinput", verbosity=0)
    actor = Actor(via="bench")
    org = org_services.org_create(actor=actor, name="Bench", slug="bench", tier="enterprise")
    user = User.objects.create_user(email="bench@bench.test", password=secrets.token_hex(16))
    org_services.membership_add(actor=actor, org=org, user=user, role="admin")
    teams = [org_services.team_create(actor=actor, org=org, name=f"team-{i}") for i in range(4)]
    keys = [
        gateway_services.api_key_create(
            actor=actor, org=org, name=f"app-{i}", team=teams[i % len(teams)]
        )[0]
        for i in range(24)
    ]
    models = [
        ("gpt-4o", "openai"),
        ("gpt-4o-mini", "openai"),
        ("claude-sonnet", "anthropic"),
        ("claude-haiku", "anthropic"),
        ("gemini-flash", "vertex"),
        ("llama-70b", "vllm"),
    ]

    # ------------------------------------------------------------------ 1M rows over 30 days
    now = datetime.now(UTC)
    start = now - timedelta(days=30)
    span = (now - start).total_seconds()
    rng = random.Random(7)
    started = time.perf_counter()
    batch = []
    for i in range(rows):
        key = keys[rng.randrange(len(keys))]
        model, provider = models[rng.randrange(len(models))]
        ok = rng.random() > 0.02
        batch.append(
            {
                "id": uuid.UUID(int=rng.getrandbits(128)).hex,
                "org_id": org.pk,
                "key_id": key.pk,
                "team_id": key.team_id,
                "model_requested": model,
                "model_used": model,
                "provider": provider,
                "endpoint": "chat",
                "input_tokens": rng.randrange(10, 4000),
                "output_tokens": rng.randrange(1, 800),
                "cost": rng.random() / 100,
                "latency_ms": int(rng.lognormvariate(6, 0.8)),
                "status": "success" if ok else "error",
                "http_status": 200 if ok else 502,
                "created_at": start.timestamp() + span * i / rows,
            }
        )
        if len(batch) == 5000:
            _insert(batch)
            batch = []
    if batch:
        _insert(batch)
    load_s = time.perf_counter() - started
    connection.close()

    results: dict = {
        "mode": "smoke" if args.smoke else "full",
        "database": connection.vendor,
        "rows": rows,
        "load_s": round(load_s, 1),
    }
    # ------------------------------------------------------------------ rollups
    started = time.perf_counter()
    first = rollup_recent(now=now)
    results["rollup_all_s"] = round(time.perf_counter() - started, 2)
    results["rollup_rows"] = {"hour": first["hour_rows"], "day": first["day_rows"]}
    started = time.perf_counter()
    rollup_recent(now=now + timedelta(minutes=5))
    results["rollup_incremental_s"] = round(time.perf_counter() - started, 2)

    # ------------------------------------------------------------------ reads
    client = Client()
    client.force_login(user)
    timings = {}
    for name, url in [
        ("usage page, 30 days", "/o/bench/usage/?range=30d"),
        ("usage page, 24 hours", "/o/bench/usage/?range=24h"),
        ("/api/gateway/usage, 30 days", "/api/gateway/usage?org=bench&range=30d"),
        ("/api/gateway/analytics, 30 days", "/api/gateway/analytics?org=bench&range=30d"),
        (
            "/api/gateway/usage, 30 days, one key",
            f"/api/gateway/usage?org=bench&range=30d&key={keys[0].pk}",
        ),
    ]:

        def get(url=url):
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)

        get()  # warm
        timings[name] = timed(get, runs)

    def raw_scan():
        qs, since, until = usage_records(org, {"range": "30d"})
        UsageQuery(org, since, until, [qs]).analytics()

    timings["for comparison: the same analytics from raw rows, 30 days"] = timed(raw_scan, 1)
    results["server_ms"] = timings
    results["writer_cpu_ms_per_batch"] = writer_cpu(org, keys, runs=60 if args.smoke else 300)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\n{rows:,} usage rows on {results['database']} (loaded in {results['load_s']} s)")
    print(
        f"rollup of all rows: {results['rollup_all_s']} s "
        f"({first['hour_rows']:,} hourly and {first['day_rows']:,} daily rows); "
        f"the next 5-minute run: {results['rollup_incremental_s']} s\n"
    )
    print("| read | server time, median | max |\n|---|---|---|")
    for name, t in timings.items():
        print(f"| {name} | {t['median_ms']} ms | {t['max_ms']} ms |")
    print(
        "\n| usage writer, CPU per batch of recent rows (median) | "
        + " | ".join(f"{n} rows" for n in WRITER_BATCHES)
        + " |"
    )
    print("|---|" + "---|" * len(WRITER_BATCHES))
    for step, by_size in results["writer_cpu_ms_per_batch"].items():
        print(f"| {step} | " + " | ".join(f"{by_size[str(n)]} ms" for n in WRITER_BATCHES) + " |")
    print(f"\nJSON: {out}")
    connection.close()
    if os.environ["DATABASE_URL"].startswith("postgres"):
        import psycopg

        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS bonito_bench_usage WITH (FORCE)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
