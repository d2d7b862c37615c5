"""Control plane: build the data plane's snapshot from the database and keep it fresh.

A background thread per process polls one integer (ConfigVersion) and rebuilds when it
changes, so a revoked key or a new policy is enforced everywhere within about a second,
and the request path never touches the database.
"""

import logging
import threading
import time
from datetime import UTC, datetime

from django.conf import settings
from django.db import connection, transaction

from core import strategies
from core.config_version import current_stamp, current_version

from .dataplane.snapshot import DeploymentInfo, KeyInfo, OrgInfo, RoutingPolicyInfo, Snapshot
from .dataplane.state import SnapshotSource
from .models import ApiKey, Deployment, GatewayConfig, key_hash_secret
from .pricing import catalog_prices, price_per_token

log = logging.getLogger("bonito.gateway.snapshot")


def _ts(dt) -> float | None:
    return dt.timestamp() if dt else None


# Per-org facts kept by apps above the gateway (billing: month-to-date spend, spent budgets
# and tier allowances), added at start-up by their AppConfig.ready(). A source is
# f(now) -> {org_id: {OrgInfo field: value}}; "blocked" scopes add up, any other field is set.
ORG_FACTS: list = []


def add_org_facts(source) -> None:
    if source not in ORG_FACTS:
        ORG_FACTS.append(source)


def _org_facts(now: datetime) -> dict[int, dict]:
    merged: dict[int, dict] = {}
    for source in ORG_FACTS:
        for org_id, facts in source(now).items():
            into = merged.setdefault(org_id, {})
            for name, value in facts.items():
                if name == "blocked":
                    into[name] = {**into.get(name, {}), **value}
                else:
                    into[name] = value
    return merged


def deployment_info(d: Deployment, catalog: dict | None = None) -> DeploymentInfo:
    """The data plane's view of one deployment (with its provider's decrypted credentials)."""
    p = d.provider
    input_cost, output_cost = price_per_token(d, catalog)
    return DeploymentInfo(
        id=d.id,
        model=d.model_name,
        provider=p.name,
        kind=p.kind,
        upstream_model=d.upstream_model,
        api_base=p.api_base,
        region=d.region,
        input_cost=input_cost,
        output_cost=output_cost,
        weight=d.weight,
        priority=d.priority,
        settings=dict(p.settings or {}),
        credentials=p.get_credentials(),
    )


def key_info(k: ApiKey) -> KeyInfo:
    """The data plane's view of one key (select its routing_policy with it)."""
    return KeyInfo(
        id=k.id,
        org_id=k.org_id,
        name=k.name,
        hash=k.key_hash,
        kind=k.kind,
        team_id=k.team_id,
        allowed_models=frozenset(k.allowed_models or ()),
        allowed_providers=frozenset(k.allowed_providers or ()),
        rpm=k.rpm_limit,
        tpm=k.tpm_limit,
        expires_at=_ts(k.expires_at),
        revoked=k.revoked_at is not None,
        routing_policy=k.routing_policy.name if k.routing_policy else None,
    )


def _lowest(*caps) -> float | None:
    """The lowest of the spend caps that apply (the policy's, the tier's)."""
    present = [float(c) for c in caps if c is not None]
    return min(present) if present else None


def _strategy(name: str, where: str) -> str:
    """A strategy the data plane knows. The saves refuse unknown ones; a row written around
    them (by hand, or before a strategy was removed) is served as failover, and logged."""
    if strategies.error_for(name) is None:
        return name
    log.error("%s has the unknown routing strategy %r; publishing failover instead", where, name)
    return strategies.DEFAULT


def _weights(rp) -> dict:
    """A routing policy's weights as the data plane reads them: model -> number >= 0. The
    saves validate them; a row written around them keeps only its valid entries, logged."""
    raw = rp.weights if isinstance(rp.weights, dict) else {}
    out = {
        m: w
        for m, w in raw.items()
        if isinstance(w, int | float) and not isinstance(w, bool) and 0 <= w < float("inf")
    }
    if len(out) != len(raw) or (rp.weights and not isinstance(rp.weights, dict)):
        log.error("routing policy %s (%s) has invalid weights; ignoring them", rp.id, rp.name)
    return out


def build_snapshot(version: int | None = None) -> Snapshot:
    from governance.models import Policy, RoutingPolicy
    from orgs.models import Organization, TierLimit

    with transaction.atomic():
        version = current_version() if version is None else version
        keys = {k.key_hash: key_info(k) for k in ApiKey.objects.select_related("routing_policy")}
        deployments: dict[int, dict[str, list]] = {}
        active = list(
            Deployment.objects.filter(is_active=True, provider__is_active=True).select_related(
                "provider"
            )
        )
        catalog = catalog_prices(
            d.upstream_model for d in active
        )  # one query, not one per deployment
        for d in active:
            info = deployment_info(d, catalog)
            deployments.setdefault(d.org_id, {}).setdefault(d.model_name, []).append(info)
        policies = {p.org_id: p for p in Policy.objects.all()}
        configs = {c.org_id: c for c in GatewayConfig.objects.all()}
        routing: dict[int, dict] = {}
        for rp in RoutingPolicy.objects.filter(is_active=True):
            routing.setdefault(rp.org_id, {})[rp.name] = RoutingPolicyInfo(
                name=rp.name,
                strategy=_strategy(rp.strategy, f"routing policy {rp.id} ({rp.name})"),
                models=tuple(rp.model_names),
                weights=_weights(rp),
            )
        org_facts = _org_facts(datetime.now(UTC))
        tiers = {t.tier: t for t in TierLimit.objects.all()}
        orgs = {}
        for org in Organization.objects.all():
            pol, cfg, tier = policies.get(org.id), configs.get(org.id), tiers.get(org.tier)
            facts = org_facts.get(org.id, {})
            deps = {
                m: tuple(sorted(v, key=lambda d: (d.priority, d.id)))
                for m, v in deployments.get(org.id, {}).items()
            }
            orgs[org.id] = OrgInfo(
                id=org.id,
                slug=org.slug,
                tier=org.tier,
                allowed_models=frozenset(pol.allowed_models if pol else ()),
                denied_models=frozenset(pol.denied_models if pol else ()),
                allowed_providers=frozenset(pol.allowed_providers if pol else ()),
                denied_providers=frozenset(pol.denied_providers if pol else ()),
                allowed_regions=frozenset(pol.allowed_regions if pol else ()),
                enabled_providers=frozenset(cfg.enabled_providers if cfg else ()),
                spend_cap=_lowest(
                    pol.monthly_spend_cap_usd if pol else None,
                    tier.monthly_spend_cap_usd if tier else None,
                ),
                spent_this_month=facts.get("spent_this_month", 0.0),
                default_max_tokens=pol.default_max_tokens_estimate if pol else 1024,
                strategy=_strategy(cfg.default_strategy, f"the gateway config of org {org.id}")
                if cfg
                else strategies.DEFAULT,
                fallback_models=tuple(cfg.fallback_models if cfg else ()),
                rpm=cfg.org_rpm_limit if cfg else None,
                tpm=cfg.org_tpm_limit if cfg else None,
                key_rpm=cfg.default_key_rpm if cfg else None,
                key_tpm=cfg.default_key_tpm if cfg else None,
                tier_key_rpm=tier.key_rpm if tier else None,
                timeout_s=float(cfg.request_timeout_s)
                if cfg
                else settings.GATEWAY_REQUEST_TIMEOUT_S,
                deployments=deps,
                routing_policies=routing.get(org.id, {}),
                blocked=facts.get("blocked", {}),
            )
    return Snapshot(
        version=version, keys=keys, orgs=orgs, hash_secret=key_hash_secret(), built_at=time.time()
    )


class SnapshotRefresher:
    """One per process: builds the first snapshot, then rebuilds whenever the version moves,
    and publishes each into ``target`` (the source the process's Gateway reads)."""

    def __init__(self, target: SnapshotSource, interval: float, on_publish=None):
        self.target = target
        self.interval = interval
        self.on_publish = on_publish  # runs in this thread before the snapshot goes live
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._last_full = 0.0
        self._stamp = None
        self._stop = threading.Event()

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="bonito-snapshot", daemon=True
                )
                self._thread.start()

    def refresh_once(self) -> None:
        stamp = current_stamp()  # this thread keeps its connection; errors drop it
        # Rebuild on a version change, and every minute anyway so month-to-date spend stays fresh.
        if (
            self.target.current is None
            or stamp != self._stamp
            or time.time() - self._last_full > 60
        ):
            snap = build_snapshot(stamp[0])
            if self.on_publish is not None:
                self.on_publish(snap)
            self.target.publish(snap)
            self._stamp, self._last_full = stamp, time.time()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh_once()
            except Exception as exc:  # the DB is down: keep serving the last snapshot
                log.warning(
                    "snapshot refresh failed (%s: %s); serving the last one",
                    type(exc).__name__,
                    exc,
                )
                try:
                    connection.close()
                except Exception:
                    log.debug("closing the broken connection failed", exc_info=True)
            self._stop.wait(self.interval)
        connection.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
