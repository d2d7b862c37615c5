"""The live log tail: new usage rows pushed to dashboard sockets over the channel layer.

Rows are published by the usage writer after they are stored, never from the request
path. Publishing is best effort: a dead channel layer never affects storing usage."""

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer

log = logging.getLogger("bonito.billing.live")
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

# The loop that serves this process's sockets; an in-memory layer only works from it.
_socket_loop: asyncio.AbstractEventLoop | None = None


def group_name(org_id) -> str:
    return f"usage-{org_id}"


def remember_socket_loop() -> None:
    global _socket_loop
    _socket_loop = asyncio.get_running_loop()


def publish_usage(records: list[dict]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    by_org: dict = {}
    for record in records:
        by_org.setdefault(record["org_id"], []).append({k: record.get(k) for k in FIELDS})
    try:
        for org_id, rows in by_org.items():
            message = {"type": "usage.rows", "rows": rows}
            if isinstance(layer, InMemoryChannelLayer):
                if _socket_loop is None or _socket_loop.is_closed():
                    return  # nobody has opened a socket in this process
                asyncio.run_coroutine_threadsafe(
                    layer.group_send(group_name(org_id), message), _socket_loop
                )
            else:
                async_to_sync(layer.group_send)(group_name(org_id), message)
    except Exception as exc:
        log.warning("live tail publish failed (%s); usage itself is stored", type(exc).__name__)
