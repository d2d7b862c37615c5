"""The live log tail: new usage rows pushed to dashboard sockets over the channel layer.

Rows are published by the usage writer after they are stored, never from the request
path. Publishing is best effort: a dead channel layer never affects storing usage.

A socket keeps receiving rows only while its user may still read the org's logs: the
consumer re-checks (`tail_allowed`) whenever the org's membership version moved
(orgs.access), and at least every `RECHECK_S`, so nothing is queried per pushed row."""

import time
from importlib import import_module

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY
from django.utils.crypto import constant_time_compare

from core import keys
from core.sockets import group_send
from orgs.models import Membership, PersonalAccessToken, Role, hash_token

FIELDS = (
    "id",
    "created_at",
    "status",
    "http_status",
    "error_type",
    "model_requested",
    "model_used",
    "provider",
    "input_tokens",
    "output_tokens",
    "cost",
    "latency_ms",
    "request_id",
    "key_id",
    "team_id",
    "source",  # the Logs page's tail keeps to its filters (static/js/logs-live.js)
    "routing_policy",  # (the policy filter)
    "route_tier",
)
# The role the Logs page needs (gateway.views.logs is an org_view for viewers and up).
TAIL_ROLE = Role.VIEWER
# Changes the version does not announce (a session that expired, a change made by another
# process on a per-process cache) are still noticed within this many seconds.
RECHECK_S = 60.0


def group_name(org_id) -> str:
    return f"usage-{org_id}"


# Key and team names for the rows pushed to the tail (a reload of the page shows names too):
# looked up once per batch for the ids not seen in the last NAMES_TTL_S seconds.
NAMES_TTL_S = 60.0
_names: dict = {}  # (kind, id) -> (name, looked up at)


def _names_of(records: list[dict]) -> dict:
    from gateway.models import ApiKey
    from orgs.models import Team

    now = time.monotonic()
    wanted = {
        (kind, r[field])
        for r in records
        for kind, field in (("key", "key_id"), ("team", "team_id"))
        if r.get(field) is not None
    }
    stale = [w for w in wanted if now - _names.get(w, (None, -1e9))[1] > NAMES_TTL_S]
    for kind, model in (("key", ApiKey), ("team", Team)):
        ids = [i for k, i in stale if k == kind]
        if ids:
            found = dict(model.objects.filter(id__in=ids).values_list("id", "name"))
            for i in ids:
                _names[(kind, i)] = (found.get(i), now)
    if len(_names) > 100_000:
        _names.clear()
    return {w: _names.get(w, (None, 0))[0] for w in wanted}


def publish_usage(records: list[dict]) -> None:
    try:
        names = _names_of(records)
    except Exception:  # best effort, like the send: the rows go out with ids only
        names = {}
    by_org: dict = {}
    for record in records:
        row = {k: record.get(k) for k in FIELDS}
        row["key_name"] = names.get(("key", record.get("key_id")))
        row["team_name"] = names.get(("team", record.get("team_id")))
        by_org.setdefault(record["org_id"], []).append(row)
    group_send(
        {
            group_name(org_id): {"type": "usage.rows", "rows": rows}
            for org_id, rows in by_org.items()
        }
    )


def bearer_token(scope) -> str | None:
    """The token of the handshake's `Authorization: Bearer …` header, or None when it has
    none. Only the header: a token in the URL would land in access logs, so a query string
    is never read."""
    values = [v for k, v in scope.get("headers", []) if k.lower() == b"authorization"]
    if not values:
        return None
    header = values[0].decode("latin1").strip() if len(values) == 1 else ""
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


def _active_token(raw: str):
    if not keys.well_formed(raw, ("pat-",)):
        return None  # garbage costs no query
    return (
        PersonalAccessToken.objects.active()
        .select_related("org")
        .filter(token_hash=hash_token(raw))
        .first()
    )


def token_membership(raw: str, slug: str):
    """(membership, token id) when ``raw`` is an active personal access token of a member
    of the org ``slug`` (a token works in its own org only), else None."""
    token = _active_token(raw)
    if token is None or token.org.slug != slug:
        return None
    membership = Membership.objects.filter(org_id=token.org_id, user_id=token.user_id).first()
    return (membership, token.id) if membership is not None else None


def tail_allowed(
    *, org_id: int, user_id: int, session_key: str | None, token_id: int | None = None
) -> bool:
    """Whether this user, signed in with this session (or holding this personal access
    token), may still read the org's logs."""
    membership = (
        Membership.objects.select_related("user").filter(org_id=org_id, user_id=user_id).first()
    )
    if membership is None or not membership.user.is_active or not membership.has_role(TAIL_ROLE):
        return False
    if token_id is not None:
        return (
            PersonalAccessToken.objects.active()
            .filter(pk=token_id, org_id=org_id, user_id=user_id)
            .exists()
        )
    if not session_key:
        return False
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    if session.get(SESSION_KEY) != str(user_id):
        return False  # signed out, expired, or another user's session now
    return constant_time_compare(
        session.get(HASH_SESSION_KEY, ""), membership.user.get_session_auth_hash()
    )
