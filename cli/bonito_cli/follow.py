"""`bonito logs --follow`: new requests pushed by the server's live tail (a WebSocket, the
token in the handshake's Authorization header, never in the URL), or polled over REST when
the server has no live tail (an older Bonito, no channel layer)."""

import json
import sys
import time
from datetime import UTC, datetime

import click

from .client import AUTH, CliError

# Close codes of the server's tail (billing/consumers.py): not a member / access lost.
NOT_FOUND, FORBIDDEN = 4404, 4403


class NoLiveTail(Exception):
    """The server offers no live tail to this client; the reason is the message."""


def socket_url(base: str, slug: str) -> str:
    scheme, rest = base.split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest.rstrip('/')}/ws/o/{slug}/logs/"


def open_tail(base: str, token: str, slug: str, user_agent: str):
    """The open socket, or NoLiveTail saying why not."""
    try:
        from websockets.exceptions import InvalidHandshake, InvalidStatus
        from websockets.sync.client import connect
    except ImportError:  # pragma: no cover - a dependency of the package
        raise NoLiveTail("the websockets package is not installed") from None
    try:
        return connect(
            socket_url(base, slug),
            additional_headers={"Authorization": f"Bearer {token}"},
            user_agent_header=user_agent,
            open_timeout=10,
            proxy=None,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        raise NoLiveTail(f"the server refused the live tail (HTTP {status})") from None
    except (InvalidHandshake, OSError, TimeoutError) as exc:
        raise NoLiveTail(f"no live tail ({type(exc).__name__}: {exc})") from None


def _iso(value):
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")
    return value


# A row of `logs --follow`, from the live tail or from REST alike: the live tail's fields
# (billing/live.py FIELDS, with the key's and team's names), cost a number.
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
    "key_name",
    "team_id",
    "team_name",
    "source",  # shared_gateway or vpc_agent
    "routing_policy",  # a smart-routed row's policy ("" the org default's)
    "route_tier",  # and its tier ("" when not smart-routed)
)
# The REST API's names for them (billing/rest.py UsageRecordSerializer).
REST_NAMES = {"key_id": "key", "team_id": "team"}


def _number(value):
    """Cost as a JSON number: REST sends the Decimal's exact text ("0.00012300")."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def live_row(row: dict) -> dict:
    """``row`` (the live tail's or the REST API's) in the one shape --follow prints."""
    out = {f: row[f] if f in row else row.get(REST_NAMES.get(f, f)) for f in FIELDS}
    out["created_at"] = _iso(out["created_at"])
    out["cost"] = _number(out["cost"])
    return out


def row_id(row: dict) -> str:
    """A usage row's id as both sources can compare it (with or without the uuid's dashes)."""
    return str(row.get("id", "")).replace("-", "").lower()


def matches(row: dict, filters: dict) -> bool:
    """The REST logs filters, applied to a pushed row (the server pushes the org's rows)."""
    model = filters.get("model")
    if model and model not in (row.get("model_requested"), row.get("model_used")):
        return False
    if filters.get("provider") and row.get("provider") != filters["provider"]:
        return False
    if filters.get("status") and row.get("status") != filters["status"]:
        return False
    for name in ("key", "team"):
        wanted = filters.get(name)
        if wanted is not None and str(row.get(f"{name}_id")) != str(wanted):
            return False
    # --policy, as the name the rows record ("" for the org default): smart-routed rows only
    policy = filters.get("policy_name")
    return policy is None or (row.get("routing_policy") == policy and bool(row.get("route_tier")))


def tail(socket, filters: dict, seen: set, emit) -> None:
    """Print pushed rows until the socket closes (returns) or Ctrl-C (KeyboardInterrupt)."""
    from websockets.exceptions import ConnectionClosed

    try:
        while True:
            try:
                message = socket.recv(timeout=1.0)  # wakes up for Ctrl-C
            except TimeoutError:
                continue
            try:
                rows = json.loads(message).get("rows", [])
            except (ValueError, AttributeError):
                continue
            for row in rows:
                if row_id(row) in seen or not matches(row, filters):
                    continue
                seen.add(row_id(row))
                emit(live_row(row))
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else None
        if code in (NOT_FOUND, FORBIDDEN):
            raise CliError(
                "The server closed the live tail: this token may no longer read the org's logs.",
                AUTH,
            ) from None
        note(f"the live tail closed ({code or 'connection lost'}); polling from here on.")


def note(text: str) -> None:
    click.echo(f"bonito: {text}", err=True)
    sys.stderr.flush()


def poll(client, params: dict, seen: set, since, interval: float, emit) -> None:
    """The REST fallback: the logs endpoint every ``interval`` seconds, from ``since``."""
    while True:
        time.sleep(interval)
        fresh = client.list(
            "/api/gateway/logs",
            limit=500,
            **{
                **params,
                **({"since": since, "range": None} if since else {}),
                "ordering": "created_at",
            },
        )
        for row in fresh:
            if row_id(row) not in seen:
                seen.add(row_id(row))
                emit(live_row(row))
                since = row["created_at"]
