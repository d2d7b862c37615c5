"""The immutable view of config the hot path reads: keys by hash, orgs, deployments."""

from dataclasses import asdict, dataclass, field


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
    weight: int = 1
    priority: int = 0
    settings: dict = field(default_factory=dict)
    credentials: dict = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.upstream_model}"

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """What a request to this deployment cost (USD): the one formula."""
        return input_tokens * self.input_cost + output_tokens * self.output_cost


@dataclass(frozen=True, slots=True)
class RoutingPolicyInfo:
    name: str
    strategy: str
    models: tuple
    weights: dict = field(default_factory=dict)


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


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    keys: dict  # key hash -> KeyInfo
    orgs: dict  # org id -> OrgInfo
    hash_secret: bytes = b""
    built_at: float = 0.0


def _frozen(value):
    return frozenset(value or ())


def snapshot_to_dict(snap: Snapshot, include_credentials: bool = False) -> dict:
    """JSON-ready form (for the agent's config pull and its disk cache)."""

    def dep(d: DeploymentInfo):
        out = asdict(d)
        if not include_credentials:
            out["credentials"] = {}
        return out

    def org(o: OrgInfo):
        out = {k: (sorted(v) if isinstance(v, frozenset) else v) for k, v in asdict(o).items()}
        out["deployments"] = {m: [dep(d) for d in deps] for m, deps in o.deployments.items()}
        out["routing_policies"] = {n: asdict(p) for n, p in o.routing_policies.items()}
        out["fallback_models"] = list(o.fallback_models)
        return out

    return {
        "version": snap.version,
        "built_at": snap.built_at,
        "keys": {
            h: {k: (sorted(v) if isinstance(v, frozenset) else v) for k, v in asdict(key).items()}
            for h, key in snap.keys.items()
        },
        "orgs": {str(i): org(o) for i, o in snap.orgs.items()},
    }


def snapshot_from_dict(data: dict, hash_secret: bytes) -> Snapshot:
    keys = {}
    for h, k in data["keys"].items():
        keys[h] = KeyInfo(
            **{
                **k,
                "allowed_models": _frozen(k["allowed_models"]),
                "allowed_providers": _frozen(k["allowed_providers"]),
            }
        )
    orgs = {}
    for i, o in data["orgs"].items():
        deployments = {
            m: tuple(DeploymentInfo(**d) for d in deps) for m, deps in o["deployments"].items()
        }
        policies = {
            n: RoutingPolicyInfo(**{**p, "models": tuple(p["models"])})
            for n, p in o["routing_policies"].items()
        }
        fields = {k: v for k, v in o.items() if k not in ("deployments", "routing_policies")}
        fields["blocked"] = {scope: Block(**b) for scope, b in (o.get("blocked") or {}).items()}
        for name in (
            "allowed_models",
            "denied_models",
            "allowed_providers",
            "denied_providers",
            "allowed_regions",
            "enabled_providers",
        ):
            fields[name] = _frozen(fields.get(name))
        fields["fallback_models"] = tuple(fields.get("fallback_models") or ())
        orgs[int(i)] = OrgInfo(**fields, deployments=deployments, routing_policies=policies)
    return Snapshot(
        version=data["version"],
        keys=keys,
        orgs=orgs,
        hash_secret=hash_secret,
        built_at=data.get("built_at", 0.0),
    )
