"""Control plane: build the data plane's snapshot from the database and keep it fresh.

A background thread per process polls one integer (ConfigVersion) and rebuilds when it
changes, so a revoked key or a new policy is enforced everywhere within about a second,
and the request path never touches the database.
"""

import logging
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime

import orjson
from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Subquery

from core import smart, strategies
from core.config_version import (
    ALL,
    KEY,
    ORG,
    TIER,
    changes_since,
    current_stamp,
    current_version,
    org_changes_after,
    rotated_key,
    shared_deltas,
    store_delta,
)
from core.crypto import seal, sealed_by_newest, unseal
from core.months import month_key

from .dataplane.memory import settle_long_lived
from .dataplane.snapshot import (
    Delta,
    DeploymentInfo,
    KeyInfo,
    OrgInfo,
    RoutingPolicyInfo,
    Snapshot,
    apply_delta,
    delta_from_dict,
    delta_to_dict,
)
from .dataplane.state import SnapshotSource
from .models import (
    ApiKey,
    CredentialsUnreadable,
    Deployment,
    ModelCatalogEntry,
    ProviderConnection,
    key_hash_secret,
)
from .pricing import (
    audio_prices,
    cache_prices,
    context_prices,
    context_window,
    price_per_token,
    search_per_prompt,
    search_price,
    takes_images,
    tier_prices,
    unit_costs,
)

log = logging.getLogger("bonito.gateway.snapshot")


def _ts(dt) -> float | None:
    return dt.timestamp() if dt else None


# Per-org facts kept by apps above the gateway (billing: month-to-date spend, spent budgets
# and tier allowances), added at start-up by their AppConfig.ready(). A source is
# f(now, org_ids) -> {org_id: {OrgInfo field: value}} (org_ids None: every org); "blocked" scopes add up, any other field is set.
ORG_FACTS: list = []


def add_org_facts(source) -> None:
    if source not in ORG_FACTS:
        ORG_FACTS.append(source)


def _org_facts(now: datetime, org_ids=None) -> dict[int, dict]:
    merged: dict[int, dict] = {}
    for source in ORG_FACTS:
        for org_id, facts in source(now, org_ids).items():
            into = merged.setdefault(org_id, {})
            for name, value in facts.items():
                if name == "blocked":
                    into[name] = {**into.get(name, {}), **value}
                else:
                    into[name] = value
    return merged


def org_facts(org_id: int, now: datetime | None = None) -> dict:
    """One org's facts (month-to-date spend, blocks), as an agent's config pull sends them."""
    return _org_facts(now or datetime.now(UTC), [org_id]).get(org_id, {})


_UNREADABLE_SAID: set = set()


def _unreadable(org_id: int, exc: CredentialsUnreadable) -> None:
    """An error log, once per provider per process (the snapshot is rebuilt twice a second)."""
    if exc.provider_id not in _UNREADABLE_SAID:
        _UNREADABLE_SAID.add(exc.provider_id)
        log.error("org %s: %s Its deployments are left out of the configuration.", org_id, exc)


def deployment_info(d: Deployment, catalog: dict | None = None) -> DeploymentInfo:
    """The data plane's view of one deployment (with its provider's decrypted credentials)."""
    p = d.provider
    input_cost, output_cost = price_per_token(d, catalog)
    cached_cost, cache_write_cost, cache_write_1h_cost = cache_prices(d.upstream_model, input_cost)
    steps = context_prices(d.upstream_model, input_cost, output_cost)
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
        cached_input_cost=cached_cost,
        cache_write_cost=cache_write_cost,
        cache_write_1h_cost=cache_write_1h_cost,
        context_prices=steps,
        tier_prices=tier_prices(d.upstream_model, input_cost, output_cost),
        search_cost=search_price(d.upstream_model),
        search_per_prompt=search_per_prompt(d.upstream_model),
        max_input_tokens=context_window(d.upstream_model),
        images=takes_images(d.upstream_model),
        audio_costs=audio_prices(d.upstream_model, input_cost, output_cost),
        unit_costs=unit_costs(d),
        weight=d.weight,
        priority=d.priority,
        timeout_s=float(d.timeout_s or 0),
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
        disabled=not k.is_active,
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


def _smart(spec, tiers, where: str, learned: bool = True):
    """The SmartPolicy the data plane reads. The saves check the settings; a policy of the
    learned classifier whose extra was uninstalled since is kept whole (the data plane
    scores it with rules, and logs it); a row the checks no longer pass otherwise is served
    as rules routing with the default thresholds, and logged; tiers that cannot be routed,
    not at all. ``learned``: whether the org's tier includes the learned classifier; saved
    before a downgrade, it is served with rules instead (core.smart.without_learned), never
    refused."""
    if not learned:
        spec = smart.without_learned(spec)
    try:
        return smart.resolve(spec, tiers, strategies_known=strategies.STRATEGIES, serving=True)
    except ValueError as exc:
        problem = exc
    try:
        policy = smart.resolve({}, tiers)
    except ValueError:
        log.error(
            "%s: smart routing refused (%s), and its tiers cannot be smart-routed with the "
            "default settings either; not smart-routed (a routing policy's models are tried "
            "in order; the org's alias is an unknown model)",
            where,
            problem,
        )
        return None
    log.error("%s: smart routing settings refused (%s); using the defaults", where, problem)
    return policy


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


_KEY_COLUMNS = (
    "id",
    "org_id",
    "name",
    "key_hash",
    "kind",
    "team_id",
    "allowed_models",
    "allowed_providers",
    "rpm_limit",
    "tpm_limit",
    "expires_at",
    "revoked_at",
    "routing_policy__name",
    "previous_key_hash",
    "previous_valid_until",
    "is_active",
    "retired_key_hash",
)


def load_keys(rows=None, ended: dict | None = None) -> dict:
    """key hash -> KeyInfo for the ApiKey queryset ``rows`` (all keys when None): plain
    tuples, not model instances, and the repeated values shared (one frozenset per
    distinct model list, one string per kind and policy name). With ``ended``, a rotated
    key's replaced secret whose grace is over (or had none) goes there, as the same key
    expiring when its grace ended, and so does the secret the rotation before replaced
    (retired_key_hash): what a delta tells its readers to drop."""
    rows = ApiKey.objects.all() if rows is None else rows
    sets: dict = {}
    strings: dict = {}

    def frozen(values):
        if not values:
            return EMPTY
        t = tuple(values)
        got = sets.get(t)
        if got is None:
            got = sets[t] = frozenset(t)
        return got

    keys = {}
    now = time.time()
    for (
        id_,
        org_id,
        name,
        key_hash,
        kind,
        team_id,
        models,
        providers,
        rpm,
        tpm,
        expires_at,
        revoked_at,
        policy,
        previous_hash,
        previous_until,
        is_active,
        retired_hash,
    ) in rows.order_by().values_list(*_KEY_COLUMNS).iterator(chunk_size=5000):
        key = keys[key_hash] = KeyInfo(
            id=id_,
            org_id=org_id,
            name=name,
            hash=key_hash,
            kind=strings.setdefault(kind, kind),
            team_id=team_id,
            allowed_models=frozen(models),
            allowed_providers=frozen(providers),
            rpm=rpm,
            tpm=tpm,
            expires_at=expires_at.timestamp() if expires_at else None,
            revoked=revoked_at is not None,
            routing_policy=strings.setdefault(policy, policy) if policy else None,
            disabled=not is_active,
        )
        # A rotated key's old secret in its grace period: the same key, ending with the
        # grace (every worker refuses it by the clock then, whatever its snapshot's age).
        if previous_hash and previous_until:
            ends = previous_until.timestamp()
            if key.expires_at is not None:
                ends = min(ends, key.expires_at)
            if previous_until.timestamp() > now:
                keys[previous_hash] = replace(key, hash=previous_hash, expires_at=ends)
            elif ended is not None:
                ended[previous_hash] = replace(key, hash=previous_hash, expires_at=ends)
        # The secret replaced before that one, its grace over: dropped too. (An agent of an
        # earlier release keeps it as the same key expired by the last rotation at the latest.)
        if retired_hash and ended is not None and retired_hash != key_hash:
            gone = min(previous_until.timestamp(), now) if previous_until else now
            ended.setdefault(retired_hash, replace(key, hash=retired_hash, expires_at=gone))
    return keys


EMPTY = frozenset()


def _one(org, name: str):
    """The org's one-to-one row ``name`` selected with it, or None when it has none."""
    try:
        return getattr(org, name)
    except ObjectDoesNotExist:
        return None


def load_orgs(org_ids=None, now: datetime | None = None, skipped: list | None = None) -> dict:
    """org id -> OrgInfo of the given orgs (all when None): one query per table.
    ``skipped``: a list to which the ids of deployments left out are added (their
    provider's credentials could not be decrypted here)."""
    from governance.models import RoutingPolicy
    from orgs.models import Organization, TierLimit, tier_includes_learned

    def of(qs, field="org_id"):
        return qs if org_ids is None else qs.filter(**{f"{field}__in": list(org_ids)})

    deployments: dict[int, dict[str, list]] = {}
    # Each deployment with its provider and its upstream model's catalog prices: one query
    # (a price the catalog lacks comes from LiteLLM's map: pricing.catalog_price).
    entry = ModelCatalogEntry.objects.filter(name=OuterRef("upstream_model"))
    active = list(
        of(Deployment.objects.filter(is_active=True, provider__is_active=True))
        .select_related("provider")
        .annotate(
            in_catalog=Exists(entry),
            catalog_in=Subquery(entry.values("input_cost_per_token")[:1]),
            catalog_out=Subquery(entry.values("output_cost_per_token")[:1]),
        )
    )
    catalog = {d.upstream_model: (d.catalog_in, d.catalog_out) for d in active if d.in_catalog}
    for d in active:
        try:
            info = deployment_info(d, catalog)
        except CredentialsUnreadable as exc:
            # Left out (it could not be called): one provider's unreadable credentials
            # froze every org's configuration while each build failed.
            _unreadable(d.org_id, exc)
            if skipped is not None:
                skipped.append(d.id)
            continue
        deployments.setdefault(d.org_id, {}).setdefault(d.model_name, []).append(info)
    now = now or datetime.now(UTC)
    org_facts = _org_facts(now, org_ids)
    tiers = {t.tier: t for t in TierLimit.objects.all()}
    routing: dict[int, dict] = {}
    # With its org's tier (a join): whether it includes smart routing's learned classifier.
    for rp in of(RoutingPolicy.objects.filter(is_active=True).annotate(org_tier=F("org__tier"))):
        routing.setdefault(rp.org_id, {})[rp.name] = RoutingPolicyInfo(
            name=rp.name,
            strategy=_strategy(rp.strategy, f"routing policy {rp.id} ({rp.name})"),
            models=tuple(rp.model_names),
            weights=_weights(rp),
            smart=_smart(
                rp.smart,
                rp.model_names,
                f"routing policy {rp.id} ({rp.name})",
                tier_includes_learned(rp.org_tier, tiers.get(rp.org_tier), look_up=False),
            )
            if rp.strategy == "smart"
            else None,
        )
    orgs = {}
    # The org with its policy and gateway config (one-to-one): one query, not three.
    for org in of(Organization.objects.select_related("policy", "gateway_config"), "id"):
        pol, cfg, tier = _one(org, "policy"), _one(org, "gateway_config"), tiers.get(org.tier)
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
            spent_month=month_key(now),
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
            timeout_s=float(cfg.request_timeout_s) if cfg else settings.GATEWAY_REQUEST_TIMEOUT_S,
            deployments=deps,
            routing_policies=routing.get(org.id, {}),
            blocked=facts.get("blocked", {}),
            smart=_smart(
                cfg.smart,
                cfg.smart_tiers,
                f"the gateway config of org {org.id}",
                tier_includes_learned(org.tier, tier, look_up=False),
            )
            if cfg and cfg.smart_tiers
            else None,
            auto_model=cfg.auto_model_alias if cfg else smart.DEFAULT_ALIAS,
            cors_origins=frozenset(cfg.cors_origins if cfg else ()),
            vpc_only=org.vpc_only and org.deployment_mode == Organization.DeploymentMode.VPC,
        )
    return orgs


def build_snapshot(version: int | None = None) -> Snapshot:
    """The whole snapshot from the database (first start, or a delta that cannot be made)."""
    with transaction.atomic():
        version = current_version() if version is None else version
        keys = load_keys()
        orgs = load_orgs()
    return Snapshot(
        version=version, keys=keys, orgs=orgs, hash_secret=key_hash_secret(), built_at=time.time()
    )


def build_delta(
    since: int, until: int, org_id: int | None = None, skipped: list | None = None
) -> Delta | None:
    """What changed in (since, until], from the change log (core.config_version), or None
    when only a full build is right (an "all" change, a pruned log, a reset counter).
    With ``org_id``, only that org's part (an agent serving one org). ``skipped``: as
    load_orgs's."""
    from orgs.models import Organization

    with transaction.atomic():
        changes = changes_since(since, until)
        if changes is None:
            return None
        org_ids, key_orgs, key_ids, tiers = set(), set(), set(), set()
        rotations: dict = {}  # (org id, key id) -> how often its secret was replaced
        for kind, change_org, ref in changes:
            if kind == ALL:
                return None
            if kind == TIER:
                tiers.add(ref)
            elif org_id is not None and change_org != org_id:
                continue
            elif kind == KEY:
                key_ids.add((change_org, int(ref)))
            elif kind == ORG and (rotated := rotated_key(ref)) is not None:
                key_ids.add((change_org, rotated))
                rotations[change_org, rotated] = rotations.get((change_org, rotated), 0) + 1
            else:
                org_ids.add(change_org)
                if kind == ORG:
                    key_orgs.add(change_org)
        if tiers:
            on_tier = Organization.objects.filter(tier__in=tiers)
            if org_id is not None:
                on_tier = on_tier.filter(id=org_id)
            org_ids.update(on_tier.values_list("id", flat=True))
        orgs = load_orgs(org_ids, skipped=skipped) if org_ids else {}
        keys, ended = {}, {}
        if key_orgs:
            keys.update(load_keys(ApiKey.objects.filter(org_id__in=list(key_orgs))))
        single = {k for o, k in key_ids if o not in key_orgs}
        if single:
            keys.update(load_keys(ApiKey.objects.filter(id__in=list(single)), ended))
        whole = _replaced_unknown(rotations, key_orgs, until)
        if whole:  # read after the keys, so no replacement committed in between is missed
            key_orgs |= whole
            keys.update(load_keys(ApiKey.objects.filter(org_id__in=list(whole))))
            ended = {h: k for h, k in ended.items() if k.org_id not in whole}
    return Delta(
        since=since,
        until=until,
        orgs={i: orgs.get(i) for i in org_ids},
        # The replaced secrets too, expired: a reader of an earlier release (an agent) that
        # does not know ``dropped`` refuses them by the clock.
        keys={**keys, **ended},
        key_orgs=frozenset(key_orgs),
        key_ids=frozenset((o, k) for o, k in key_ids if o not in key_orgs),
        dropped=frozenset(ended),
    )


def _replaced_unknown(rotations: dict, key_orgs: set, until: int) -> set:
    """Orgs whose keys must reload whole because a rotated key's row no longer keeps the
    secret the delta must drop: its secret was replaced again (in the range, or after it:
    the rows were read now), or its org had a plain ``org`` change after the range (a
    rotation during a grace period, which keeps no hash of the secret it ends)."""
    pending = {(o, k): n for (o, k), n in rotations.items() if o not in key_orgs}
    if not pending:
        return set()
    whole = {o for (o, _k), n in pending.items() if n > 1}
    for change_org, ref in org_changes_after(until, {o for o, _k in pending}):
        if ref == "" or (change_org, rotated_key(ref)) in pending:
            whole.add(change_org)
    return whole


# A transaction that made more versions than this (a bulk import) leaves the workers to
# build one delta for the whole range, as they would; a delta larger than SHARED_MAX_BYTES
# (an org with very many keys) is not stored either.
SHARE_AT_MOST = 16
SHARED_MAX_BYTES = 256 * 1024


def share_deltas(versions) -> None:
    """After a commit that made ``versions``: build each one's delta once and store it,
    serialised and encrypted (it holds the deployments' credentials), on its change row,
    so that every worker of every replica applies it instead of building it
    (core.config_version.ON_COMMITTED). Whatever fails here, the workers build it; with
    GATEWAY_SHARE_DELTAS off, nothing is built here."""
    if len(versions) > SHARE_AT_MOST or not settings.GATEWAY_SHARE_DELTAS:
        return
    for version in versions:
        skipped: list = []
        delta = build_delta(version - 1, version, skipped=skipped)
        if delta is None or skipped or not _sealable(delta):
            # Deployments this process cannot decrypt are left out of its own view only:
            # stored, the delta would take them from every worker that can (a replica
            # with other keys, mid-rotation). Those build the delta themselves.
            continue
        sealed = seal(orjson.dumps(delta_to_dict(delta, include_credentials=True)))
        if len(sealed) <= SHARED_MAX_BYTES:
            store_delta(version, sealed)


def _sealable(delta: Delta) -> bool:
    """Whether every provider credential in ``delta`` is stored under the newest key, the
    one the delta is sealed with. One stored under an older key (mid-rotation) would be
    handed, decrypted, to a worker that can unseal the delta but could not have read the
    credential itself (a replica that has only the new key): that worker builds instead."""
    orgs = [org_id for org_id, org in delta.orgs.items() if org is not None]
    if not orgs:
        return True
    stored = (
        ProviderConnection.objects.filter(org_id__in=orgs, is_active=True)
        .exclude(credentials_encrypted="")
        .values_list("credentials_encrypted", flat=True)
    )
    return all(sealed_by_newest(token) for token in stored)


def stored_deltas(since: int, until: int) -> list[Delta] | None:
    """The deltas of (since, until], one per version, as share_deltas stored them; None
    when any is missing (the worker builds the delta then)."""
    if until - since > SHARE_AT_MOST:
        return None
    sealed = shared_deltas(since, until)
    if sealed is None:
        return None
    deltas = [delta_from_dict(orjson.loads(unseal(s))) for s in sealed]
    if [(d.since, d.until) for d in deltas] != [(v, v + 1) for v in range(since, until)]:
        return None  # not this log's (a restored database): build instead
    return deltas


def refresh_facts(snap: Snapshot, now: datetime | None = None) -> Snapshot:
    """The snapshot with every org's billing facts (month-to-date spend, spent budgets and
    allowances) read again: only the orgs whose facts changed are new objects, the keys are
    shared. The same version: facts are not config, they move with usage."""
    now = now or datetime.now(UTC)
    facts, month = _org_facts(now, None), month_key(now)
    orgs = None
    for org_id, org in snap.orgs.items():
        f = facts.get(org_id, {})
        spent, blocked = f.get("spent_this_month", 0.0), f.get("blocked", {})
        if spent != org.spent_this_month or blocked != org.blocked or month != org.spent_month:
            orgs = dict(snap.orgs) if orgs is None else orgs
            orgs[org_id] = replace(org, spent_this_month=spent, spent_month=month, blocked=blocked)
    if orgs is None:
        return snap
    return Snapshot(
        version=snap.version,
        keys=snap.keys,
        orgs=orgs,
        hash_secret=snap.hash_secret,
        built_at=snap.built_at,
        key_hashes=snap.key_hashes,
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
        self._last_facts = time.time()
        self._stamp = None
        self._stop = threading.Event()
        # A new long-lived object graph went live (a full build, or the key table's base
        # compacted): frozen out of the garbage collector's walks once the old one is gone.
        self._settle = False

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="bonito-snapshot", daemon=True
                )
                self._thread.start()

    def refresh_once(self) -> None:
        """Apply the changes since the last version (a full build on first start, or when
        the change log cannot say what changed), and every GATEWAY_FACTS_REFRESH_S read
        the billing facts again (replacing only the orgs whose facts moved)."""
        stamp = current_stamp()  # this thread keeps its connection; errors drop it
        current = self.target.current
        snap = None
        if current is None or self._stamp is None:
            snap = build_snapshot(stamp[0])
            self._last_facts = time.time()
            self._settle = True
        elif stamp != self._stamp:
            deltas = None
            if stamp[0] != self._stamp[0] and current.version == self._stamp[0]:
                # The deltas the writer stored (decrypt and apply: a fraction of a
                # millisecond each), or the one this worker builds from the tables.
                deltas = self._stored(self._stamp[0], stamp[0])
                if deltas is None:
                    delta = build_delta(self._stamp[0], stamp[0])
                    deltas = None if delta is None else [delta]
            # The same version at a new time is a reset counter: a full build.
            if deltas is None:
                snap = build_snapshot(stamp[0])
                self._settle = True
            else:
                snap = current
                for delta in deltas:
                    snap = apply_delta(snap, delta, built_at=time.time())
                if not snap.keys.shares_base(current.keys):  # compacted into a new base
                    self._settle = True
        elif time.time() - self._last_facts > settings.GATEWAY_FACTS_REFRESH_S:
            snap = refresh_facts(current)
            self._last_facts = time.time()
            if snap is current:
                return
        if snap is None:
            return
        if self.on_publish is not None:
            self.on_publish(snap)
        self.target.publish(snap)
        self._stamp = stamp

    def refresh(self) -> None:
        """refresh_once, then freeze a new long-lived snapshot out of the garbage
        collector's walks (settle_long_lived) here, where the old one is let go."""
        self.refresh_once()
        if self._settle:
            settle_long_lived()
            self._settle = False

    @staticmethod
    def _stored(since: int, until: int) -> list[Delta] | None:
        try:
            return stored_deltas(since, until)
        except Exception as exc:  # a row this code cannot read (a key rotated away): build
            log.warning("stored config delta unusable (%s); building it", type(exc).__name__)
            return None

    def _run(self) -> None:
        from orgs import secrets_check

        # The server's secrets, for the management commands to check theirs against.
        secrets_check.record()
        while not self._stop.is_set():
            try:
                self.refresh()
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
