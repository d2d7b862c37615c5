"""The limiter's background loops (spend heartbeat, settlement flusher, Redis reconnect) end
when their task is cancelled, even when the cancellation is swallowed on the way: Python
3.11's asyncio.wait_for returns the awaited result (or raises TimeoutError) when that
future finished in the same turn as the cancellation (gh-86296). A loop that went on then
never ended, and asyncio.run's shutdown — a worker's exit, a test's end — waited on it
forever (seen: a CI run stalled at the end of a test with Redis cut off)."""

import asyncio

import pytest

from gateway.dataplane.limits import Limiter

UNREACHABLE = "redis://127.0.0.1:9/0"  # the discard port: nothing answers there


async def _swallowing(result):
    """What Redis's answer arriving in the same turn as the task's cancellation looks like
    under Python 3.11: wait_for hands back the answer, and the cancellation is lost (3.12
    and later raise CancelledError here, which the loops pass on by themselves)."""
    loop = asyncio.get_running_loop()
    answer = loop.create_future()
    loop.call_soon(answer.set_result, result)
    loop.call_soon(asyncio.current_task().cancel)
    return await asyncio.wait_for(answer, 5)


class _Client:
    async def ping(self):
        return await _swallowing(True)


def _flusher(limiter):
    limiter._pending["s:1"] = 0.5  # something to send: the loop keeps going

    async def flush_once():
        await _swallowing(None)

    limiter._flush_once = flush_once
    return limiter._flush_soon()


def _heartbeat(limiter):
    limiter._leased["s:1"] = 1  # a reservation held: the loop keeps beating
    limiter.lease_s = 0.02

    async def beat_script(name, keys, args):
        return await _swallowing([""] * len(keys))

    limiter._eval = beat_script
    return limiter._beat()


def _reconnect(limiter):
    limiter._in_fallback = True  # keeps to its share after Redis answers: the loop goes on
    limiter._client = lambda: _Client()
    return limiter._reconnect()


@pytest.mark.parametrize("loop_of", [_flusher, _heartbeat, _reconnect])
def test_a_background_loop_ends_when_its_cancellation_was_swallowed(monkeypatch, loop_of):
    monkeypatch.setattr("gateway.dataplane.limits.REDIS_RETRY_AFTER_S", 0.01)
    limiter = Limiter(UNREACHABLE, timeout_s=0.5)

    async def run():
        task = asyncio.ensure_future(loop_of(limiter))
        done, _ = await asyncio.wait([task], timeout=3)
        assert task in done, "the loop went on after its task was cancelled"
        assert task.cancelled()

    asyncio.run(run())
