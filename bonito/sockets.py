"""Sending to WebSocket groups from synchronous code (services, the usage writer).

Best effort: a dead channel layer never fails the write that triggered the message."""

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer

log = logging.getLogger("bonito.sockets")

# The loop that serves this process's sockets; an in-memory layer only works from it.
_socket_loop: asyncio.AbstractEventLoop | None = None


def remember_socket_loop() -> None:
    """Called by a consumer when it connects, from the loop that serves it."""
    global _socket_loop
    _socket_loop = asyncio.get_running_loop()


def group_send(messages: dict[str, dict]) -> None:
    """Send each ``{group: message}``; never raises."""
    layer = get_channel_layer()
    if layer is None or not messages:
        return
    try:
        for group, message in messages.items():
            if isinstance(layer, InMemoryChannelLayer):
                if _socket_loop is None or _socket_loop.is_closed():
                    return  # nobody has opened a socket in this process
                asyncio.run_coroutine_threadsafe(layer.group_send(group, message), _socket_loop)
            else:
                async_to_sync(layer.group_send)(group, message)
    except Exception as exc:
        log.warning("channel layer send failed (%s)", type(exc).__name__)
