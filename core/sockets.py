"""Sending to WebSocket groups from synchronous code (services, the usage writer).

Best effort: a dead channel layer never fails the write that triggered the message."""

import asyncio
import logging
import os
import threading
import time

from channels.layers import InMemoryChannelLayer, get_channel_layer

log = logging.getLogger("bonito.sockets")

# A channel layer that stops answering (Redis paused or overloaded) must not hold up the
# caller: the usage writer publishes after every batch it stores.
SEND_TIMEOUT_S = 1.0
# One warning per this many seconds while the layer keeps failing, not one per batch.
WARN_EVERY_S = 60.0
_last_warning = 0.0

# The loop that serves this process's sockets; an in-memory layer only works from it.
_socket_loop: asyncio.AbstractEventLoop | None = None


def remember_socket_loop() -> None:
    """Called by a consumer when it connects, from the loop that serves it."""
    global _socket_loop
    _socket_loop = asyncio.get_running_loop()


# Sends to a Redis channel layer run on one event loop per process, in a thread of its own,
# for the life of the process: the layer keeps its connections per loop, so a new loop
# per send (async_to_sync) paid a new Redis connection (and redis-py's version lookup in
# the package metadata) on every usage batch — measured as most of a gateway worker's CPU
# at 200 req/s (docs/benchmarks.md), taken from the thread the event loop shares a GIL with.
_sender: tuple[int, asyncio.AbstractEventLoop] | None = None
_sender_lock = threading.Lock()


def _sender_loop() -> asyncio.AbstractEventLoop:
    global _sender
    with _sender_lock:
        if _sender is None or _sender[0] != os.getpid() or _sender[1].is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="bonito-sockets", daemon=True).start()
            _sender = (os.getpid(), loop)  # a forked child makes its own
        return _sender[1]


async def _send_all(layer, messages: dict[str, dict]) -> None:
    async with asyncio.timeout(SEND_TIMEOUT_S):
        for group, message in messages.items():
            await layer.group_send(group, message)


def group_send(messages: dict[str, dict]) -> None:
    """Send each ``{group: message}`` within SEND_TIMEOUT_S; never raises."""
    global _last_warning
    layer = get_channel_layer()
    if layer is None or not messages:
        return
    try:
        if isinstance(layer, InMemoryChannelLayer):
            if _socket_loop is None or _socket_loop.is_closed():
                return  # nobody has opened a socket in this process
            asyncio.run_coroutine_threadsafe(_send_all(layer, messages), _socket_loop)
        else:
            asyncio.run_coroutine_threadsafe(_send_all(layer, messages), _sender_loop()).result(
                SEND_TIMEOUT_S + 1.0
            )
    except Exception as exc:
        if time.monotonic() - _last_warning >= WARN_EVERY_S:
            _last_warning = time.monotonic()
            log.warning(
                "channel layer send failed (%s); live updates are skipped", type(exc).__name__
            )
