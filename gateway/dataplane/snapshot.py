"""The immutable view of config the hot path reads: keys by hash, orgs, deployments."""

import contextlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from functools import cache

from core.smart import DEFAULT_ALIAS, SmartPolicy, policy_from_dict, policy_to_dict


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: int
    org_id: int
    name: str
    hash: str = ""
    kind: str = "bn"
    team_id: int | None = None
    allowed_models: frozenset = frozenset()
    allowed_providers: frozenset = frozenset()
    rpm: int | None = None
    tpm: int | None = None
    expires_at: float | None = None
    revoked: bool = False
    routing_policy: str | None = None
    # Disabled by an org admin or its owner (reversible, unlike revoked); an older control
    # plane's document lacks it: enabled.
    disabled: bool = False


# The service tiers a provider may bill a request at, as LiteLLM's map names their prices
# ("input_cost_per_token_priority"): OpenAI's and Azure's flex and priority, Gemini's and
# Vertex's, Bedrock's; "fast" is billed as priority (LiteLLM's rule). Batch prices are the
# batch API's, which Bonito does not serve.
SERVICE_TIERS = {
    "flex": "flex",
    "priority": "priority",
    "fast": "priority",
    "ultrafast": "ultrafast",
    "balanced": "balanced",
}


# Tiers priced below standard: billed only when the provider says it served them.
DISCOUNT_TIERS = frozenset({"flex", "balanced"})


def billed_tier(requested, served) -> str:
    """The service tier a request is billed at (a key of DeploymentInfo.tier_prices, ""
    for standard): the one the provider says it served ("service_tier" on its response or
    usage) when that names a tier or the standard one, else the one the request asked for
    ("auto", or anything unknown: standard) — but never a discount on the request's word
    alone: a key holder could otherwise halve what the spend cap counts by asking for
    flex from a provider that ignores it."""
    if isinstance(served, str):
        served = served.lower()
        if served in SERVICE_TIERS:
            return SERVICE_TIERS[served]
        if served in ("default", "standard"):
            return ""
    tier = SERVICE_TIERS.get(requested.lower(), "") if isinstance(requested, str) else ""
    return "" if tier in DISCOUNT_TIERS else tier


def served_tier(answer) -> str | None:
    """The service tier a provider's answer (a chat completion or chunk, a Responses
    response, an Anthropic message) says it was served at: its ``service_tier``, else its
    usage's (Anthropic's); None if it says none."""
    if not isinstance(answer, dict):
        return None
    tier = answer.get("service_tier")
    usage = answer.get("usage")
    if not isinstance(tier, str) and isinstance(usage, dict):
        # Anthropic's usage.service_tier, or Gemini's as the LiteLLM adapter kept it
        tier = usage.get("service_tier") or getattr(usage, "tier", None)
    return tier if isinstance(tier, str) else None


@dataclass(frozen=True, slots=True)
class DeploymentInfo:
    id: int
    model: str
    provider: str  # the connection's name
    kind: str  # a provider kind: one of provider_kinds.KINDS
    upstream_model: str
    api_base: str = ""
    region: str = ""
    input_cost: float = 0.0  # USD per token
    output_cost: float = 0.0
    # USD per input token read from / written to the provider's prompt cache (None: as
    # plain input; an agent of an earlier release ignores them and prices them so).
    cached_input_cost: float | None = None
    cache_write_cost: float | None = None
    cache_write_1h_cost: float | None = None  # None: as any write
    # Where a longer prompt changes the price of every token of the request (Gemini and
    # Claude above 200k prompt tokens, GPT-5.x above 272k, Alibaba's tiers): ascending
    # (more than this many prompt tokens, input, output, cache read, cache write, 1-hour
    # write) as pricing.context_prices makes them; () for one price at every size. An
    # agent of an earlier release ignores them and prices every size at the base prices.
    context_prices: tuple = ()
    # Service tiers priced apart (pricing.tier_prices): "flex", "priority"… -> a schedule
    # shaped like context_prices whose first step (-1 tokens) holds for every prompt. A
    # request billed at a tier it lacks (or an earlier agent) is priced as standard.
    tier_prices: dict = field(default_factory=dict)
    # USD per web search the provider ran for a request (Anthropic's web search tool,
    # LiteLLM's search_context_cost_per_query); None: not priced (an earlier agent's too).
    search_cost: float | None = None
    # Searches billed once per request that searched, however many ran (Gemini 2.x's
    # grounding; pricing.search_per_prompt).
    search_per_prompt: bool = False
    # The most prompt tokens the model reads (LiteLLM's max_input_tokens; 0: not known):
    # what a spend reservation holds for input a request only points to (tokens.unseen_input).
    max_input_tokens: int = 0
    # Whether the model reads images (LiteLLM's supports_vision; None: not known, as from an
    # earlier control plane): a request with images passes over one that does not.
    images: bool | None = None
    # USD per audio token of the prompt and of the output (gpt-audio 16x the text price,
    # Gemini's audio input 3x) by service tier ("" standard; pricing.audio_prices): a tier
    # missing here is priced as standard; None: as a text token of the request.
    audio_costs: dict = field(default_factory=dict)
    # USD per unit for image and audio models (gateway/dataplane/media.py): "image" (and
    # "image:<quality>/<WxH>", "image:<WxH>" where the catalog prices sizes), "second" (of
    # audio), "character" (of speech input), "query" (a rerank search).
    unit_costs: dict = field(default_factory=dict)
    weight: int = 1
    priority: int = 0
    # Seconds one attempt may take (to a stream's first output) before the request fails
    # over; 0: only its share of the org's deadline (an earlier control plane's document).
    timeout_s: float = 0.0
    settings: dict = field(default_factory=dict)
    credentials: dict = field(default_factory=dict, repr=False)
    # Set by a VPC agent that holds credentials for this provider which must not go to its
    # endpoint (agents/runtime/credentials.py): why. The call is refused (502, never made),
    # not made without them.
    withheld: str = ""

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.upstream_model}"

    def prices(self, prompt_tokens: int, tier: str = "") -> tuple:
        """(input, output, cache read, cache write, 1-hour write) per token for a request
        of ``prompt_tokens`` billed at service ``tier`` (a key of tier_prices; "" or one
        this deployment does not price apart: standard): its prompt-size step's, else the
        base prices (None: as input, or as any write for the 1-hour write)."""
        chosen = None
        for step in (
            self.tier_prices.get(tier, self.context_prices) if tier else self.context_prices
        ):
            if prompt_tokens > step[0]:
                chosen = step
            else:
                break
        if chosen is not None:
            return tuple(chosen[1:])
        return (
            self.input_cost,
            self.output_cost,
            self.cached_input_cost,
            self.cache_write_cost,
            self.cache_write_1h_cost,
        )

    def cost(
        self,
        input_tokens: int,
        output_tokens: int,
        cached: int = 0,
        written: int = 0,
        written_1h: int = 0,
        searches: int = 0,
        audio_in: int = 0,
        audio_out: int = 0,
        tier: str = "",
    ) -> float:
        """What a request to this deployment cost (USD): the one formula. ``input_tokens``
        counts all the prompt, of which ``cached`` were read from the provider's prompt
        cache and ``written`` written to it (``written_1h`` of them for an hour), each at its
        own price where it has one; the prompt's size picks the prices (context_prices), in
        the service ``tier`` the provider billed (tier_prices); ``searches`` web searches at
        search_cost; ``audio_in`` of the prompt's uncached tokens and ``audio_out`` of the
        output's are audio, at audio_costs."""
        cached = min(max(cached, 0), input_tokens)
        written = min(max(written, 0), input_tokens - cached)
        written_1h = min(max(written_1h, 0), written)
        inp, out, read, write, hour = self.prices(input_tokens, tier)
        read = inp if read is None else read
        write = inp if write is None else write
        hour = write if hour is None else hour
        total = (
            (input_tokens - cached - written) * inp
            + cached * read
            + (written - written_1h) * write
            + written_1h * hour
            + output_tokens * out
        )
        if searches > 0 and self.search_cost:
            total += (1 if self.search_per_prompt else searches) * self.search_cost
        if (audio_in > 0 or audio_out > 0) and self.audio_costs:
            a_in, a_out = self.audio_costs.get(tier) or self.audio_costs.get("") or (None, None)
            if a_in is not None and audio_in > 0:
                total += min(audio_in, input_tokens - cached - written) * (a_in - inp)
            if a_out is not None and audio_out > 0:
                total += min(audio_out, output_tokens) * (a_out - out)
        return total

    def reservation(
        self,
        prompt_tokens: int,
        output_tokens: int,
        tier: str = "",
        searches: int = 0,
        audio_out: bool = False,
    ) -> float:
        """The most a request of ``prompt_tokens`` and up to ``output_tokens`` can cost here
        (every prompt token at the dearest input price, as a cache write may cost more than
        plain input; at the standard tier's prices or the requested ``tier``'s, whichever
        are dearer), with up to ``searches`` web searches, every output token at the audio
        price if it asks for ``audio_out``: what a spend reservation holds."""
        audio = (self.audio_costs.get(tier) or self.audio_costs.get("")) if audio_out else None
        audio_price = audio[1] if audio and audio[1] is not None else 0.0

        def most(prices):
            inp, out, _read, write, hour = prices
            out = max(out, audio_price)
            return prompt_tokens * max(inp, write or 0.0, hour or 0.0) + output_tokens * out

        standard = most(self.prices(prompt_tokens))
        held = max(standard, most(self.prices(prompt_tokens, tier))) if tier else standard
        if searches > 0 and self.search_cost:
            held += (1 if self.search_per_prompt else searches) * self.search_cost
        return held


@dataclass(frozen=True, slots=True)
class RoutingPolicyInfo:
    name: str
    strategy: str
    models: tuple
    weights: dict = field(default_factory=dict)
    smart: SmartPolicy | None = None  # with strategy "smart": its tiers are ``models``


@dataclass(frozen=True, slots=True)
class Block:
    """A spent hard budget or tier allowance: requests in its scope get 429 until it lifts."""

    reason: str  # the error message the client sees
    until: float  # epoch seconds when the period ends (the Retry-After is counted to it)


@dataclass(frozen=True, slots=True)
class OrgInfo:
    id: int
    slug: str
    tier: str = "free"
    allowed_models: frozenset = frozenset()
    denied_models: frozenset = frozenset()
    allowed_providers: frozenset = frozenset()
    denied_providers: frozenset = frozenset()
    allowed_regions: frozenset = frozenset()
    enabled_providers: frozenset = frozenset()
    spend_cap: float | None = None
    spent_this_month: float = 0.0
    # The month (core.months.month_key) spent_this_month is of; "": the current one. In a
    # month's first minute the snapshot may still hold last month's figure.
    spent_month: str = ""
    default_max_tokens: int = 1024
    strategy: str = "failover"
    fallback_models: tuple = ()
    rpm: int | None = None
    tpm: int | None = None
    key_rpm: int | None = None  # the org's default (and ceiling) for its keys
    key_tpm: int | None = None
    tier_key_rpm: int | None = None  # the tier's ceiling for every key (orgs.TierLimit)
    timeout_s: float = 120.0
    # Hard budgets and tier allowances that are spent: "org" | "team:<id>" | "key:<id>" -> Block
    blocked: dict = field(default_factory=dict)
    deployments: dict = field(default_factory=dict)  # public model name -> tuple[DeploymentInfo]
    routing_policies: dict = field(default_factory=dict)  # name -> RoutingPolicyInfo
    # The org's default smart routing, for bn- keys that ask for the model ``auto_model``.
    smart: SmartPolicy | None = None
    auto_model: str = DEFAULT_ALIAS
    # Origins whose browser pages may call /v1 with this org's keys ("*": any); lower-case,
    # scheme://host[:port] (docs/gateway.md, CORS).
    cors_origins: frozenset = frozenset()
    # Keys served only by the org's VPC agents: the shared gateway refuses them (403
    # vpc_only, keys_check.refuse_outside_agent). An older control plane's document lacks
    # it: served everywhere, as before.
    vpc_only: bool = False

    def model_allowed(self, model: str) -> bool:
        if model in self.denied_models:
            return False
        return not self.allowed_models or model in self.allowed_models

    def provider_allowed(self, dep: DeploymentInfo) -> bool:
        names = {dep.provider, dep.kind}
        if names & self.denied_providers:
            return False
        if self.allowed_providers and not names & self.allowed_providers:
            return False
        if self.enabled_providers and not names & self.enabled_providers:
            return False
        return not self.allowed_regions or dep.region in self.allowed_regions


_GONE = object()  # a key removed by the overlay


class KeyTable(Mapping):
    """Key hash -> KeyInfo: a large base dict shared between snapshots plus a small overlay
    of the keys changed since (a removed key maps to ``_GONE``). A delta copies only the overlay, so applying
    one costs the size of the changes, not of the table (copying a 100k-key dict holds the
    GIL, and so the event loop, for milliseconds). When the overlay outgrows
    ``max(COMPACT_MIN, len(base) // COMPACT_RATIO)`` the next apply folds it into a new
    base: one full copy per that many changed keys."""

    __slots__ = ("_base", "_over", "_len")
    COMPACT_MIN = 1024
    COMPACT_RATIO = 32

    def __init__(
        self, base: dict | None = None, over: dict | None = None, length: int | None = None
    ):
        self._base = base if base is not None else {}
        self._over = over or {}
        if length is None:
            length = len(self._base) + sum(
                (v is not _GONE) - (h in self._base) for h, v in self._over.items()
            )
        self._len = length

    def get(self, h, default=None):
        over = self._over
        if over:
            found = over.get(h, None)
            if found is not None:
                return default if found is _GONE else found
        return self._base.get(h, default)

    def __getitem__(self, h):
        found = self.get(h, _GONE)
        if found is _GONE:
            raise KeyError(h)
        return found

    def __contains__(self, h):
        return self.get(h, _GONE) is not _GONE

    def __len__(self):
        return self._len

    def items(self):
        return self._base.items() if not self._over else super().items()

    def values(self):
        return self._base.values() if not self._over else super().values()

    def __iter__(self):
        over = self._over
        for h in self._base:
            if h not in over:
                yield h
        for h, v in over.items():
            if v is not _GONE:
                yield h

    def shares_base(self, other) -> bool:
        """Whether ``other`` is a KeyTable on the same base dict (no compaction between)."""
        return isinstance(other, KeyTable) and other._base is self._base

    def changed(self, sets: dict, removed) -> "KeyTable":
        """A new table with ``sets`` (hash -> KeyInfo) put and the ``removed`` hashes gone;
        this one is left as it is."""
        base, over, length = self._base, dict(self._over), self._len

        def present(h) -> bool:
            v = over.get(h)
            return h in base if v is None else v is not _GONE

        for h in removed:
            if present(h):
                length -= 1
                over[h] = _GONE
        for h, key in sets.items():
            if not present(h):
                length += 1
            over[h] = key
        if len(over) > max(self.COMPACT_MIN, len(base) // self.COMPACT_RATIO):
            base = dict(base)
            for h, v in over.items():
                if v is _GONE:
                    base.pop(h, None)
                else:
                    base[h] = v
            return type(self)(base, None, len(base))
        return type(self)(base, over, length)


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    keys: Mapping  # key hash -> KeyInfo (a KeyTable; a plain dict is wrapped)
    orgs: dict  # org id -> OrgInfo
    hash_secret: bytes = b""
    built_at: float = 0.0
    # org id -> tuple of its keys' hashes: what a delta that reloads an org's keys drops.
    # Derived from `keys` (keys_by_org below) when not given.
    key_hashes: dict | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.keys, KeyTable):
            object.__setattr__(self, "keys", KeyTable(self.keys))
        if self.key_hashes is None:
            object.__setattr__(self, "key_hashes", keys_by_org(self.keys))


def keys_by_org(keys: dict) -> dict:
    out: dict = {}
    for h, k in keys.items():
        out.setdefault(k.org_id, []).append(h)
    return {org_id: tuple(hashes) for org_id, hashes in out.items()}


@dataclass(frozen=True, slots=True)
class Delta:
    """What changed between two config versions (gateway.snapshot_builder.build_delta):
    applied to the snapshot of version ``since`` it gives the snapshot of ``until``.

    - ``orgs``: org id -> its new OrgInfo, or None (gone);
    - ``key_orgs``: orgs whose keys are all replaced by theirs in ``keys`` (and a gone org's);
    - ``key_ids``: (org id, key id) of single keys replaced by theirs in ``keys`` (none there: gone);
    - ``keys``: key hash -> KeyInfo, every key of ``key_orgs`` and ``key_ids`` that exists;
    - ``dropped``: hashes of secrets that single keys of ``key_ids`` no longer have (a
      rotation's replaced secret, its grace over or none given): removed. They are in
      ``keys`` too, expired, for a reader of an earlier release that lacks this field.
    """

    since: int
    until: int
    orgs: dict = field(default_factory=dict)
    keys: dict = field(default_factory=dict)
    key_orgs: frozenset = frozenset()
    key_ids: frozenset = frozenset()
    dropped: frozenset = frozenset()


def apply_delta(snap: Snapshot, delta: Delta, built_at: float = 0.0) -> Snapshot:
    """A new snapshot: ``snap`` with the delta's entries replaced. Copies the orgs dict and
    the key table's overlay (KeyTable), and touches only the changed orgs' keys; ``snap``
    itself is left as it is, so readers keep a whole snapshot until the new one is
    published."""
    if delta.since != snap.version:
        raise ValueError(f"delta from version {delta.since} applied to version {snap.version}")
    keys, orgs, index = snap.keys, dict(snap.orgs), dict(snap.key_hashes)
    gone = {i for i, o in delta.orgs.items() if o is None}
    wholesale = set(delta.key_orgs) | gone
    dropped = delta.dropped
    arriving: dict = {}  # org id -> hashes of its keys in the delta
    for h, key in delta.keys.items():
        if key.org_id not in gone and h not in dropped:
            arriving.setdefault(key.org_id, []).append(h)
    # A single key still there is found by its hash (a key's hash never changes); only a
    # key that is gone is looked for among its org's keys.
    found = {(k.org_id, k.id) for k in delta.keys.values()}
    missing: dict = {}
    for org_id, key_id in delta.key_ids:
        if (org_id, key_id) not in found and org_id not in wholesale:
            missing.setdefault(org_id, set()).add(key_id)
    removed: list = []
    sets: dict = {}
    for org_id in wholesale | missing.keys() | arriving.keys():
        old = index.get(org_id, ())
        incoming = arriving.get(org_id, ())
        if org_id in wholesale or org_id in missing:
            ids = missing.get(org_id, ())
            kept = []
            for h in old:
                if org_id in wholesale or keys[h].id in ids:
                    removed.append(h)
                else:
                    kept.append(h)
            old = tuple(kept)
            present = set(old)
            new = [h for h in incoming if h not in present]
        else:  # a hash in the table is this org's (a key never changes org): no set of
            new = [h for h in incoming if h not in keys]  # the org's hashes to build
        for h in incoming:
            sets[h] = delta.keys[h]
        hashes = old + tuple(new) if new else old
        if hashes:
            index[org_id] = hashes
        else:
            index.pop(org_id, None)
    for h in dropped:  # a replaced secret: found by its hash, like a key still there
        old_key = keys.get(h)
        if old_key is None or old_key.org_id in wholesale:
            continue
        removed.append(h)
        hashes = index.get(old_key.org_id, ())
        with contextlib.suppress(ValueError):
            at = hashes.index(h)
            hashes = hashes[:at] + hashes[at + 1 :]
            if hashes:
                index[old_key.org_id] = hashes
            else:
                index.pop(old_key.org_id, None)
    keys = keys.changed(sets, [h for h in removed if h not in sets])
    for org_id, org in delta.orgs.items():
        if org is None:
            orgs.pop(org_id, None)
        else:
            orgs[org_id] = org
    return Snapshot(
        version=delta.until,
        keys=keys,
        orgs=orgs,
        hash_secret=snap.hash_secret,
        built_at=built_at,
        key_hashes=index,
    )


def _frozen(value):
    return frozenset(value or ())


def _plain(value):
    return sorted(value) if isinstance(value, frozenset) else value


def key_to_dict(key: KeyInfo) -> dict:
    return {k: _plain(v) for k, v in asdict(key).items()}


@cache
def _field_names(cls) -> frozenset:
    return frozenset(f.name for f in dataclass_fields(cls))


def _known(cls, d: dict) -> dict:
    """The entries of ``d`` that ``cls`` has fields for: a control plane newer than this
    agent may send fields the agent does not know yet, and they are ignored, not a crash."""
    names = _field_names(cls)
    return {k: v for k, v in d.items() if k in names}


def key_from_dict(k: dict) -> KeyInfo:
    return KeyInfo(
        **_known(
            KeyInfo,
            {
                **k,
                "allowed_models": _frozen(k["allowed_models"]),
                "allowed_providers": _frozen(k["allowed_providers"]),
            },
        )
    )


def _policy_to_dict(p: RoutingPolicyInfo) -> dict:
    out = asdict(p)
    out["smart"] = policy_to_dict(p.smart) if p.smart else None
    return out


def org_to_dict(o: OrgInfo, include_credentials: bool = False) -> dict:
    def dep(d: DeploymentInfo):
        out = asdict(d)
        if not include_credentials:
            out["credentials"] = {}
        return out

    out = {k: _plain(v) for k, v in asdict(o).items()}
    out["deployments"] = {m: [dep(d) for d in deps] for m, deps in o.deployments.items()}
    out["routing_policies"] = {n: _policy_to_dict(p) for n, p in o.routing_policies.items()}
    out["smart"] = policy_to_dict(o.smart) if o.smart else None
    out["fallback_models"] = list(o.fallback_models)
    return out


def _deployment_fields(d: dict) -> dict:
    fields = _known(DeploymentInfo, d)
    if "context_prices" in fields:  # JSON's lists back to the builder's tuples
        fields["context_prices"] = tuple(tuple(step) for step in fields["context_prices"])
    if isinstance(fields.get("audio_costs"), dict):
        fields["audio_costs"] = {t: tuple(c) for t, c in fields["audio_costs"].items()}
    if isinstance(fields.get("tier_prices"), dict):
        fields["tier_prices"] = {
            tier: tuple(tuple(step) for step in steps)
            for tier, steps in fields["tier_prices"].items()
        }
    return fields


def org_from_dict(o: dict) -> OrgInfo:
    deployments = {
        m: tuple(DeploymentInfo(**_deployment_fields(d)) for d in deps)
        for m, deps in o["deployments"].items()
    }
    policies = {
        n: RoutingPolicyInfo(
            **_known(
                RoutingPolicyInfo,
                {**p, "models": tuple(p["models"]), "smart": policy_from_dict(p.get("smart"))},
            )
        )
        for n, p in o["routing_policies"].items()
    }
    fields = {
        k: v for k, v in _known(OrgInfo, o).items() if k not in ("deployments", "routing_policies")
    }
    fields["smart"] = policy_from_dict(o.get("smart"))
    fields["blocked"] = {
        scope: Block(**_known(Block, b)) for scope, b in (o.get("blocked") or {}).items()
    }
    for name in (
        "allowed_models",
        "denied_models",
        "allowed_providers",
        "denied_providers",
        "allowed_regions",
        "enabled_providers",
        "cors_origins",
    ):
        fields[name] = _frozen(fields.get(name))
    fields["fallback_models"] = tuple(fields.get("fallback_models") or ())
    return OrgInfo(**fields, deployments=deployments, routing_policies=policies)


def snapshot_to_dict(snap: Snapshot, include_credentials: bool = False) -> dict:
    """JSON-ready form (for the agent's config pull and its disk cache)."""
    return {
        "version": snap.version,
        "built_at": snap.built_at,
        "keys": {h: key_to_dict(key) for h, key in snap.keys.items()},
        "orgs": {str(i): org_to_dict(o, include_credentials) for i, o in snap.orgs.items()},
    }


def snapshot_from_dict(data: dict, hash_secret: bytes) -> Snapshot:
    return Snapshot(
        version=data["version"],
        keys={h: key_from_dict(k) for h, k in data["keys"].items()},
        orgs={int(i): org_from_dict(o) for i, o in data["orgs"].items()},
        hash_secret=hash_secret,
        built_at=data.get("built_at", 0.0),
    )


def delta_to_dict(delta: Delta, include_credentials: bool = False) -> dict:
    """JSON-ready form of a delta: the document a gateway (or an agent's
    ``GET /api/agent/config?since=``) pulls; credentials left out unless asked for."""
    return {
        "from": delta.since,
        "to": delta.until,
        "orgs": {
            str(i): None if o is None else org_to_dict(o, include_credentials)
            for i, o in delta.orgs.items()
        },
        "keys": {h: key_to_dict(k) for h, k in delta.keys.items()},
        "key_orgs": sorted(delta.key_orgs),
        "key_ids": sorted([list(pair) for pair in delta.key_ids]),
        "dropped": sorted(delta.dropped),
    }


def delta_from_dict(data: dict) -> Delta:
    return Delta(
        since=data["from"],
        until=data["to"],
        orgs={int(i): None if o is None else org_from_dict(o) for i, o in data["orgs"].items()},
        keys={h: key_from_dict(k) for h, k in data["keys"].items()},
        key_orgs=frozenset(data["key_orgs"]),
        key_ids=frozenset((o, k) for o, k in data["key_ids"]),
        dropped=frozenset(data.get("dropped", ())),  # absent from an earlier release's
    )
