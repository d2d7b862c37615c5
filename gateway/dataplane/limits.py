"""Rate limits (RPM/TPM token buckets) and spend-cap reservations.

With Redis: one atomic script per request checks every bucket and the spend cap and
consumes only if all pass, so 2N concurrent requests against a limit of N let exactly
N through across processes. Without Redis, or while it is down, the same algorithm
runs per process and the request is still served.
"""

import asyncio
import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger("bonito.gateway.limits")

WINDOW_MS = 60_000
REDIS_RETRY_AFTER_S = 5.0

_SCRIPT = """
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
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
  state[i] = {tokens, cost}
  if cost > tokens and failed == 0 then
    failed = i
    if cost > cap then wait = 60000 else wait = (cost - tokens) / rate end
  end
end
local has_spend = tonumber(ARGV[idx])
local spend_failed, spent = 0, '0'
if has_spend == 1 then
  local skey = KEYS[n + 1]
  local cap, reserve, baseline, ttl = tonumber(ARGV[idx + 1]), ARGV[idx + 2], ARGV[idx + 3], tonumber(ARGV[idx + 4])
  local cur = redis.call('GET', skey)
  if not cur then cur = baseline; redis.call('SET', skey, baseline, 'EX', ttl) end
  spent = cur
  if tonumber(cur) >= cap then spend_failed = 1 end
  if failed == 0 and spend_failed == 0 then spent = redis.call('INCRBYFLOAT', skey, reserve) end
end
local remaining = {}
for i = 1, n do
  local left = state[i][1]
  if failed == 0 and spend_failed == 0 then
    left = left - state[i][2]
    redis.call('HSET', KEYS[i], 't', tostring(left), 'ts', tostring(now))
    redis.call('PEXPIRE', KEYS[i], 120000)
  end
  remaining[i] = math.floor(left)
end
return {failed, spend_failed, math.ceil(wait), tostring(spent), unpack(remaining)}
"""


@dataclass(slots=True)
class Bucket:
    key: str
    capacity: int
    cost: int
    label: str  # "requests" or "tokens", with the scope: "key requests", "org tokens"


@dataclass(slots=True)
class SpendReservation:
    org_id: int
    cap: float
    reserve: float
    baseline: float  # settled month-to-date spend known to the snapshot

    @property
    def key(self) -> str:
        return f"bonito:spend:{self.org_id}:{time.strftime('%Y%m', time.gmtime())}"


@dataclass(slots=True)
class LimitResult:
    allowed: bool
    failed: Bucket | None = None
    spend_exceeded: bool = False
    retry_after_s: float = 0.0
    remaining: dict = field(default_factory=dict)  # bucket label -> tokens left
    spent: float = 0.0
    backend: str = "local"


class LocalLimiter:
    """Per-process buckets and spend counters (embedded default and Redis fallback)."""

    def __init__(self):
        self._buckets: dict[str, tuple[float, float]] = {}
        self._spend: dict[str, float] = {}

    def acquire(
        self, buckets: list[Bucket], spend: SpendReservation | None, now_ms: float
    ) -> LimitResult:
        states = []
        for b in buckets:
            tokens, ts = self._buckets.get(b.key, (b.capacity, now_ms))
            tokens = min(b.capacity, tokens + max(0.0, now_ms - ts) * b.capacity / WINDOW_MS)
            states.append(tokens)
            if b.cost > tokens:
                wait = (
                    WINDOW_MS
                    if b.cost > b.capacity
                    else (b.cost - tokens) / (b.capacity / WINDOW_MS)
                )
                return LimitResult(
                    False,
                    failed=b,
                    retry_after_s=wait / 1000,
                    remaining={x.label: int(s) for x, s in zip(buckets, states, strict=False)},
                )
        spent = 0.0
        if spend is not None:
            spent = self._spend.setdefault(spend.key, spend.baseline)
            if spent >= spend.cap:
                return LimitResult(
                    False, spend_exceeded=True, spent=spent, retry_after_s=_seconds_to_next_month()
                )
            self._spend[spend.key] = spent = spent + spend.reserve
        remaining = {}
        for b, tokens in zip(buckets, states, strict=True):
            self._buckets[b.key] = (tokens - b.cost, now_ms)
            remaining[b.label] = int(tokens - b.cost)
        return LimitResult(True, remaining=remaining, spent=spent)

    def settle(self, spend: SpendReservation, delta: float) -> None:
        if spend.key in self._spend:
            self._spend[spend.key] += delta


def _seconds_to_next_month() -> float:
    t = time.gmtime()
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    import calendar

    return max(1.0, calendar.timegm((year, month, 1, 0, 0, 0)) - time.time())


class Limiter:
    """Redis when configured and reachable, the local limiter otherwise."""

    def __init__(self, redis_url: str = ""):
        self.redis_url = redis_url
        self.local = LocalLimiter()
        self._clients: dict[int, object] = {}  # per event loop
        self._script_sha: str | None = None
        self._down_until = 0.0
        self._pending: dict[str, float] = {}
        self._flusher: dict[int, asyncio.Task] = {}

    def _client(self):
        import redis.asyncio as aioredis

        loop_id = id(asyncio.get_running_loop())
        client = self._clients.get(loop_id)
        if client is None:
            client = aioredis.Redis.from_url(
                self.redis_url,
                socket_timeout=1.0,
                socket_connect_timeout=0.25,
                max_connections=64,
                decode_responses=True,
            )
            self._clients[loop_id] = client
        return client

    def redis_available(self) -> bool:
        return bool(self.redis_url) and time.monotonic() >= self._down_until

    def _mark_down(self, exc: Exception) -> None:
        if time.monotonic() >= self._down_until:
            log.warning(
                "Redis unavailable (%s); using per-process limits for %ss",
                type(exc).__name__,
                REDIS_RETRY_AFTER_S,
            )
        self._down_until = time.monotonic() + REDIS_RETRY_AFTER_S

    async def acquire(self, buckets: list[Bucket], spend: SpendReservation | None) -> LimitResult:
        now_ms = time.time() * 1000
        if not self.redis_available():
            return self.local.acquire(buckets, spend, now_ms)
        keys = [b.key for b in buckets]
        args: list = [int(now_ms), len(buckets)]
        for b in buckets:
            args += [b.capacity, b.cost]
        if spend is not None:
            keys.append(spend.key)
            args += [1, spend.cap, repr(spend.reserve), repr(spend.baseline), 40 * 86400]
        else:
            args.append(0)
        try:
            out = await self._eval(keys, args)
        except Exception as exc:  # any Redis failure: serve with local limits
            self._mark_down(exc)
            return self.local.acquire(buckets, spend, now_ms)
        failed, spend_failed, wait_ms, spent = int(out[0]), int(out[1]), int(out[2]), float(out[3])
        remaining = {b.label: int(v) for b, v in zip(buckets, out[4:], strict=False)}
        if failed:
            return LimitResult(
                False,
                failed=buckets[failed - 1],
                retry_after_s=wait_ms / 1000,
                remaining=remaining,
                backend="redis",
            )
        if spend_failed:
            return LimitResult(
                False,
                spend_exceeded=True,
                spent=spent,
                retry_after_s=_seconds_to_next_month(),
                backend="redis",
            )
        return LimitResult(True, remaining=remaining, spent=spent, backend="redis")

    async def _eval(self, keys, args):
        client = self._client()
        if self._script_sha is None:
            self._script_sha = await client.script_load(_SCRIPT)
        try:
            return await client.evalsha(self._script_sha, len(keys), *keys, *args)
        except Exception as exc:
            if "NOSCRIPT" not in str(exc):
                raise
            self._script_sha = await client.script_load(_SCRIPT)
            return await client.evalsha(self._script_sha, len(keys), *keys, *args)

    def settle(self, spend: SpendReservation, actual_cost: float, backend: str) -> None:
        """Replace the reservation by the real cost; batched off the request path."""
        delta = actual_cost - spend.reserve
        if backend != "redis":
            self.local.settle(spend, delta)
            return
        self._pending[spend.key] = self._pending.get(spend.key, 0.0) + delta
        loop = asyncio.get_running_loop()
        task = self._flusher.get(id(loop))
        if task is None or task.done():
            self._flusher[id(loop)] = loop.create_task(self._flush_soon())

    async def _flush_soon(self):
        # Loops until nothing is pending: settlements that arrive while a flush is in flight
        # must not wait for a later request (there may be none, e.g. at the cap), or the
        # counter keeps their reservations and refuses requests below the cap.
        delay = 0.002  # gathers the settlements of requests finishing together
        while True:
            await asyncio.sleep(delay)
            pending, self._pending = self._pending, {}
            if not pending:
                return
            try:
                pipe = self._client().pipeline(transaction=False)
                for key, delta in pending.items():
                    pipe.incrbyfloat(key, delta)
                await pipe.execute()
                delay = 0.002
            except Exception as exc:
                self._mark_down(exc)
                for key, delta in pending.items():  # keep them, retry shortly
                    self._pending[key] = self._pending.get(key, 0.0) + delta
                delay = min(REDIS_RETRY_AFTER_S, max(0.1, delay * 4))
