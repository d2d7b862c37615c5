"""Spend reservations across Redis outages and lost replies: a reservation admitted while
Redis was unreachable is a lease once Redis is back, and a settlement batch counts once
however many of its sends fail."""

import asyncio
import signal
import subprocess
import sys
import time

import pytest

from gateway.dataplane.limits import Limiter, SpendReservation
from gateway.tests.fault.redis_server import RedisServer
from gateway.tests.test_limits import _counter, _ReplyDropper, _tries


@pytest.fixture
def own_redis(tmp_path):
    """A Redis of this test's own, which it may kill and start again."""
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


# A gateway process in miniature whose request is admitted while Redis is unreachable and
# is still in flight (a long stream) when Redis returns.
_OUTAGE_HOLDER = """
import asyncio, sys
from gateway.dataplane.limits import Limiter, SpendReservation

async def main():
    limiter = Limiter(sys.argv[1], lease_s=float(sys.argv[2]))
    spend = SpendReservation(int(sys.argv[3]), 1.0, 1.0, 0.0)
    result = await limiter.acquire([], spend)
    print(result.backend if result.allowed else "refused", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def _wait_for(check, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def _leases(client, key) -> list[float]:
    return sorted(float(v) for f, v in client.hgetall(key).items() if f.startswith("q:"))


def test_a_reservation_admitted_during_an_outage_is_taken_off_when_its_process_is_killed(
    own_redis,
):
    """A worker admits a request while Redis is down; Redis returns while the request is
    still in flight, then the worker is SIGKILLed. The reservation reached Redis as a plain
    increment and stayed on the month's counter: the org was refused $1 below its cap
    until the month ended. It is a lease now, taken off a lease after the worker died."""
    lease_s = 1.0
    org = 81
    key = SpendReservation(org, 1.0, 1.0, 0.0).key
    own_redis.kill()
    holder = subprocess.Popen(
        [sys.executable, "-c", _OUTAGE_HOLDER, own_redis.url, str(lease_s), str(org)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "fallback"
        own_redis.start()
        client = own_redis.client()
        # Within a retry of its flusher, the worker's reservation is in Redis's counter.
        assert _wait_for(lambda: client.exists(key) and _counter(client, key) == 1.0)
        assert _leases(client, key) == [1.0]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    tries, spend = _tries(Limiter(own_redis.url, lease_s=lease_s), org, 10 * lease_s)
    assert tries[0][1] is False  # the dead worker's $1 still counted at first
    assert spend is not None, "the dead worker's outage reservation was never taken off"
    assert _counter(own_redis.client(), key) == pytest.approx(0.5)  # only the live one


def test_a_reservation_admitted_during_an_outage_holds_its_room_until_it_settles(own_redis):
    """Once Redis is back, a request admitted during the outage and still in flight counts
    on the cap (the other workers admit only what is left) and its real cost replaces it
    when it ends, once."""
    a, b = Limiter(own_redis.url, fallback_share=0.5), Limiter(own_redis.url)
    org = 82
    spend = SpendReservation(org, 2.0, 1.0, 0.0)

    async def run():
        own_redis.kill()
        result = await a.acquire([], spend)
        assert result.allowed and result.backend == "fallback"
        own_redis.start()
        await asyncio.sleep(a.reconcile_s + 1.5)  # a has sent what it holds
        held = _leases(own_redis.client(), spend.key)
        others = [await b.acquire([], SpendReservation(org, 2.0, 1.0, 0.0)) for _ in range(2)]
        a.settle(spend, 0.25, result.backend)
        await asyncio.sleep(0.3)
        return held, others

    held, others = asyncio.run(run())
    assert held == [1.0]
    assert [r.allowed for r in others] == [True, False]  # $1 left of the $2 cap
    client = own_redis.client()
    assert _counter(client, spend.key) == pytest.approx(1.25)
    assert _leases(client, spend.key) == [1.0]  # b's, still in flight


def test_a_settlement_batch_whose_reply_and_resend_were_lost_counts_once(own_redis):
    """The batch ran in Redis, its reply was lost, and redis-py's one resend failed too (the
    connection cut again): the batch was merged into the next one under a new id and
    counted twice (here the $0.50 reservation, released a second time, came back whole).
    It is sent again alone with its id until Redis answers."""
    proxy = _ReplyDropper(own_redis.port)
    try:
        limiter = Limiter(proxy.url)
        spend = SpendReservation(83, 1.0, 0.5, 0.0)

        async def run():
            await limiter.acquire([], SpendReservation(83, 1.0, 0.0, 0.0))  # scripts loaded
            result = await limiter.acquire([], spend)
            proxy.armed, proxy.blocked = 1, 1
            limiter.settle(spend, 0.2, result.backend)
            await asyncio.sleep(0.3)
            assert proxy.dropped == 1 and proxy.blocked == 0
            assert _counter(own_redis.client(), spend.key) == pytest.approx(0.2)  # it ran
            await asyncio.sleep(2.0)  # the flusher's retries

        asyncio.run(run())
        assert _counter(own_redis.client(), spend.key) == pytest.approx(0.2)
    finally:
        proxy.close()


def test_a_late_copy_of_a_settlement_batch_changes_nothing(own_redis):
    """A batch's connection breaks and redis-py sends it again at once (answered), but the
    first copy still reaches Redis a second later, before its deadline, after the next
    batch: it was applied again, since the counter kept only the last batch's id."""
    proxy = _ReplyDropper(own_redis.port)
    try:
        limiter = Limiter(proxy.url)
        first, second = (SpendReservation(86, 2.0, 0.5, 0.0) for _ in range(2))

        async def run():
            one, two = [await limiter.acquire([], spend) for spend in (first, second)]
            proxy.delayed = 1
            limiter.settle(first, 0.2, one.backend)
            await asyncio.sleep(0.3)  # sent again at once, and answered
            assert _counter(own_redis.client(), first.key) == pytest.approx(0.2 + 0.5)
            limiter.settle(second, 0.1, two.backend)
            await asyncio.sleep(1.5)  # the late copy has reached Redis
            assert proxy.dropped == 1

        asyncio.run(run())
        assert _counter(own_redis.client(), first.key) == pytest.approx(0.2 + 0.1)
    finally:
        proxy.close()


def test_a_batch_resent_after_its_process_was_cut_off_past_its_lease_counts_once(own_redis):
    """As above, and the process stays cut off from Redis longer than its lease: another
    process's sweep took its heartbeat off, and with it the id of its last batch, so the
    resend could not tell that the batch had run. The id is kept a day."""
    proxy = _ReplyDropper(own_redis.port)
    lease_s = 1.0
    try:
        a = Limiter(proxy.url, lease_s=lease_s)
        b = Limiter(own_redis.url, lease_s=lease_s)
        spend = SpendReservation(84, 2.0, 0.5, 0.0)

        async def run():
            await a.acquire([], SpendReservation(84, 2.0, 0.0, 0.0))  # scripts loaded
            result = await a.acquire([], spend)
            proxy.armed, proxy.blocked = 1, 10**6  # the reply is lost, then a is cut off
            a.settle(spend, 0.2, result.backend)
            await asyncio.sleep(3 * lease_s)  # a's heartbeat lapsed
            other = SpendReservation(84, 2.0, 0.5, 0.0)
            assert (await b.acquire([], other)).allowed  # its sweep finds a dead
            proxy.blocked = 0
            await asyncio.sleep(2.0)  # a's flusher sends its batch again

        asyncio.run(run())
        assert _counter(own_redis.client(), spend.key) == pytest.approx(0.2 + 0.5)
    finally:
        proxy.close()


def test_an_outage_reservation_settled_while_its_registration_went_unanswered_counts_once(
    own_redis,
):
    """Redis returns; the batch that makes a worker's outage reservation a lease runs, but
    its reply is lost and the resend cut; the request ends meanwhile. The lease is released
    once the batch is known to have run, and the counter holds the real cost alone."""
    proxy = _ReplyDropper(own_redis.port)
    try:
        limiter = Limiter(proxy.url)
        spend = SpendReservation(85, 2.0, 1.0, 0.0)

        async def run():
            await limiter.acquire([], SpendReservation(85, 2.0, 0.0, 0.0))  # scripts loaded
            proxy.refuse = True  # Redis unreachable for this worker
            result = await limiter.acquire([], spend)
            assert result.allowed and result.backend == "fallback"
            proxy.armed, proxy.blocked = 1, 1
            proxy.refuse = False
            for _ in range(100):
                await asyncio.sleep(0.05)
                if proxy.dropped:
                    break
            assert proxy.dropped == 1
            assert _leases(own_redis.client(), spend.key) == [0.0, 1.0]  # it ran
            limiter.settle(spend, 0.25, result.backend)
            await asyncio.sleep(2.0)

        asyncio.run(run())
        client = own_redis.client()
        assert _counter(client, spend.key) == pytest.approx(0.25)
        assert _leases(client, spend.key) == [0.0]  # the priming one, still in flight
    finally:
        proxy.close()


# A gateway process in miniature with one request in flight (a long stream), admitted
# through Redis: it settles at the cost it reads from stdin.
_STREAMER = """
import asyncio, sys
from gateway.dataplane.limits import Limiter, SpendReservation

async def main():
    url, lease_s, org, cap, reserve = sys.argv[1:6]
    limiter = Limiter(url, lease_s=float(lease_s))
    spend = SpendReservation(int(org), float(cap), float(reserve), 0.0)
    result = await limiter.acquire([], spend)
    print(result.backend if result.allowed else "refused", flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)
    limiter.settle(spend, float(line), result.backend)
    await asyncio.sleep(0.5)
    print("settled", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def _streamer(url, lease_s, org, cap, reserve):
    proc = subprocess.Popen(
        [sys.executable, "-c", _STREAMER, url, str(lease_s), str(org), str(cap), str(reserve)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "redis"
    return proc


def _stop(*procs):
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_reservation_lost_in_a_redis_restart_is_taken_off_when_its_process_is_killed(
    own_redis,
):
    """Redis restarts empty while a request is in flight; the counter is rebuilt from the
    last value its process saw, which holds the reservation, but not as a lease: if the
    process was killed afterwards, the reservation stayed until the month ended. The
    process's heartbeat finds the counter lost and makes the reservation a lease again."""
    lease_s = 4.0
    org = 87
    key = SpendReservation(org, 1.0, 1.0, 0.0).key
    streamer = _streamer(own_redis.url, lease_s, org, 1.0, 1.0)
    try:
        own_redis.restart()
        client = own_redis.client()
        # Within a heartbeat the counter is back, with the reservation a lease in it.
        assert _wait_for(lambda: _leases(client, key) == [1.0], 3 * lease_s)
        assert _counter(client, key) == pytest.approx(1.0)
    finally:
        _stop(streamer)
    tries, spend = _tries(Limiter(own_redis.url, lease_s=lease_s), org, 4 * lease_s)
    assert tries[0][1] is False  # the dead process's $1 still counted at first
    assert spend is not None, "the dead process's reservation was never taken off"
    assert _counter(own_redis.client(), key) == pytest.approx(0.5)


def test_reservations_lost_in_a_redis_restart_are_counted_once_when_made_leases_again(
    own_redis,
):
    """Two processes, a request in flight each, saw the counter at different values (the
    later one with both reservations). Rebuilt from both, each reservation made a lease
    again, the counter holds each reservation once (not also in the floor), and what is
    left after one ends and the other's process is killed is the real cost alone."""
    lease_s = 8.0
    org = 88
    key = SpendReservation(org, 2.0, 0.5, 0.0).key
    p = _streamer(own_redis.url, lease_s, org, 2.0, 0.5)  # saw $0.50
    q = _streamer(own_redis.url, lease_s, org, 2.0, 0.25)  # saw $0.75
    try:
        q.send_signal(signal.SIGSTOP)  # q reports after p (for a few seconds, within its lease)
        own_redis.restart()
        client = own_redis.client()
        assert _wait_for(lambda: _leases(client, key) == [0.5], lease_s)
        q.send_signal(signal.SIGCONT)
        assert _wait_for(lambda: _leases(client, key) == [0.25, 0.5], lease_s)
        assert _counter(client, key) == pytest.approx(0.75)  # was 1.25: p's $0.50 twice
        q.stdin.write("0.1\n")
        q.stdin.flush()
        assert q.stdout.readline().strip() == "settled"
        assert _counter(client, key) == pytest.approx(0.6)
    finally:
        q.send_signal(signal.SIGCONT)
        _stop(p, q)
    time.sleep(1.5 * lease_s)
    sweeper = SpendReservation(org, 2.0, 0.0, 0.0)
    assert asyncio.run(Limiter(own_redis.url, lease_s=lease_s).acquire([], sweeper)).allowed
    # No trace of the dead process's reservation: the real $0.10 alone.
    assert _counter(own_redis.client(), key) == pytest.approx(0.1)


@pytest.mark.parametrize("ended", ["after", "before"])
def test_a_reservation_swept_before_redis_lost_the_counter_counts_its_whole_cost(own_redis, ended):
    """A worker cut off from Redis past its lease has its reservation swept; back, it sees
    the counter without it; then Redis loses the counter, rebuilt from that value. When the
    request ends (after the worker noticed the loss, or before, its settlement not sent
    yet), its cost was added as the difference from a reservation the new counter never
    held: the counter fell short of the spend by the reservation."""
    proxy = _ReplyDropper(own_redis.port)
    lease_s = 1.0
    try:
        p = Limiter(proxy.url, lease_s=lease_s)
        other = Limiter(own_redis.url, lease_s=lease_s)
        spend = SpendReservation(89, 2.0, 0.5, 0.0)
        client = own_redis.client()

        async def run():
            admitted = await p.acquire([], spend)
            proxy.blocked = 10**6  # p cut off from Redis's scripts
            await asyncio.sleep(1.5 * lease_s)
            theirs = SpendReservation(89, 2.0, 0.25, 0.0)
            assert (await other.acquire([], theirs)).allowed  # its sweep takes p's $0.50 off
            other.settle(theirs, 0.25, "redis")
            await asyncio.sleep(0.2)
            proxy.blocked = 0
            assert (await p.acquire([], SpendReservation(89, 2.0, 0.1, 0.0))).allowed
            assert _counter(client, spend.key) == pytest.approx(0.35)  # what p saw
            if ended == "before":
                async with p._locks[id(asyncio.get_running_loop())]:  # not sent yet
                    p.settle(spend, 0.3, admitted.backend)
                    own_redis.restart()
                    await p.acquire([], SpendReservation(89, 2.0, 0.0, 0.0))  # it notices
                await asyncio.sleep(0.3)
                return
            own_redis.restart()
            for _ in range(100):  # p's heartbeat rebuilds the counter from what it saw
                await asyncio.sleep(0.05)
                if client.exists(spend.key):
                    break
            await asyncio.sleep(0.3)
            assert _counter(client, spend.key) == pytest.approx(0.35)
            p.settle(spend, 0.3, admitted.backend)
            await asyncio.sleep(0.3)

        asyncio.run(run())
        # $0.25 + $0.10 in flight + $0.30: it was $0.15.
        assert _counter(client, spend.key) == pytest.approx(0.65)
    finally:
        proxy.close()
