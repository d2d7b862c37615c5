"""A channel layer that stops answering never holds up the code that publishes to it (the
usage writer publishes after every batch it stores)."""

import threading

import pytest
from channels.layers import channel_layers

from core import sockets
from gateway.tests.fault.redis_server import RedisServer

pytestmark = pytest.mark.slow


@pytest.fixture
def paused_redis_layer(tmp_path, settings):
    server = RedisServer(tmp_path).start()
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [server.url]},
        }
    }
    channel_layers.backends.clear()
    yield server
    server.stop()
    channel_layers.backends.clear()


def _publish_in_thread() -> threading.Thread:
    done = threading.Event()

    def run():
        sockets.group_send({"usage-1": {"type": "usage.rows", "rows": []}})
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.done = done
    return thread


def test_a_paused_redis_layer_does_not_hold_up_the_publisher(paused_redis_layer):
    sockets.group_send({"usage-1": {"type": "usage.rows", "rows": []}})  # connected, answering
    paused_redis_layer.pause()
    thread = _publish_in_thread()
    # channels_redis alone waits 5 s per send (per usage batch); the bound is SEND_TIMEOUT_S.
    assert thread.done.wait(sockets.SEND_TIMEOUT_S + 2), "group_send is held up by a paused Redis"
    paused_redis_layer.resume()


def test_a_dead_redis_layer_is_skipped_quietly(paused_redis_layer, caplog):
    paused_redis_layer.kill()
    sockets._last_warning = 0.0
    for _ in range(3):
        thread = _publish_in_thread()
        assert thread.done.wait(sockets.SEND_TIMEOUT_S + 10)
    warnings = [r for r in caplog.records if r.name == "bonito.sockets"]
    assert len(warnings) == 1  # one warning per minute, not one per batch


def _connections_made(client) -> int:
    return client.info("stats")["total_connections_received"]


def test_publishing_reuses_one_connection_and_delivers(paused_redis_layer):
    """Each send used to run on a new event loop, so a new Redis connection per usage
    batch; now one loop per process keeps the layer's connections."""
    import asyncio

    layer = channel_layers["default"]

    async def join():
        channel = await layer.new_channel()
        await layer.group_add("usage-7", channel)
        return channel

    channel = asyncio.run(join())
    import redis

    sockets.group_send({"usage-7": {"type": "usage.rows", "rows": [{"id": 0}]}})
    watcher = redis.Redis.from_url(paused_redis_layer.url)
    before = _connections_made(watcher)
    for n in range(1, 51):
        thread = threading.Thread(
            target=sockets.group_send,
            args=({"usage-7": {"type": "usage.rows", "rows": [{"id": n}]}},),
        )
        thread.start()
        thread.join()
    assert _connections_made(watcher) <= before + 1

    async def drain():
        got = []
        while len(got) < 51:
            message = await asyncio.wait_for(layer.receive(channel), 5)
            got.append(message["rows"][0]["id"])
        return got

    assert asyncio.run(drain()) == list(range(51))  # every batch, in order
