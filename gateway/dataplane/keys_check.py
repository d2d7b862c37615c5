"""Key lookup and scope checks against the snapshot. A key narrows the org policy, never widens it."""

import hmac

from core import keys

from .snapshot import DeploymentInfo, KeyInfo, OrgInfo, Snapshot


def lookup(raw: str, snap: Snapshot) -> KeyInfo | None:
    if not keys.well_formed(raw):
        return None  # garbage never costs an HMAC
    digest = keys.digest(raw, snap.hash_secret)
    found = snap.keys.get(digest)
    if found is None or not hmac.compare_digest(found.hash, digest):
        return None
    return found


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
    org's, that its scopes and the org's policy allow and that have a permitted deployment."""
    if key.routing_policy:
        policy = org.routing_policies.get(key.routing_policy)
        names = list(policy.models) if policy else []
    else:
        names = list(org.deployments)
    return [
        m
        for m in names
        if model_permitted(key, org, m)
        and any(deployment_permitted(key, org, d) for d in org.deployments.get(m, ()))
    ]
