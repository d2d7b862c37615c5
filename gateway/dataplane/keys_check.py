"""Key lookup and scope checks against the snapshot. A key narrows the org policy, never widens it."""

import hmac

from core import keys

from .errors import GatewayError
from .snapshot import DeploymentInfo, KeyInfo, OrgInfo, Snapshot

AGENT_SOURCE = "vpc_agent"  # the Gateway.source of the data plane run as a VPC agent

VPC_ONLY = (
    "This organization serves its API keys only through its own VPC agent: send your "
    "requests to your agent's /v1 URL (the base URL your team deployed it at, such as "
    "http://<agent-host>:8000/v1), not to the shared gateway. Nothing was sent to a model. "
    "An org admin can change this in Settings → Deployment mode."
)


def lookup(raw: str, snap: Snapshot) -> KeyInfo | None:
    if not keys.well_formed(raw):
        return None  # garbage never costs an HMAC
    digest = keys.digest(raw, snap.hash_secret)
    found = snap.keys.get(digest)
    if found is None or not hmac.compare_digest(found.hash, digest):
        return None
    return found


def refuse_outside_agent(org: OrgInfo, source: str) -> None:
    """A VPC-only org's keys are served by its agents alone: anywhere else (the shared
    gateway) a request with one is refused before it goes anywhere, 403 ``vpc_only``."""
    if org.vpc_only and source != AGENT_SOURCE:
        raise GatewayError(403, VPC_ONLY, "permission_error", "vpc_only")


def model_permitted(key: KeyInfo, org: OrgInfo, model: str) -> bool:
    if not org.model_allowed(model):
        return False
    return not key.allowed_models or model in key.allowed_models


def deployment_permitted(key: KeyInfo, org: OrgInfo, dep: DeploymentInfo) -> bool:
    if not org.provider_allowed(dep):
        return False
    return not key.allowed_providers or bool({dep.provider, dep.kind} & key.allowed_providers)


def permitted_models(key: KeyInfo, org: OrgInfo) -> list[str]:
    """The models this key may call (what /v1/models lists): its routing policy's, or the
    org's, that its scopes and the org's policy allow and that have a permitted deployment;
    and for a bn- key, the org's smart routing alias while it reaches one of its tiers."""
    if key.routing_policy:
        policy = org.routing_policies.get(key.routing_policy)
        names = list(policy.models) if policy else []
    else:
        names = list(org.deployments)
    listed = [m for m in names if model_permitted(key, org, m) and _deployed(key, org, m)]
    if not key.routing_policy and org.smart is not None and org.auto_model not in listed:
        # As Gateway._smart_candidates reaches the tiers: a key scoped to the alias
        # (allowed_models: [auto]) through the org's policy alone, any other by its scopes.
        via_alias = org.auto_model in (key.allowed_models or ())
        if any(
            (org.model_allowed(t) if via_alias else model_permitted(key, org, t))
            and _deployed(key, org, t)
            for t in org.smart.tiers
        ):
            listed.append(org.auto_model)
    return listed


def _deployed(key: KeyInfo, org: OrgInfo, model: str) -> bool:
    return any(deployment_permitted(key, org, d) for d in org.deployments.get(model, ()))
