"""A per-org membership version, so open sockets notice lost access without a query each push.

Every change to who may read an org (a membership added, re-roled or removed, a user
deactivated or signed out, the org deleted) calls `members_changed` inside its transaction;
after commit the org's version in the cache moves and its sockets get a nudge over the
channel layer. A consumer compares the version before each push and re-reads the
membership only when it moved (or the key is missing: a cache that lost it fails safe)."""

import uuid

from django.core.cache import cache
from django.db import transaction

from core.sockets import group_send


def _key(org_id) -> str:
    return f"orgs:members-version:{org_id}"


def members_group(org_id) -> str:
    return f"members-{org_id}"


def members_changed(org_ids) -> None:
    """Call inside the transaction that changes membership; acts after it commits."""
    ids = sorted({int(i) for i in org_ids})
    if ids:
        transaction.on_commit(lambda: _bump(ids))


def _bump(org_ids: list[int]) -> None:
    for org_id in org_ids:
        cache.set(_key(org_id), uuid.uuid4().hex, timeout=None)
    group_send({members_group(org_id): {"type": "members.changed"} for org_id in org_ids})


async def amembers_version(org_id) -> str:
    version = await cache.aget(_key(org_id))
    if version is None:
        await cache.aadd(_key(org_id), uuid.uuid4().hex, timeout=None)
        version = await cache.aget(_key(org_id))
    return version
