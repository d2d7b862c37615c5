"""Rate limits (RPM/TPM token buckets) and spend-cap reservations.

With Redis: one atomic script per request checks every bucket and the spend cap and
consumes only if all pass, so 2N concurrent requests against a limit of N let exactly
N through across processes. A slow Redis is waited for (bounded); a Redis that cannot be
reached falls back to conservative per-process limits, and what was spent meanwhile is
added to Redis's counters when it returns. Without Redis (embedded default) the same
algorithm runs per process.
"""

import asyncio
import itertools
import logging
import math
import secrets
import time
from dataclasses import dataclass, field

from core import redisurl
from core.months import month_bounds, month_key

from .errors import GatewayError

log = logging.getLogger("bonito.gateway.limits")

WINDOW_MS = 60_000
# While Redis is unreachable, how often one PING checks whether it is back.
REDIS_RETRY_AFTER_S = 1.0
# After Redis answers again (or a process finds that Redis lost a counter it had seen), how
# long a process keeps to its fallback share, beyond a flush that was in flight when Redis
# returned (Limiter.reconcile_s): the others' spend admitted during the outage reaches Redis
# within a retry or two of their flushers, and until it has, Redis's counter is short of it.
# Admitting against that counter at once let a cap be overshot by the others' shares.
RECONCILE_S = 2 * REDIS_RETRY_AFTER_S
SPEND_TTL_S = 40 * 86400
# How long a process's spend reservations outlive its last heartbeat. A process refreshes
# its heartbeat on every counter where it holds reservations every SPEND_LEASE_S / 4, so a
# request of any length keeps its reservation; a process killed mid-request (SIGKILL, the
# OOM killer) stops beating, and after this long the next acquisition on the counter takes
# its reservations off (before, they stayed until the month ended).
SPEND_LEASE_S = 60.0
# The epoch a release carries for a reservation whose admission its process never heard
# of (Limiter._undo_late): its lease is taken off with its amount if Redis made it.
UNSURE = "?"


def _stop_if_cancelled() -> None:
    """End a background loop (heartbeat, flusher, reconnect) whose task was asked to stop.
    Python 3.11's wait_for (ours and the Redis client's) can swallow a cancellation: when the
    awaited future finished, or its own timeout fired, as the task was cancelled, it returns
    or raises TimeoutError instead (gh-86296, fixed in 3.12). A loop that goes on after that
    never ends, and asyncio.run's shutdown (a worker's exit) waits on it forever. The request
    stays counted in the task's cancelling(), so each turn of the loop checks it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


# A spend counter is a hash {fl, inc, e}: its value is fl + inc. `inc` collects reservations
# and settlements; `fl` is a floor raised to the usage rows' month-to-date spend (the
# snapshot's baseline) and, after the counter was lost (a Redis restart), to the last value
# a process saw of the lost one. `e` names the counter's incarnation, so a process can tell
# that the value it last saw belongs to a counter that no longer exists. That value holds
# the reservations in flight then; their processes make them leases again, taken from the
# floor (m:<lost epoch> = how much was), so a value seen of the lost counter raises the
# floor by what it holds beyond them.
_SPEND_PREP = """
local function spend_prep(skey, baseline, seen, seen_epoch, new_epoch)
  local h = redis.call('HMGET', skey, 'fl', 'inc', 'e')
  local fl, inc, e = tonumber(h[1]), tonumber(h[2]), h[3]
  if not e then fl = 0; inc = 0; e = new_epoch end
  if seen_epoch ~= '' and seen_epoch ~= e then
    local moved = tonumber(redis.call('HGET', skey, 'm:' .. seen_epoch) or '0')
    fl = math.max(fl, tonumber(seen) - moved)
  end
  fl = math.max(fl, tonumber(baseline) - inc)
  return fl, inc, e
end
-- Reservations are fields q:<process>:<n> = amount, beside h:<process> = when that process's
-- lease ends (Redis's clock, ms): its last heartbeat or reservation plus its own lease, so
-- a process is judged by its own GATEWAY_SPEND_LEASE_S, not the sweeper's (they differ
-- during a rolling change of the setting). Every lease/4 at most, the reservations of
-- processes whose lease ended (killed mid-request) are taken off the counter: returns how much.
local function spend_sweep(skey, now, lease)
  local last = tonumber(redis.call('HGET', skey, 'sw') or '0')
  if now - last < lease / 4 then return 0 end
  redis.call('HSET', skey, 'sw', string.format('%.17g', now))
  local all = redis.call('HGETALL', skey)
  local beats, dead, swept = {}, {}, 0
  for i = 1, #all, 2 do
    local pid = string.match(all[i], '^h:(.+)$')
    if pid then
      beats[pid] = true
      if now > tonumber(all[i + 1]) then dead[pid] = true end
    end
  end
  for i = 1, #all, 2 do
    local pid = string.match(all[i], '^q:([^:]+):')
    if pid and (dead[pid] or not beats[pid]) then
      swept = swept + tonumber(all[i + 1])
      redis.call('HDEL', skey, all[i])
    end
  end
  -- A dead process's heartbeat and last batch id stay a day: a process cut off from Redis
  -- for longer than its lease still sends a batch whose reply it lost again when it is
  -- back, and the id says whether that batch ran.
  for pid in pairs(dead) do
    if now > tonumber(redis.call('HGET', skey, 'h:' .. pid)) + 86400000 then
      redis.call('HDEL', skey, 'h:' .. pid, 'b:' .. pid)
    end
  end
  return swept
end
local function spend_save(skey, fl, inc, e, ttl)
  redis.call('HSET', skey, 'fl', string.format('%.17g', fl), 'inc', string.format('%.17g', inc), 'e', e)
  redis.call('EXPIRE', skey, ttl)
end
"""

# A script that reaches Redis after its caller gave up (a paused or overloaded Redis runs
# what was queued when it resumes) changes nothing: the caller already answered 503 or
# will send its settlements again, so nothing is counted twice.
_EXPIRED = """
local t = redis.call('TIME')
local rnow = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
if rnow > tonumber(ARGV[1]) then return {-1} end
"""

_ACQUIRE = (
    _SPEND_PREP
    + _EXPIRED
    + """
local n = tonumber(ARGV[2])
-- Sent again after its reply was lost (redis-py resends a command once when its connection
-- breaks, and a script that ran may have lost only its reply): its lease says it was
-- admitted, and nothing is taken twice.
if tonumber(ARGV[3 + 2 * n]) == 1 and redis.call('HEXISTS', KEYS[n + 1], ARGV[12 + 2 * n]) == 1 then
  local h = redis.call('HMGET', KEYS[n + 1], 'fl', 'inc', 'e')
  local left = {}
  for i = 1, n do
    left[i] = math.floor(tonumber(redis.call('HGET', KEYS[i], 't') or ARGV[1 + 2 * i]))
  end
  return {0, 0, 0, string.format('%.17g', tonumber(h[1]) + tonumber(h[2])), h[3], unpack(left)}
end
-- Buckets refill on Redis's clock: one clock for every process and replica, and a
-- script queued behind others cannot refill a bucket twice.
local now = rnow
local idx = 3
local failed, wait = 0, 0
local state = {}
for i = 1, n do
  local cap = tonumber(ARGV[idx]); local cost = tonumber(ARGV[idx + 1]); idx = idx + 2
  local data = redis.call('HMGET', KEYS[i], 't', 'ts')
  local tokens, ts = tonumber(data[1]), tonumber(data[2])
  if tokens == nil then tokens = cap; ts = now end
  local rate = cap / 60000.0
  tokens = math.min(cap, tokens + math.max(0, now - ts) * rate)
  state[i] = {tokens, cost, math.max(now, ts)}
  -- Every bucket is read before deciding: the state of each is returned whatever refused,
  -- and a request that several refuse waits for the slowest of them to refill.
  if cost > tokens then
    local w
    if cost > cap then w = 60000 else w = (cost - tokens) / rate end
    if failed == 0 or w > wait then failed = i; wait = w end
  end
end
local has_spend = tonumber(ARGV[idx])
local spend_failed, spent, epoch = 0, 0, ''
if has_spend == 1 then
  local skey = KEYS[n + 1]
  local cap, reserve, ttl = tonumber(ARGV[idx + 1]), tonumber(ARGV[idx + 2]), tonumber(ARGV[idx + 3])
  local fl, inc, e = spend_prep(skey, ARGV[idx + 4], ARGV[idx + 5], ARGV[idx + 6], ARGV[idx + 7])
  local pid, lease = ARGV[idx + 8], ARGV[idx + 9]
  local swept = spend_sweep(skey, now, tonumber(ARGV[idx + 10]))
  if swept ~= 0 then
    inc = inc - swept
    fl = math.max(fl, tonumber(ARGV[idx + 4]) - inc)
  end
  if fl + inc >= cap then spend_failed = 1 end
  if failed == 0 and spend_failed == 0 then
    inc = inc + reserve
    -- A reservation renews its process's lease on the counter, as a heartbeat does: a
    -- process that reserves is alive (its heartbeat may be due only a quarter lease later,
    -- and a lease it let lapse, cut off from Redis, would have the new one swept meanwhile).
    redis.call('HSET', skey, lease, ARGV[idx + 2], 'h:' .. pid, string.format('%.17g', now + tonumber(ARGV[idx + 10])))
  end
  spend_save(skey, fl, inc, e, ttl)
  spent, epoch = fl + inc, e
end
local remaining = {}
for i = 1, n do
  local left = state[i][1]
  if failed == 0 and spend_failed == 0 then
    left = left - state[i][2]
    redis.call('HSET', KEYS[i], 't', string.format('%.17g', left), 'ts', string.format('%.17g', state[i][3]))
    redis.call('PEXPIRE', KEYS[i], 120000)
  end
  remaining[i] = math.floor(left)
end
return {failed, spend_failed, math.ceil(wait), string.format('%.17g', spent), epoch, unpack(remaining)}
"""
)

# Adds settled deltas (and spend made while Redis was unreachable) to spend counters, ends
# the settled reservations' leases and makes the reservations admitted while Redis was
# unreachable, still in flight, leases, as it does those a restart lost. ARGV per key:
# delta, baseline, seen, its epoch, a new epoch, n, then n times (lease, reserved, the
# counter's epoch when reserved), m, then m times (lease, reserved), k, then k times (lease,
# reserved, the lost epoch); then the process's id, its lease (ms), the batch's id, the TTL.
_SETTLE = (
    _SPEND_PREP
    + _EXPIRED
    + """
local out = {}
local a = 2
local pid, lease_ms, batch = ARGV[#ARGV - 3], tonumber(ARGV[#ARGV - 2]), ARGV[#ARGV - 1]
for i = 1, #KEYS do
  local delta = tonumber(ARGV[a])
  local fl, inc, e = spend_prep(KEYS[i], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4])
  local n = tonumber(ARGV[a + 5])
  -- The same batch sent again after its reply was lost (redis-py resends a command once
  -- when its connection breaks, the flusher until it hears) was applied already: once
  -- only. A process's batches are numbered and reach a counter in order (the next is sent
  -- once the last is answered), so a late copy of an earlier one changes nothing either.
  local again = tonumber(redis.call('HGET', KEYS[i], 'b:' .. pid) or '0') >= tonumber(batch)
  a = a + 6
  for j = 1, n do
    if not again then
      local held = redis.call('HDEL', KEYS[i], ARGV[a])
      if ARGV[a + 2] == '?' then
        -- A reservation whose admission its request never heard of: given back if made.
        if held == 1 then delta = delta - tonumber(ARGV[a + 1]) end
      elseif held == 0 and ARGV[a + 2] == e then
        -- A lease another process swept (this one was not heard from for a lease:
        -- stalled, cut off from Redis) took the reservation off: the real cost is added
        -- whole.
        delta = delta + tonumber(ARGV[a + 1])
      end
    end
    a = a + 3
  end
  local m = tonumber(ARGV[a])
  a = a + 1
  for j = 1, m do
    -- Admitted while Redis was unreachable and still in flight: counted here as a lease,
    -- so that it is taken off if its process dies before it ends.
    if not again then
      redis.call('HSET', KEYS[i], ARGV[a], ARGV[a + 1])
      delta = delta + tonumber(ARGV[a + 1])
    end
    a = a + 2
  end
  local k = tonumber(ARGV[a])
  a = a + 1
  for j = 1, k do
    -- A reservation of this process that the counter's lost incarnation (ARGV[a + 2])
    -- held: its amount is in the floor, rebuilt from values seen then; it becomes a lease
    -- again, taken from the floor, so that it is taken off if this process dies.
    local r = tonumber(ARGV[a + 1])
    if not again and ARGV[a + 2] ~= e and fl >= r and redis.call('HEXISTS', KEYS[i], ARGV[a]) == 0 then
      redis.call('HSET', KEYS[i], ARGV[a], ARGV[a + 1])
      redis.call('HINCRBYFLOAT', KEYS[i], 'm:' .. ARGV[a + 2], ARGV[a + 1])
      fl = fl - r
      inc = inc + r
    end
    a = a + 3
  end
  if not again then
    inc = inc + delta
    -- A batch is a sign of life, as a heartbeat is (and its id is kept as long as it is).
    redis.call('HSET', KEYS[i], 'b:' .. pid, batch, 'h:' .. pid, string.format('%.17g', rnow + lease_ms))
  end
  spend_save(KEYS[i], fl, inc, e, tonumber(ARGV[#ARGV]))
  out[#out + 1] = string.format('%.17g', fl + inc)
  out[#out + 1] = e
end
return out
"""
)

# A process's heartbeat on the counters where it holds reservations: its lease there ends
# its own lease (ms) from now. ARGV: its id, its lease. Returns each counter's epoch ("":
# none), so that a process with requests in flight learns that Redis lost a counter.
_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local out = {}
for i = 1, #KEYS do
  local e = redis.call('HGET', KEYS[i], 'e')
  if e then
    redis.call('HSET', KEYS[i], 'h:' .. ARGV[1], string.format('%.17g', now + tonumber(ARGV[2])))
  end
  out[i] = e or ''
end
return out
"""

# Takes what a process admitted while Redis was unreachable out of Redis's buckets when it
# returns (a restarted Redis starts them full), so the minute around an outage lets through
# at most the limit twice, not three times. ARGV: cap, debt per key.
_DEBT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
for i = 1, #KEYS do
  local cap, debt = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local data = redis.call('HMGET', KEYS[i], 't', 'ts')
  local tokens, ts = tonumber(data[1]), tonumber(data[2])
  if tokens == nil then tokens = cap; ts = now end
  tokens = math.min(cap, tokens + math.max(0, now - ts) * cap / 60000.0)
  tokens = math.max(-cap, tokens - debt)
  redis.call('HSET', KEYS[i], 't', string.format('%.17g', tokens), 'ts', string.format('%.17g', math.max(now, ts)))
  redis.call('PEXPIRE', KEYS[i], 120000)
end
return #KEYS
"""


def org_prefix(org_id) -> str:
    """Every counter of one org carries the org's hash tag, so one script's keys (a key's
    and its org's buckets, the org's spend cap) share a Redis Cluster slot."""
    return f"bonito:{{o{org_id}}}"


def hash_slot_group(key: str) -> str:
    """What Redis Cluster hashes of a key: its first non-empty {tag}, else the whole key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def _by_slot_group(keys) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(hash_slot_group(key), []).append(key)
    return list(groups.values())


@dataclass(slots=True)
class Bucket:
    key: str  # its counter's name in Redis (or in this process)
    capacity: int  # per minute
    cost: int  # what this request takes from it
    unit: str  # "requests" or "tokens"
    scope: str = "key"  # whose limit it is: "key" or "org"

    @property
    def label(self) -> str:
        """How messages name it: "requests", "tokens", "org requests", "org tokens"."""
        return self.unit if self.scope == "key" else f"{self.scope} {self.unit}"


@dataclass(slots=True)
class SpendReservation:
    org_id: int
    cap: float
    reserve: float
    baseline: float  # settled month-to-date spend known to the snapshot (the usage rows)
    settled: bool = False  # replaced by the real cost (Limiter.settle): once only
    # The counter of the month the reservation was made in: a request reserved before
    # midnight on the month's last day settles into the same month's counter.
    key: str = field(init=False)
    # The month the baseline is of ("": this one). In a month's first minute the snapshot
    # may still hold last month's spend, which must not become the new month's floor.
    baseline_month: str = ""
    # Admitted by Redis: its lease's field in the counter, and the counter's epoch then.
    lease: str = ""
    epoch: str = ""

    def __post_init__(self):
        month = month_key()
        self.key = f"{org_prefix(self.org_id)}:cap:{month}"
        if self.baseline_month and self.baseline_month != month:
            self.baseline = 0.0


@dataclass(slots=True)
class LimitResult:
    allowed: bool
    failed: Bucket | None = None
    spend_exceeded: bool = False
    retry_after_s: float = 0.0
    # Of every bucket checked, whatever refused: label -> tokens left (nothing taken if
    # refused), and label -> the capacity applied (during an outage, this process's share).
    remaining: dict = field(default_factory=dict)
    limits: dict = field(default_factory=dict)
    spent: float = 0.0
    backend: str = "local"  # "redis", "local" (no Redis configured) or "fallback"


@dataclass(slots=True, eq=False)
class _Batch:
    """One settlement script (one slot group's counters), kept with its id until Redis has
    answered it: a batch whose reply was lost may have run, so it is sent again alone, with
    its id, before anything newer for its counters (merged into a later batch, under that
    batch's id, it was counted twice). Ids are numbered in order per process."""

    id: str
    keys: list[str]
    deltas: dict[str, float]
    releases: dict[str, dict[str, tuple[float, str]]]  # counter -> {lease: (reserved, epoch)}
    registers: dict[str, dict[str, float]]  # counter -> {lease: reserved} (outage admissions)
    # counter -> {lease: (reserved, lost epoch)}: reservations a lost counter held
    moves: dict[str, dict[str, tuple[float, str]]] = field(default_factory=dict)
    # counter -> (value, epoch) last seen of the lost counter, sent with its moves
    lost_seen: dict[str, tuple[str, str]] = field(default_factory=dict)
    first_sent: float = 0.0  # time.monotonic() of its first send


class LocalLimiter:
    """Per-process buckets and spend counters: the embedded default (no Redis), and the
    fallback while Redis is unreachable, where each process gets `share` of every limit."""

    def __init__(self, share: float = 1.0):
        self.share = share
        self._buckets: dict[str, tuple[float, float]] = {}
        self._spend: dict[str, float] = {}  # embedded: month-to-date spend
        self._budget: dict[str, list[float]] = {}  # fallback: [spent, allowance]

    def acquire(
        self,
        buckets: list[Bucket],
        spend: SpendReservation | None,
        now_ms: float,
        spend_start: float | None = None,
    ) -> LimitResult:
        """`spend_start` set: the fallback, allowed `share` of what was left of the cap when
        Redis was last seen (spend_start), and only what fits in it whole. Every bucket is
        read before deciding, as the Redis script does."""
        states, stamps, limits = [], [], {}
        failed, wait = None, 0.0
        for b in buckets:
            cap = b.capacity if spend_start is None else max(1, int(b.capacity * self.share))
            limits[b.label] = cap
            tokens, ts = self._buckets.get(b.key, (cap, now_ms))
            tokens = min(cap, tokens + max(0.0, now_ms - ts) * cap / WINDOW_MS)
            states.append(tokens)
            stamps.append(max(now_ms, ts))  # a clock step back refills nothing twice
            if b.cost > tokens:
                w = WINDOW_MS if b.cost > cap else (b.cost - tokens) / (cap / WINDOW_MS)
                if failed is None or w > wait:
                    failed, wait = b, w
        remaining = {b.label: int(tokens) for b, tokens in zip(buckets, states, strict=True)}
        if failed is not None:
            return LimitResult(
                False, failed=failed, retry_after_s=wait / 1000, remaining=remaining, limits=limits
            )
        spent = 0.0
        if spend is not None and spend_start is None:
            # The usage rows' month-to-date spend (the snapshot's, refreshed) is the floor:
            # other processes' and replicas' spend reaches this one only through it.
            spent = max(self._spend.get(spend.key, 0.0), spend.baseline)
            if spent >= spend.cap:
                return _spend_refused(spent, remaining, limits)
            self._spend[spend.key] = spent = spent + spend.reserve
        elif spend is not None:
            budget = self._budget.setdefault(
                spend.key, [0.0, max(0.0, spend.cap - spend_start) * self.share]
            )
            spent = spend_start + budget[0]
            if budget[0] + spend.reserve > budget[1]:
                return _spend_refused(spent, remaining, limits)
            budget[0] += spend.reserve
            spent += spend.reserve
        for b, tokens, stamp in zip(buckets, states, stamps, strict=True):
            self._buckets[b.key] = (tokens - b.cost, stamp)
            remaining[b.label] = int(tokens - b.cost)
        return LimitResult(True, remaining=remaining, limits=limits, spent=spent)

    def settle(self, spend: SpendReservation, delta: float) -> None:
        if spend.key in self._spend:
            self._spend[spend.key] += delta
        if spend.key in self._budget:
            self._budget[spend.key][0] += delta

    def end_fallback(self) -> None:
        """Redis answers again: the next outage starts from what Redis says then."""
        self._buckets.clear()
        self._budget.clear()


def _drained(debt: list[float], now_ms: float, share: float) -> float:
    """What is still owed of [capacity, owed, since] at now_ms: a bucket refills meanwhile,
    and this process's part of the refill is its ``share`` (each process's debt draining
    at the whole bucket's rate gave N processes N refills)."""
    capacity, owed, since = debt
    return max(0.0, owed - max(0.0, now_ms - since) * capacity * share / WINDOW_MS)


async def _all(coros) -> None:
    """Runs them together; the first failure is raised once all have finished."""
    coros = list(coros)
    if len(coros) == 1:
        return await coros[0]
    results = await asyncio.gather(*coros, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _settled(coros) -> list[BaseException]:
    """Runs them together, to the end of each: the failures."""
    results = await asyncio.gather(*coros, return_exceptions=True)
    return [r for r in results if isinstance(r, BaseException)]


def _spend_refused(spent: float, remaining: dict, limits: dict, **kw) -> LimitResult:
    return LimitResult(
        False,
        spend_exceeded=True,
        spent=spent,
        retry_after_s=_seconds_to_next_month(),
        remaining=remaining,
        limits=limits,
        **kw,
    )


def _seconds_to_next_month() -> float:
    return max(1.0, month_bounds()[1].timestamp() - time.time())


def limiter_unavailable(timeout_s: float) -> GatewayError:
    return GatewayError(
        503,
        f"The gateway's rate limiter (Redis) did not answer within {timeout_s:g}s, so the "
        "request was not sent upstream. Retry shortly.",
        "server_error",
        "limiter_unavailable",
        headers={"Retry-After": "1"},
    )


class Limiter:
    """Redis when configured and reachable, per-process limits otherwise.

    Redis is "unreachable" when a connection to it fails (refused, reset, connect timeout):
    then each process applies `fallback_share` of every limit and of what was left of each
    spend cap, and adds what it spent to Redis's counters when Redis returns, before it
    admits anything more against them. A Redis that accepts connections but does not answer
    within `timeout_s` (overloaded, paused) is neither trusted nor bypassed: the request
    gets a 503 that the SDKs retry.
    """

    # Clocks of the gateway hosts and Redis may differ by this much (see _EXPIRED).
    CLOCK_MARGIN_S = 0.5

    def __init__(
        self,
        redis_url: str = "",
        *,
        timeout_s: float = 2.0,
        fallback_share: float = 1.0,
        max_connections: int = 64,
        lease_s: float = SPEND_LEASE_S,
    ):
        self.redis_url = redis_url
        self.lease_s = lease_s
        self._pid = secrets.token_hex(6)  # names this process's leases and heartbeat
        self._lease_seq = itertools.count()
        # counter -> this process's reservations admitted by Redis and not yet released there
        self._leased: dict[str, int] = {}
        # counter -> {lease: (reserved, counter epoch)}: settled, to be released in Redis
        # (epoch "": admitted while Redis was unreachable, its epoch is in _registered)
        self._releases: dict[str, dict[str, tuple[float, str]]] = {}
        # counter -> {lease: reserved}: admitted while Redis was unreachable, in flight, and
        # not sent to Redis yet (a batch makes them leases there)
        self._unsent: dict[str, dict[str, float]] = {}
        # lease -> the counter's epoch: such reservations, now leases in Redis
        self._registered: dict[str, str] = {}
        self._unacked: list[_Batch] = []  # sent, Redis's answer not heard yet
        # counter -> {lease: [reserved, the counter's epoch ("": moving), movable]}: this
        # process's reservations that are leases in Redis, not settled yet. Movable: not
        # swept before Redis lost the counter (this process was heard from within its lease)
        self._held: dict[str, dict[str, list]] = {}
        # counter -> {lease: (reserved, lost epoch)}: to be made leases on the new counter
        self._moves: dict[str, dict[str, tuple[float, str]]] = {}
        # counter -> (value, epoch) this process last saw of the lost counter, which holds
        # the reservations it moves (a batch sent before the last of them was admitted, and
        # run on the new counter, may have rebuilt it from an earlier value)
        self._lost_seen: dict[str, tuple[str, str]] = {}
        # counter -> when (time.monotonic()) the last answered script that renewed this
        # process's lease there was sent
        self._renewed: dict[str, float] = {}
        self._lapsed: set[str] = set()  # settled leases, not movable, not released yet
        self._batch_seq = itertools.count(1)  # settlement batches' ids, in order
        self._beats: dict[int, asyncio.Task] = {}
        self._target = redisurl.parse(redis_url) if redis_url else None
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.local = LocalLimiter(fallback_share if redis_url else 1.0)
        self._clients: dict[int, object] = {}  # per event loop
        self._locks: dict[int, asyncio.Lock] = {}
        self._slots: dict[int, asyncio.Semaphore] = {}
        self._paying: dict[int, asyncio.Future] = {}
        self._probes: dict[int, tuple[asyncio.Task, float]] = {}
        self._flusher: dict[int, asyncio.Task] = {}
        self._reconnects: dict[int, asyncio.Task] = {}
        self._script_sha: dict[str, str] = {}
        self._loading: dict[tuple[int, str], asyncio.Future] = {}
        self._down_until = 0.0
        self._in_fallback = False
        self._settle_until: float | None = None  # the fallback share holds until then
        # a flush in flight when Redis returns may take its whole bound to fail, then retry
        self.reconcile_s = RECONCILE_S + timeout_s + self.CLOCK_MARGIN_S
        self._pending: dict[str, float] = {}  # spend not yet added to Redis, by counter
        # counter -> how many settlement batches for it Redis has applied (this process)
        self._settled_batches: dict[str, int] = {}
        self._unreconciled: set[str] = set()  # counters with fallback spend not yet in Redis
        self._spend_info: dict[str, list] = {}  # counter -> [baseline, last seen, its epoch]
        # bucket -> [capacity, tokens admitted during the outage (draining at the bucket's
        # rate, as a bucket refills), when]: owed to Redis when it returns
        self._debts: dict[str, list[float]] = {}

    def _client(self):
        loop_id = id(asyncio.get_running_loop())
        client = self._clients.get(loop_id)
        if client is None:
            client = self._clients[loop_id] = self._new_client()
            self._locks[loop_id] = asyncio.Lock()
            if self._target.kind != redisurl.SINGLE:
                # Sentinel and Cluster pools fail a request beyond max_connections (a
                # ConnectionError, which would read as "unreachable"): bursts queue here.
                self._slots[loop_id] = asyncio.Semaphore(self.max_connections)
        return client

    def _new_client(self):
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        target = self._target
        timeouts = {
            "socket_timeout": self.timeout_s + self.CLOCK_MARGIN_S + 1,
            "socket_connect_timeout": self.timeout_s,
        }
        # Only a broken connection is retried, once, on a fresh one (a restarted Redis, a
        # promoted replica); a script whose reply timed out is never sent again.
        retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
        if target.kind == redisurl.SENTINEL:
            from redis.asyncio.sentinel import Sentinel

            sentinel = Sentinel(
                target.hosts, sentinel_kwargs=redisurl.sentinel_kwargs(target, **timeouts)
            )
            return sentinel.master_for(
                target.service,
                db=target.db,
                ssl=target.tls,
                max_connections=self.max_connections + 2,  # + PING and SCRIPT LOAD
                retry=retry,
                decode_responses=True,
                **target.auth(),
                **timeouts,
            )
        if target.kind == redisurl.CLUSTER:
            from redis.asyncio.cluster import ClusterNode, RedisCluster

            return RedisCluster(
                startup_nodes=[ClusterNode(h, p) for h, p in target.hosts],
                ssl=target.tls,
                max_connections=self.max_connections + 2,
                # Once, as above (its default is three times, with backoff); a resend after
                # a timeout arrives past the script's deadline and changes nothing.
                retry=retry,
                decode_responses=True,
                **target.auth(),
                **timeouts,
            )
        # A burst queues for a free connection (bounded by acquire's deadline) instead
        # of failing.
        pool = aioredis.BlockingConnectionPool.from_url(
            self.redis_url,
            max_connections=self.max_connections,
            timeout=None,
            retry=retry,
            decode_responses=True,
            **timeouts,
        )
        return aioredis.Redis(connection_pool=pool)

    def redis_available(self) -> bool:
        return bool(self.redis_url) and time.monotonic() >= self._down_until

    def _mark_down(self, exc: Exception) -> None:
        if not self._in_fallback:
            log.warning(
                "Redis unreachable (%s: %s); this process now applies %g of every limit and "
                "of what was left of each spend cap",
                type(exc).__name__,
                exc,
                self.local.share,
            )
        self._in_fallback = True
        self._settle_until = None
        self._down_until = math.inf  # until _reconnect hears from Redis
        self._ensure_reconnect()

    def _ensure_reconnect(self) -> None:
        loop = asyncio.get_running_loop()
        task = self._reconnects.get(id(loop))
        if task is None or task.done():
            self._reconnects[id(loop)] = loop.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        """While Redis is unreachable, and then while this process keeps to its fallback
        share (_mark_up), one PING a second (requests do not wait on it)."""
        while self._in_fallback or not self.redis_available():
            _stop_if_cancelled()
            await asyncio.sleep(REDIS_RETRY_AFTER_S)
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self._client().ping()
            except Exception as exc:
                log.debug("Redis still unreachable (%r)", exc)
                if self._settle_until is not None:  # gone again before the window ended
                    self._settle_until = None
                    self._down_until = math.inf
                continue
            self._mark_up()

    def _saw(self, key: str, value, epoch, renewed_at: float | None = None) -> None:
        """What Redis said of a spend counter; a counter this process had seen that Redis
        has lost (a restart, a failover that lost writes) means other processes may hold
        outage spend not in it yet: this one keeps to its fallback share for reconcile_s.
        Its reservations that the lost counter held become leases on the new one."""
        info = self._spend_info[key]
        lost = info[2] not in ("", epoch)
        self._check_lapse(key)
        prior = (info[1], info[2])
        info[1:] = [value, epoch]
        if renewed_at is not None:
            self._renewed[key] = max(self._renewed.get(key, 0.0), renewed_at)
        if lost:
            for lease, entry in self._held.get(key, {}).items():
                if entry[1] in ("", epoch):
                    continue
                if entry[2]:
                    self._moves.setdefault(key, {})[lease] = (entry[0], entry[1])
                    entry[1] = ""
                else:  # perhaps swept, so perhaps not in the values seen: as if swept here
                    entry[1] = epoch
            releases = self._releases.get(key, {})
            for lease in self._lapsed & releases.keys():
                if releases[lease][1] not in ("", UNSURE, epoch):
                    releases[lease] = (releases[lease][0], epoch)
            if key in self._moves:
                self._lost_seen.setdefault(key, prior)
                self._ensure_flusher()
        if lost and not self._in_fallback:
            log.warning(
                "Redis lost a spend counter this process had seen; it applies %g of what was "
                "left of each spend cap for %gs, until the others' spend is in Redis",
                self.local.share,
                self.reconcile_s,
            )
            self._in_fallback = True
            self._settle_until = time.monotonic() + self.reconcile_s
            self._down_until = self._settle_until
            self._ensure_reconnect()

    def _check_lapse(self, key: str) -> None:
        """Not heard from for its lease (stalled, cut off from Redis), this process may have
        had its reservations on the counter swept: they are not in the values seen of it
        after that, so they are not made leases again from the floor if Redis loses it."""
        renewed = self._renewed.get(key)
        if renewed is not None and time.monotonic() - renewed > 0.95 * self.lease_s:
            for entry in self._held.get(key, {}).values():
                entry[2] = False
            self._lapsed.update(self._releases.get(key, {}))  # ended, not released yet

    def _mark_up(self) -> None:
        if self._in_fallback:
            # Redis answers, but the other processes' outage spend may not be in it yet:
            # this one sends its own (the flusher) and keeps to its share for reconcile_s.
            now = time.monotonic()
            if self._settle_until is None:
                self._settle_until = now + self.reconcile_s
            if now < self._settle_until:
                self._down_until = self._settle_until
                return
            log.warning("Redis answers again; limits are shared across processes again")
            self._in_fallback = False
            self._settle_until = None
            self.local.end_fallback()
        self._down_until = 0.0

    def _deadline_ms(self) -> int:
        return int((time.time() + self.timeout_s) * 1000)

    # ------------------------------------------------------------------ acquire
    async def acquire(
        self, buckets: list[Bucket], spend: SpendReservation | None, *, _settled: bool = False
    ) -> LimitResult:
        now_ms = time.time() * 1000
        if not buckets and spend is None:
            return LimitResult(True, backend="none")
        if not self.redis_url:
            return self.local.acquire(buckets, spend, now_ms)
        if not self.redis_available():
            self._ensure_reconnect()
            return self._fallback(buckets, spend, now_ms)
        keys = [b.key for b in buckets]
        lease = ""
        args: list = [self._deadline_ms(), len(buckets)]
        for b in buckets:
            args += [b.capacity, b.cost]
        if spend is not None:
            info = self._spend_info.setdefault(spend.key, [spend.baseline, "0", ""])
            info[0] = spend.baseline
            keys.append(spend.key)
            args += [1, spend.cap, repr(spend.reserve), SPEND_TTL_S, repr(spend.baseline)]
            args += [info[1], info[2], secrets.token_hex(8)]
            lease = f"q:{self._pid}:{next(self._lease_seq)}"
            lease_ms = int(self.lease_s * 1000)
            args += [self._pid, lease, lease_ms]
        else:
            args.append(0)
        # A settlement batch that Redis applies while this script is in flight may land
        # after it: then a refusal at the cap is asked again (_settle_before_refusing).
        batches = self._settled_batches.get(spend.key, 0) if spend is not None else 0
        sent = time.monotonic()
        task = asyncio.ensure_future(self._redis_acquire(keys, args, spend))
        try:
            out = await asyncio.wait_for(asyncio.shield(task), self.timeout_s + self.CLOCK_MARGIN_S)
            if int(out[0]) == -1:
                raise TimeoutError("the script reached Redis after its deadline")
        except BaseException as exc:
            # It may have been admitted (or be, until its deadline): then the reservation is
            # given back, also when its answer never came (_undo_late).
            deadline_ms = args[0]
            task.add_done_callback(lambda t: self._undo_late(t, spend, lease, deadline_ms))
            if not isinstance(exc, Exception):
                raise
            if await self._unreachable(exc):
                self._mark_down(exc)
                return self._fallback(buckets, spend, now_ms)
            log.warning("Redis did not answer within %ss (%r)", self.timeout_s, exc)
            raise limiter_unavailable(self.timeout_s) from exc
        self._mark_up()
        failed, spend_failed, wait_ms, spent = int(out[0]), int(out[1]), int(out[2]), float(out[3])
        if spend is not None:
            admitted = not failed and not spend_failed
            self._saw(spend.key, out[3], out[4], sent if admitted else None)
            if admitted:
                spend.lease, spend.epoch = lease, out[4]
                self._held.setdefault(spend.key, {})[lease] = [spend.reserve, out[4], True]
                self._hold(spend.key)
        remaining = {b.label: int(v) for b, v in zip(buckets, out[5:], strict=True)}
        limits = {b.label: b.capacity for b in buckets}
        if failed:
            return LimitResult(
                False,
                failed=buckets[failed - 1],
                retry_after_s=wait_ms / 1000,
                remaining=remaining,
                limits=limits,
                backend="redis",
            )
        if spend_failed:
            if (
                spend is not None
                and not _settled
                and await self._settle_before_refusing(spend, batches)
            ):
                return await self.acquire(buckets, spend, _settled=True)
            return _spend_refused(spent, remaining, limits, backend="redis")
        return LimitResult(True, remaining=remaining, limits=limits, spent=spent, backend="redis")

    async def _settle_before_refusing(self, spend: SpendReservation, batches: int) -> bool:
        """Whether the org's counter may still hold reservations this process has settled
        lower but not sent yet (settlements are batched off the request path), or sent in a
        batch that Redis applied after the refusing script (``batches``: how many it had
        applied when that script was sent): then what is pending is sent now, after any
        batch in flight, and the caller asks once more. A client that sends its next request
        the moment the last one is answered is not refused for the last one's reservation.
        Costs a round trip only on a refusal at the cap."""
        lock = self._locks.get(id(asyncio.get_running_loop()))
        if (
            self._pending.get(spend.key, 0.0) >= 0
            and not (lock is not None and lock.locked())
            and self._settled_batches.get(spend.key, 0) == batches
            and not any(spend.key in batch.keys for batch in self._unacked)
        ):
            return False
        try:
            async with asyncio.timeout(self.timeout_s + self.CLOCK_MARGIN_S):
                await self._flush_once()
        except Exception:  # the refusal stands; what was not sent stays pending, retried
            self._ensure_flusher()
            return False
        return True

    async def _redis_acquire(self, keys, args, spend):
        # What was spent and admitted while Redis was unreachable is counted before anything more.
        loop_id = id(asyncio.get_running_loop())
        if self._debts:
            self._paying[loop_id] = asyncio.ensure_future(self._pay_debts())
        paying = self._paying.get(loop_id)
        if paying is not None and not paying.done():  # nothing passes before the debts
            await asyncio.shield(paying)
        elif paying is not None:  # paid, or failed and its debts restored for a next try
            del self._paying[loop_id]
        while spend is not None and spend.key in self._unreconciled:
            await self._flush_once()
        return await self._eval("acquire", keys, args)

    def _undo_late(self, task: asyncio.Task, spend, lease: str, deadline_ms: float) -> None:
        """The script of a request that gave up (503, fallback, or the client went away) is
        done: admitted, its reservation is given back. With no answer (the reply was lost,
        the connection timed out, a resend arrived past the deadline) Redis may have admitted
        it all the same: once the script's deadline has passed, so that it can no longer
        be, its lease is released if it exists, with its reservation (it stayed counted,
        kept alive by this process's heartbeat)."""
        if spend is None:
            return
        out = None if task.cancelled() or task.exception() is not None else task.result()
        if out is not None and int(out[0]) == 0 and int(out[1]) == 0:
            self._hold(spend.key)
            self._release(spend.key, lease, spend.reserve, out[4])
            self._add_pending(spend.key, -spend.reserve)
        elif out is None or int(out[0]) == -1:
            delay = deadline_ms / 1000 - time.time() + 2 * self.CLOCK_MARGIN_S
            asyncio.get_running_loop().call_later(
                max(0.0, delay), self._release_unsure, spend.key, lease, spend.reserve
            )

    def _release_unsure(self, key: str, lease: str, reserved: float) -> None:
        self._release(key, lease, reserved, UNSURE)
        self._add_pending(key, 0.0)

    def _hold(self, key: str) -> None:
        """A reservation Redis admitted: beat on its counter until it is released there."""
        self._leased[key] = self._leased.get(key, 0) + 1
        loop = asyncio.get_running_loop()
        task = self._beats.get(id(loop))
        if task is None or task.done():
            self._beats[id(loop)] = loop.create_task(self._beat())

    def _release(self, key: str, lease: str, reserved: float, epoch: str) -> None:
        self._releases.setdefault(key, {})[lease] = (reserved, epoch)

    async def _beat(self) -> None:
        """While this process holds reservations in Redis, its heartbeat on their counters
        every lease/4, so they outlive a request of any length but not a killed process."""
        while self._leased:
            _stop_if_cancelled()
            await asyncio.sleep(self.lease_s / 4)
            keys = list(self._leased)
            sent = time.monotonic()

            async def beat(group, sent=sent):
                epochs = await self._eval("beat", group, [self._pid, int(self.lease_s * 1000)])
                for key, epoch in zip(group, epochs, strict=True):
                    info = self._spend_info.get(key)
                    if info is None:
                        continue
                    if not epoch or epoch != info[2]:
                        # Lost (a restart): a batch rebuilds it from what this process saw,
                        # and this process's reservations become leases there (_saw).
                        self._add_pending(key, 0.0)
                        continue
                    self._check_lapse(key)
                    self._renewed[key] = max(self._renewed.get(key, 0.0), sent)

            try:
                async with asyncio.timeout(self.timeout_s + self.CLOCK_MARGIN_S):
                    await _all(beat(group) for group in _by_slot_group(keys))
            except Exception as exc:  # beats again next time; a lease lapses only after 4
                log.debug("spend heartbeat not sent (%r)", exc)

    def _fallback(self, buckets, spend, now_ms) -> LimitResult:
        start = 0.0
        if spend is not None:
            info = self._spend_info.setdefault(spend.key, [spend.baseline, "0", ""])
            info[0] = spend.baseline
            start = max(spend.baseline, float(info[1]))
        result = self.local.acquire(buckets, spend, now_ms, spend_start=start)
        result.backend = "fallback"
        if result.allowed:
            for b in buckets:
                debt = self._debts.setdefault(b.key, [b.capacity, 0.0, now_ms])
                owed = _drained(debt, now_ms, self.local.share) + b.cost
                debt[:] = [b.capacity, owed, now_ms]
        if result.allowed and spend is not None:
            # Redis counts it when it returns: as a lease while the request is in flight (a
            # plain amount stayed all month if this process was killed before it ended),
            # as its real cost once it has ended (settle).
            spend.lease, spend.epoch = f"q:{self._pid}:{next(self._lease_seq)}", ""
            self._unsent.setdefault(spend.key, {})[spend.lease] = spend.reserve
            self._unreconciled.add(spend.key)
            self._ensure_flusher()
        return result

    async def _pay_debts(self) -> None:
        now_ms = time.time() * 1000
        debts, self._debts = self._debts, {}
        owed = {key: (d[0], _drained(d, now_ms, self.local.share)) for key, d in debts.items()}
        owed = {key: d for key, d in owed.items() if d[1] > 0}
        if not owed:
            return
        paid: set[str] = set()

        async def pay(keys):  # one script per slot group: a Cluster refuses a cross-slot one
            await self._eval("debt", keys, [v for key in keys for v in owed[key]])
            paid.update(keys)

        try:
            await _all(pay(keys) for keys in _by_slot_group(owed))
        finally:
            for key, d in debts.items():  # still owed; the next request tries again
                if key not in paid:
                    self._debts.setdefault(key, d)

    async def _eval(self, name: str, keys, args):
        client = self._client()
        slots = self._slots.get(id(asyncio.get_running_loop()))
        if slots is None:
            return await self._evalsha(client, name, keys, args)
        async with slots:
            return await self._evalsha(client, name, keys, args)

    async def _evalsha(self, client, name: str, keys, args):
        from redis.exceptions import NoScriptError

        script = {"acquire": _ACQUIRE, "settle": _SETTLE, "debt": _DEBT, "beat": _BEAT}[name]
        sha = self._script_sha.get(name)
        if sha is None:  # a Cluster loads it on every primary
            sha = await self._load_once(client, name, script)
        try:
            return await client.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted (or SCRIPT FLUSH, a new primary): load again
            self._script_sha[name] = await client.script_load(script)
            return await client.evalsha(self._script_sha[name], len(keys), *keys, *args)

    async def _load_once(self, client, name: str, script: str) -> str:
        """A burst's first requests share one SCRIPT LOAD (on a Cluster one per master each
        would otherwise outlast the deadline)."""
        key = (id(asyncio.get_running_loop()), name)
        loading = self._loading.get(key)
        if loading is None or (loading.done() and loading.exception() is not None):
            loading = self._loading[key] = asyncio.ensure_future(client.script_load(script))
        sha = await asyncio.shield(loading)
        self._script_sha[name] = sha
        return sha

    async def _unreachable(self, exc: Exception) -> bool:
        """Whether Redis cannot be connected to (fall back) rather than merely slow (503)."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import RedisError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        if isinstance(exc, RedisConnectionError):
            return True
        if not isinstance(exc, TimeoutError | RedisTimeoutError):
            # An error reply (out of memory, a read-only replica...): it cannot count for us.
            return isinstance(exc, RedisError)
        loop = asyncio.get_running_loop()
        probe = self._probes.get(id(loop))
        if probe is None or (probe[0].done() and time.monotonic() - probe[1] > 0.5):
            probe = (loop.create_task(self._probe()), time.monotonic())
            self._probes[id(loop)] = probe
        return await asyncio.shield(probe[0])

    async def _probe(self) -> bool:
        """A fresh TCP connection: refused or timed out means Redis is unreachable."""
        try:
            addresses = await asyncio.wait_for(self._data_nodes(), self.timeout_s)
        except Exception:  # no sentinel names a master: unreachable
            return True
        for host, port, path in addresses:
            try:
                if path:
                    connect = asyncio.open_unix_connection(path)
                else:
                    connect = asyncio.open_connection(host, port)
                _, writer = await asyncio.wait_for(connect, self.timeout_s)
            except (OSError, TimeoutError):
                return True
            writer.close()
        return False

    async def _data_nodes(self) -> list[tuple]:
        """(host, port, unix path) of the servers that hold the counters."""
        client = self._client()
        if self._target.kind == redisurl.SENTINEL:
            host, port = await client.connection_pool.get_master_address()
            return [(host, port, None)]
        if self._target.kind == redisurl.CLUSTER:
            return [(n.host, n.port, None) for n in client.get_primaries()]
        kwargs = client.connection_pool.connection_kwargs
        return [(kwargs.get("host", "localhost"), kwargs.get("port", 6379), kwargs.get("path"))]

    # ------------------------------------------------------------------ settle
    def settle(self, spend: SpendReservation, actual_cost: float, backend: str) -> None:
        """Replace the reservation by the real cost; batched off the request path. Once per
        reservation: a second call (a failure path after the answer was settled) is a no-op."""
        if spend.settled:
            return
        spend.settled = True
        delta = actual_cost - spend.reserve
        if backend == "local":
            self.local.settle(spend, delta)
            return
        if backend == "fallback":
            self.local.settle(spend, delta)
        self._spend_info.setdefault(spend.key, [spend.baseline, "0", ""])
        unsent = self._unsent.get(spend.key, {})
        if spend.lease in unsent:  # admitted during the outage, never sent: the cost alone
            del unsent[spend.lease]
            if not unsent:
                del self._unsent[spend.key]
            delta = actual_cost
        elif spend.lease:
            held = self._held.get(spend.key, {})
            entry = held.pop(spend.lease, None)
            if not held:
                self._held.pop(spend.key, None)
            moves = self._moves.get(spend.key, {})
            if spend.lease in moves:  # not moved: where it was
                epoch = moves.pop(spend.lease)[1]
                if not moves:
                    del self._moves[spend.key]
            elif entry is not None:  # "": being moved, resolved once moved (_registered)
                epoch = entry[1]
                if not entry[2]:
                    self._lapsed.add(spend.lease)
            else:  # admitted during the outage: "" while its batch is unanswered
                epoch = spend.epoch or self._registered.pop(spend.lease, "")
            self._release(spend.key, spend.lease, spend.reserve, epoch)
        self._add_pending(spend.key, delta)

    def _add_pending(self, key: str, delta: float) -> None:
        self._pending[key] = self._pending.get(key, 0.0) + delta
        self._ensure_flusher()

    def _ensure_flusher(self) -> None:
        loop = asyncio.get_running_loop()
        task = self._flusher.get(id(loop))
        if task is None or task.done():
            self._flusher[id(loop)] = loop.create_task(self._flush_soon())

    async def _flush_once(self) -> None:
        """Send what is pending to Redis, one script per slot group. A batch Redis has not
        answered is sent again, alone and with its id, before anything newer for its
        counters; what is not sent stays pending."""
        self._client()
        async with self._locks[id(asyncio.get_running_loop())]:  # one batch at a time
            # Every script of this flush is past its deadline when the flush's bound ends:
            # none can run after a later batch for its counters (its id would be forgotten).
            deadline = self._deadline_ms()
            failures = []
            sent = bool(self._unacked)
            if self._unacked:
                failures += await _settled(
                    self._send(batch, deadline) for batch in list(self._unacked)
                )
            waiting = {key for batch in self._unacked for key in batch.keys}
            ready = set(self._pending) | set(self._releases) | set(self._unsent) | set(self._moves)
            ready -= waiting
            batches = []
            for keys in _by_slot_group(sorted(ready)):
                batch = _Batch(str(next(self._batch_seq)), keys, {}, {}, {})
                for key in keys:
                    batch.deltas[key] = self._pending.pop(key, 0.0)
                    batch.registers[key] = self._unsent.pop(key, {})
                    batch.moves[key] = self._moves.pop(key, {})
                    if key in self._lost_seen:
                        batch.lost_seen[key] = self._lost_seen.pop(key)
                    releases = batch.releases[key] = {}
                    for lease, (reserved, epoch) in self._releases.pop(key, {}).items():
                        self._lapsed.discard(lease)
                        epoch = epoch or self._registered.pop(lease, "")
                        if epoch:
                            releases[lease] = (reserved, epoch)
                        else:  # not a lease yet (cannot be: its batch was answered)
                            self._release(key, lease, reserved, epoch)
                self._unacked.append(batch)  # from now on, sent again until answered
                batches.append(batch)
            failures += await _settled(self._send(batch, deadline) for batch in batches)
            waiting = {key for batch in self._unacked for key in batch.keys}
            self._unreconciled = {
                key
                for key in self._unreconciled
                if key in self._pending or key in self._unsent or key in waiting
            }
            if failures:
                raise failures[0]
            if sent or batches:
                self._mark_up()

    async def _send(self, batch: _Batch, deadline: int) -> None:
        batch.first_sent = batch.first_sent or time.monotonic()
        args = [deadline]
        for key in batch.keys:
            baseline, seen, epoch = self._spend_info[key]
            seen, epoch = batch.lost_seen.get(key, (seen, epoch))
            args += [repr(batch.deltas[key]), repr(baseline), seen, epoch, secrets.token_hex(8)]
            leases = batch.releases[key]
            args.append(len(leases))
            for lease, (reserved, lease_epoch) in leases.items():
                args += [lease, repr(reserved), lease_epoch]
            registers = batch.registers[key]
            args.append(len(registers))
            for lease, reserved in registers.items():
                args += [lease, repr(reserved)]
            moves = batch.moves[key]
            args.append(len(moves))
            for lease, (reserved, lost_epoch) in moves.items():
                args += [lease, repr(reserved), lost_epoch]
        args += [self._pid, int(self.lease_s * 1000), batch.id, SPEND_TTL_S]
        out = await self._eval("settle", batch.keys, args)
        if out and out[0] == -1:
            raise TimeoutError("the script reached Redis after its deadline")
        if batch not in self._unacked:  # answered twice (cannot be: one flush at a time)
            return
        self._unacked.remove(batch)
        for i, key in enumerate(batch.keys):
            epoch = out[2 * i + 1]
            self._saw(key, out[2 * i], epoch, batch.first_sent)
            self._settled_batches[key] = self._settled_batches.get(key, 0) + 1
            settled = self._releases.get(key, {})
            for lease, reserved in batch.registers[key].items():
                if lease in settled:  # ended meanwhile: its release waits for the epoch
                    self._registered[lease] = epoch
                else:
                    self._held.setdefault(key, {})[lease] = [reserved, epoch, True]
                self._hold(key)
            for lease in batch.moves[key]:
                entry = self._held.get(key, {}).get(lease)
                if entry is not None:
                    entry[1] = epoch
                elif lease in settled:
                    self._registered[lease] = epoch
            held = [e for _r, e in batch.releases[key].values() if e != UNSURE]
            left = self._leased.get(key, 0) - len(held)
            if left > 0:
                self._leased[key] = left
            else:
                self._leased.pop(key, None)

    async def _flush_soon(self):
        # Loops until nothing is pending: settlements that arrive while a flush is in flight
        # must not wait for a later request (there may be none, e.g. at the cap), or the
        # counter keeps their reservations and refuses requests below the cap. While Redis
        # is unreachable it keeps trying, so spend made meanwhile reaches Redis when it returns.
        delay = 0.002  # gathers the settlements of requests finishing together
        while True:
            _stop_if_cancelled()
            await asyncio.sleep(delay)
            if not (
                self._pending or self._releases or self._unsent or self._moves or self._unacked
            ):
                return
            try:
                async with asyncio.timeout(self.timeout_s + self.CLOCK_MARGIN_S):
                    await self._flush_once()
                delay = 0.002
            except Exception as exc:
                if await self._unreachable(exc):
                    self._mark_down(exc)
                delay = min(REDIS_RETRY_AFTER_S, max(0.1, delay * 4))
