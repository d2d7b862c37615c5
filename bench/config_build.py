"""Config reaching the gateways at scale: the full snapshot build, a delta (a key created,
a key revoked, one org's policy), the facts refresh, and the month's spend, with N orgs,
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
    args = parser.parse_args()

    server = os.environ.get("DATABASE_URL", "")
    if not server.startswith("postgres"):
        sys.exit("set DATABASE_URL to a PostgreSQL server")
    name = os.environ.get("BENCH_CONFIG_DB", "bonito_bench_config")
    import psycopg

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
    from django.core.management import call_command
    from django.db import connection

    from billing.budgets import budget_save
    from billing.services import rollup_recent
    from billing.spend import spend_grouped
    from core.config_version import current_version
    from core.months import month_bounds
    from gateway import services as gateway_services
    from gateway.dataplane.snapshot import apply_delta
    from gateway.snapshot_builder import build_delta, build_snapshot, refresh_facts
    from governance import services as governance_services
    from orgs.audit import Actor
    from orgs.models import Organization

    call_command("migrate", "--noinput", verbosity=0)
    actor = Actor(via="bench")
    now = datetime.now(UTC)
    month = month_bounds(now)[0]
    results = {"orgs": args.orgs, "keys": args.keys, "rows": args.rows}

    def seed_keys(first: int, count: int):
        with connection.cursor() as c:
            c.execute(
                """INSERT INTO gateway_apikey (org_id, name, kind, key_hash, prefix, last4,
                allowed_models, allowed_providers, created_at)
                SELECT (SELECT min(id) FROM orgs_organization) + (i %% %s), 'key ' || i, 'bn',
                  md5(i::text) || md5((i + 1)::text), 'bn-' || substr(md5(i::text), 1, 6),
                  substr(md5(i::text), 1, 4),
                  CASE WHEN i %% 10 = 0 THEN '["gpt-4o-mini"]'::jsonb ELSE '[]'::jsonb END,
                  '[]'::jsonb, now()
                FROM generate_series(%s, %s) AS i""",
                [args.orgs, first, first + count - 1],
            )

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
            status, http_status, error_type, request_id, source, created_at)
            SELECT gen_random_uuid(), (SELECT min(id) FROM orgs_organization) + (i %% %s),
              'chat', 'chat', 'oai', '', 'chat', 10, 5, 0, 0.00001234, 100, 'success', 200, '',
              '', 'gateway', %s + (random() * (%s - %s::timestamptz))
            FROM generate_series(1, %s) AS i""",
            [args.orgs, month, now, month, args.rows],
        )
        c.execute("ANALYZE")
    results["seed_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    rollup_recent(now=now)
    results["rollup_s"] = round(time.perf_counter() - started, 1)

    # Month-to-date spend: the old raw scan against rollups + raw edges.
    def raw_scan():
        from django.db.models import Sum

        from billing.models import UsageRecord

        rows = UsageRecord.objects.filter(created_at__gte=month).order_by()
        return dict(rows.values_list("org_id").annotate(t=Sum("cost")))

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

    # Deltas: a key created, the key revoked, one org's policy, then one tier.
    org = orgs[len(orgs) // 2]

    def delta_after(change):
        nonlocal snap
        change()
        started = time.perf_counter()
        delta = build_delta(snap.version, current_version())
        built = time.perf_counter()
        snap = apply_delta(snap, delta)
        done = time.perf_counter()
        return {
            "build_ms": round((built - started) * 1000, 1),
            "apply_ms": round((done - built) * 1000, 1),
        }

    key, _ = None, None

    def create():
        nonlocal key
        key, _raw = gateway_services.api_key_create(actor=actor, org=org, name="new")

    results["delta_key_create"] = delta_after(create)
    results["delta_key_revoke"] = delta_after(
        lambda: gateway_services.api_key_revoke(actor=actor, key=key)
    )
    results["delta_org_policy"] = delta_after(
        lambda: governance_services.policy_set(actor=actor, org=org, allowed_models=["chat"])
    )
    results["delta_routing_policy"] = delta_after(
        lambda: governance_services.routing_policy_save(
            actor=actor, org=org, name="fast", models=["chat"]
        )
    )
    results["facts_refresh"], _ = timed(lambda: refresh_facts(snap), 3)

    if args.more_keys:
        del snap
        gc.collect()
        seed_keys(args.keys + 1, args.more_keys)
        with connection.cursor() as c:
            c.execute("ANALYZE gateway_apikey")
        results["keys_2"] = args.keys + args.more_keys
        snap = full_build("second")
        results["rss_after_second_build_mb"] = round(rss_mb(), 1)
        results["delta_key_create_2"] = delta_after(create)

    print(json.dumps(results, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    connection.close()
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
