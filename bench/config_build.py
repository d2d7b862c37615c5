"""Config reaching the gateways at scale: the full snapshot build, a delta (a key created,
rotated or revoked, one org's policy or name), the facts refresh, and the month's spend, with N orgs,
M keys and R usage rows this month on PostgreSQL; and the snapshot's memory.

Runs on a database of its own (BENCH_CONFIG_DB, default `bonito_bench_config` on the
server of DATABASE_URL), seeded with SQL (generate_series: the ORM is too slow at 1M
keys). Times are in-process, median of a few runs; the machine is shared, so compare
numbers from the same run. Results go to docs/benchmarks.md (by people, not by CI).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \\
        .venv/bin/python bench/config_build.py --orgs 1000 --keys 100000 --rows 5000000
"""

import argparse
import gc
import json
import os
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def timed(fn, runs: int) -> tuple[dict, object]:
    times, out = [], None
    for _ in range(runs):
        started = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}, out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orgs", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--more-keys", type=int, default=0, help="then add these and build again")
    parser.add_argument("--rows", type=int, default=1_000_000, help="usage rows this month")
    parser.add_argument("--out", default=str(ROOT / "var" / "bench" / "config_build.json"))
    parser.add_argument("--repeat", type=int, default=5, help="changes of each kind measured")
    parser.add_argument("--keep-db", action="store_true", help="keep the seeded database")
    parser.add_argument(
        "--reuse-db", action="store_true", help="measure on the database a --keep-db run left"
    )
    args = parser.parse_args()

    server = os.environ.get("DATABASE_URL", "")
    if not server.startswith("postgres"):
        sys.exit("set DATABASE_URL to a PostgreSQL server")
    name = os.environ.get("BENCH_CONFIG_DB", "bonito_bench_config")
    import psycopg

    if not args.reuse_db:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {name}")
    os.environ.update(
        {
            "DATABASE_URL": server.rsplit("/", 1)[0] + "/" + name,
            "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(48),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LOG_LEVEL": "WARNING",
            "REDIS_URL": "",
        }
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bonito.settings")
    import django

    django.setup()
    import orjson
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from billing.budgets import budget_save
    from billing.services import rollup_recent
    from billing.spend import spend_grouped
    from core.config_version import current_version
    from core.months import month_bounds
    from gateway import services as gateway_services
    from gateway.dataplane.snapshot import apply_delta, delta_from_dict, delta_to_dict
    from gateway.dataplane.state import SnapshotSource
    from gateway.models import Deployment
    from gateway.snapshot_builder import (
        SnapshotRefresher,
        build_delta,
        build_snapshot,
        refresh_facts,
    )
    from governance import services as governance_services
    from orgs import services as org_services
    from orgs.audit import Actor
    from orgs.models import Organization

    try:  # the writer's share of a change (gateway.snapshot_builder.share_deltas), if any
        from gateway.snapshot_builder import share_deltas
    except ImportError:
        share_deltas = None

    call_command("migrate", "--noinput", verbosity=0)
    actor = Actor(via="bench")
    now = datetime.now(UTC)
    month = month_bounds(now)[0]
    results = {"orgs": args.orgs, "keys": args.keys, "rows": args.rows}

    def seed_keys(first: int, count: int):
        with connection.cursor() as c:
            c.execute(
                """INSERT INTO gateway_apikey (org_id, name, kind, key_hash, prefix, last4,
                allowed_models, allowed_providers, created_at, previous_key_hash,
                previous_masked, is_active)
                SELECT (SELECT min(id) FROM orgs_organization) + (i %% %s), 'key ' || i, 'bn',
                  md5(i::text) || md5((i + 1)::text), 'bn-' || substr(md5(i::text), 1, 6),
                  substr(md5(i::text), 1, 4),
                  CASE WHEN i %% 10 = 0 THEN '["gpt-4o-mini"]'::jsonb ELSE '[]'::jsonb END,
                  '[]'::jsonb, now(), '', '', true
                FROM generate_series(%s, %s) AS i""",
                [args.orgs, first, first + count - 1],
            )

    def seed():
        started = time.perf_counter()
        with connection.cursor() as c:
            c.execute(
                """INSERT INTO orgs_organization (slug, name, tier, deployment_mode, created_at)
                SELECT 'org-' || i, 'Org ' || i, (ARRAY['free','pro','enterprise'])[1 + i %% 3],
                  'shared', now() FROM generate_series(1, %s) AS i""",
                [args.orgs],
            )
        orgs = list(Organization.objects.order_by("id"))
        for org in orgs[:: max(1, len(orgs) // 100)]:  # 100 orgs with providers and deployments
            provider = gateway_services.provider_save(
                actor=actor, org=org, name="oai", kind="openai", credentials={"api_key": "sk-x" * 8}
            )
            for model in ("chat", "gpt-4o-mini"):
                gateway_services.deployment_save(
                    actor=actor, org=org, model_name=model, provider=provider, upstream_model=model
                )
            budget_save(actor=actor, org=org, amount_usd="100", hard=True)
        seed_keys(1, args.keys)
        with connection.cursor() as c:
            c.execute(
                """INSERT INTO gateway_requests (id, org_id, model_requested, model_used, provider,
                deployment, endpoint, input_tokens, output_tokens, cached_tokens, cost, latency_ms,
                status, http_status, error_type, request_id, source, created_at,
                    route_classifier, route_tier, routing_policy, unit)
                SELECT gen_random_uuid(), (SELECT min(id) FROM orgs_organization) + (i %% %s),
                  'chat', 'chat', 'oai', '', 'chat', 10, 5, 0, 0.00001234, 100, 'success', 200, '',
                  '', 'gateway', %s + (random() * (%s - %s::timestamptz)), '', '', '', ''
                FROM generate_series(1, %s) AS i""",
                [args.orgs, month, now, month, args.rows],
            )
            c.execute("ANALYZE")
        results["seed_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        rollup_recent(now=now)
        results["rollup_s"] = round(time.perf_counter() - started, 1)
        return orgs

    # Month-to-date spend: the old raw scan against rollups + raw edges.
    def raw_scan():
        from django.db.models import Sum

        from billing.models import UsageRecord

        rows = UsageRecord.objects.filter(created_at__gte=month).order_by()
        return dict(rows.values_list("org_id").annotate(t=Sum("cost")))

    orgs = list(Organization.objects.order_by("id")) if args.reuse_db else seed()

    results["spend_raw_scan"], _ = timed(raw_scan, 3)
    results["spend_rollups"], _ = timed(lambda: spend_grouped(month), 3)

    def full_build(label):
        gc.collect()
        before = rss_mb()
        results[f"{label}_full_build"], snap = timed(build_snapshot, 3)
        gc.collect()
        results[f"{label}_snapshot_mb"] = round(rss_mb() - before, 1)
        return snap

    gc.collect()
    results["rss_before_build_mb"] = round(rss_mb(), 1)
    snap = full_build("first")
    results["rss_after_build_mb"] = round(rss_mb(), 1)

    # Deltas, one change at a time, each kind --repeat times: what a worker spends applying
    # it (its refresher's poll, the delta's build and its apply), in CPU time of this thread
    # (the machine is shared: wall times lie) and in queries. Two refreshers stand for the
    # two workers of a server: the first to see a version, and the second.
    org = orgs[len(orgs) // 2]  # one of the orgs with a provider, deployments, a hard budget
    settings.GATEWAY_FACTS_REFRESH_S = 1e9  # the facts refresh is measured on its own below
    workers = [SnapshotRefresher(SnapshotSource(), interval=60) for _ in range(2)]
    for w in workers:
        w.refresh_once()  # a full build each

    def measured(fn) -> tuple[float, int, float]:
        with CaptureQueriesContext(connection) as queries:
            cpu, wall = time.thread_time(), time.perf_counter()
            fn()
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        return cpu * 1000, len(queries), wall * 1000

    def delta_kind(label, change):
        rows = {"first": [], "second": [], "build": [], "apply": [], "wire": [], "share": []}
        for n in range(args.repeat + 1):  # the first is a warm-up, not counted
            if n == 1:
                for values in rows.values():
                    values.clear()
            before = workers[0].target.current
            change(n)
            for name, w in zip(("first", "second"), workers, strict=True):
                rows[name].append(measured(w.refresh_once))
            # The parts, on the version the workers were at: the delta's build, its apply,
            # and its serialised form (what one worker could hand the others).
            version = workers[0].target.current.version
            since = before.version
            rows["build"].append(measured(lambda s=since, u=version: build_delta(s, u)))
            if share_deltas is not None:  # what the writer does once after the commit
                rows["share"].append(measured(lambda u=version: share_deltas([u])))
            delta = build_delta(since, version)
            rows["apply"].append(measured(lambda s=before, d=delta: apply_delta(s, d))[:1])
            cpu = time.thread_time()
            wire = orjson.dumps(delta_to_dict(delta, include_credentials=True))
            dumped = time.thread_time()
            delta_from_dict(orjson.loads(wire))
            loaded = time.thread_time()
            rows["wire"].append(((dumped - cpu) * 1000, (loaded - dumped) * 1000, len(wire)))

        def med(values):
            return round(statistics.median(values), 2)

        results[f"delta_{label}"] = {
            "worker_cpu_ms": med([r[0] for r in rows["first"]]),
            "worker_queries": med([r[1] for r in rows["first"]]),
            "worker_wall_ms": med([r[2] for r in rows["first"]]),
            "second_worker_cpu_ms": med([r[0] for r in rows["second"]]),
            "second_worker_queries": med([r[1] for r in rows["second"]]),
            "build_cpu_ms": med([r[0] for r in rows["build"]]),
            "build_queries": med([r[1] for r in rows["build"]]),
            "build_wall_ms": med([r[2] for r in rows["build"]]),
            "apply_cpu_ms": med([r[0] for r in rows["apply"]]),
            "writer_share_cpu_ms": med([r[0] for r in rows["share"]]) if rows["share"] else None,
            "writer_share_queries": med([r[1] for r in rows["share"]]) if rows["share"] else None,
            "serialise_cpu_ms": med([r[0] for r in rows["wire"]]),
            "deserialise_cpu_ms": med([r[1] for r in rows["wire"]]),
            "serialised_bytes": med([r[2] for r in rows["wire"]]),
        }
        print(label, json.dumps(results[f"delta_{label}"]), flush=True)

    made = []

    def key_created(n):
        key, _raw = gateway_services.api_key_create(actor=actor, org=org, name=f"new {n}")
        made.append(key)

    deployment = Deployment.objects.filter(org=org).order_by("id").first()
    delta_kind("key_created", key_created)
    delta_kind(
        "key_rotated",  # no grace: the replaced secret is dropped by its hash
        lambda n: gateway_services.api_key_rotate(actor=actor, key=made[n]),
    )
    delta_kind("key_revoked", lambda n: gateway_services.api_key_revoke(actor=actor, key=made[n]))
    delta_kind(
        "org_renamed",
        lambda n: org_services.org_update(actor=actor, org=org, name=f"Bench org {org.id} {n}"),
    )
    delta_kind(
        "org_policy",
        lambda n: governance_services.policy_set(
            actor=actor, org=org, allowed_models=["chat"] if n % 2 else ["chat", "gpt-4o-mini"]
        ),
    )
    delta_kind(
        "deployment",
        lambda n: gateway_services.deployment_save(
            actor=actor,
            org=org,
            model_name=deployment.model_name,
            provider=deployment.provider,
            upstream_model=deployment.upstream_model,
            weight=2 + n,
            deployment=deployment,
        ),
    )
    delta_kind(
        "routing_policy",
        lambda n: governance_services.routing_policy_save(
            actor=actor, org=org, name="fast", models=["chat"] if n % 2 else ["gpt-4o-mini"]
        ),
    )
    poll = [measured(workers[0].refresh_once) for _ in range(20)]  # nothing changed
    results["poll_nothing_changed"] = {
        "cpu_ms": round(statistics.median(p[0] for p in poll), 3),
        "queries": statistics.median(p[1] for p in poll),
    }
    snap = workers[0].target.current
    workers.clear()
    results["facts_refresh"], _ = timed(lambda: refresh_facts(snap), 3)
    results["facts_refresh_cpu_ms"] = round(
        statistics.median(measured(lambda: refresh_facts(snap))[0] for _ in range(3)), 1
    )

    if args.more_keys:
        del snap
        gc.collect()
        seed_keys(args.keys + 1, args.more_keys)
        with connection.cursor() as c:
            c.execute("ANALYZE gateway_apikey")
        results["keys_2"] = args.keys + args.more_keys
        snap = full_build("second")
        results["rss_after_second_build_mb"] = round(rss_mb(), 1)
        key_created(len(made))
        results["delta_key_create_2"] = measured(
            lambda: apply_delta(snap, build_delta(snap.version, current_version()))
        )[:2]

    print(json.dumps(results, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    connection.close()
    if not args.keep_db:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
