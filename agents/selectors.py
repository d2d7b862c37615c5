"""Reads of the agents app: the config document an agent pulls, its keys, and the
status the dashboard shows."""

import base64
import hashlib
import json
from dataclasses import asdict

from django.db import transaction
from django.db.models import Max, Min
from django.utils import timezone

from core.config_version import current_version
from core.months import month_key
from gateway.dataplane.snapshot import Snapshot, delta_to_dict, key_to_dict, snapshot_to_dict
from gateway.models import ApiKey, key_hash_secret
from gateway.snapshot_builder import build_delta, load_keys, load_orgs, org_facts

from .models import Agent, status_for
from .services import rotation_token_for

SCHEMA = 1


def _facts(org_id: int) -> dict:
    facts = org_facts(org_id)
    return {
        "spent_this_month": float(facts.get("spent_this_month", 0.0)),
        "month": month_key(),  # the month that spend is of
        "blocked": {scope: asdict(b) for scope, b in facts.get("blocked", {}).items()},
    }


def config_etag(org_id: int, version: int, facts: dict, rotate_to: str | None) -> str:
    state = hashlib.sha256((rotate_to or "").encode()).hexdigest() if rotate_to else ""
    text = json.dumps([org_id, version, facts, state], sort_keys=True)
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:40] + '"'


def _since(value) -> int | None:
    # ASCII digits only: "²" and "٥" are str.isdigit() too.
    if value is None or not (str(value).isascii() and str(value).isdigit()) or len(str(value)) > 18:
        return None
    return int(value)


def config_document(token, since_raw, if_none_match: str | None, suggestions: dict):
    """(etag, document), or (etag, None) when the agent already holds this state (304).

    A delta when ``since`` is a version the change log can bring forward; the full
    document otherwise. Only the token's org, and never a credential."""
    org = token.org
    with transaction.atomic():
        version = current_version()
        facts = _facts(org.id)
        rotate_to = rotation_token_for(token)
        etag = config_etag(org.id, version, facts, rotate_to)
        if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
            return etag, None
        since = _since(since_raw)
        delta = (
            build_delta(since, version, org_id=org.id)
            if since is not None and since <= version
            else None
        )
        doc = {
            "schema": SCHEMA,
            "org": {"id": org.id, "slug": org.slug},
            "version": version,
            "full": delta is None,
        }
        if delta is None:
            snap = Snapshot(
                version=version,
                keys=load_keys(ApiKey.objects.filter(org=org)),
                orgs=load_orgs([org.id]),
            )
            doc["snapshot"] = snapshot_to_dict(snap)
        else:
            doc["delta"] = delta_to_dict(delta)
    doc["facts"] = facts
    doc["hash_secret"] = base64.b64encode(key_hash_secret()).decode()
    doc.update(suggestions)
    doc["token"] = {"rotate_to": rotate_to} if rotate_to else None
    return etag, doc


def keys_document(org) -> dict:
    with transaction.atomic():
        version = current_version()
        keys = load_keys(ApiKey.objects.active().filter(org=org))
    return {"version": version, "keys": {h: key_to_dict(k) for h, k in keys.items()}}


def org_agent_status(org, now=None) -> str:
    """The org's indicator colour, from its newest heartbeat."""
    last = Agent.objects.for_org(org).aggregate(last=Max("last_heartbeat_at"))["last"]
    return status_for(last, now)


def org_config_version(org) -> int:
    """The newest config version that changed anything this org's agents serve: an agent
    at it or later is in sync (versions also move for other orgs' changes)."""
    from django.db.models import Q

    from core.config_version import ALL, TIER
    from core.models import ConfigChange

    touched = ConfigChange.objects.filter(
        Q(org_id=org.id) | Q(kind=ALL) | Q(kind=TIER, ref=org.tier)
    ).aggregate(v=Max("version"))["v"]
    if touched is not None:
        return touched
    # Nothing of this org's in the log: only what the log no longer holds may be missing.
    oldest = ConfigChange.objects.aggregate(v=Min("version"))["v"]
    return max(0, (oldest or 1) - 1)


def org_agents(org, now=None) -> list[dict]:
    """Each agent of the org with its status and whether its config is current."""
    now = now or timezone.now()
    version = org_config_version(org)
    out = []
    for agent in Agent.objects.for_org(org).order_by("-last_heartbeat_at", "hostname"):
        out.append(
            {
                "agent": agent,
                "status": status_for(agent.last_heartbeat_at, now),
                "in_sync": agent.config_version is not None and agent.config_version >= version,
            }
        )
    return out
