"""The live log tail: new usage rows pushed to dashboard sockets over the channel layer.

Rows are published by the usage writer after they are stored, never from the request
path. Publishing is best effort: a dead channel layer never affects storing usage.

A socket keeps receiving rows only while its user may still read the org's logs: the
consumer re-checks (`tail_allowed`) whenever the org's membership version moved
(orgs.access), and at least every `RECHECK_S`, so nothing is queried per pushed row."""

from importlib import import_module

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY
from django.utils.crypto import constant_time_compare

from core.sockets import group_send
from orgs.models import Membership, Role

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
)
# The role the Logs page needs (gateway.views.logs is an org_view for viewers and up).
TAIL_ROLE = Role.VIEWER
# Changes the version does not announce (a session that expired, a change made by another
# process on a per-process cache) are still noticed within this many seconds.
RECHECK_S = 60.0


def group_name(org_id) -> str:
    return f"usage-{org_id}"


def publish_usage(records: list[dict]) -> None:
    by_org: dict = {}
    for record in records:
        by_org.setdefault(record["org_id"], []).append({k: record.get(k) for k in FIELDS})
    group_send(
        {
            group_name(org_id): {"type": "usage.rows", "rows": rows}
            for org_id, rows in by_org.items()
        }
    )


def tail_allowed(*, org_id: int, user_id: int, session_key: str | None) -> bool:
    """Whether this user, signed in with this session, may still read the org's logs."""
    membership = (
        Membership.objects.select_related("user").filter(org_id=org_id, user_id=user_id).first()
    )
    if membership is None or not membership.user.is_active or not membership.has_role(TAIL_ROLE):
        return False
    if not session_key:
        return False
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    if session.get(SESSION_KEY) != str(user_id):
        return False  # signed out, expired, or another user's session now
    return constant_time_compare(
        session.get(HASH_SESSION_KEY, ""), membership.user.get_session_auth_hash()
    )
