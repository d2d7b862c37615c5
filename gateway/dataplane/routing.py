"""Choosing deployments: the strategies (strategies.py), circuit breaker, observed latency,
in-flight counts."""

import logging
import random
import time
from collections import OrderedDict
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass

from core import strategies

from .snapshot import DeploymentInfo

log = logging.getLogger("bonito.gateway.routing")

FAILURES_TO_OPEN = 3
COOLDOWN_S = 30.0
EWMA_ALPHA = 0.3
# Round-robin counters a process keeps (one per set of deployments ordered); past this the
# least recently used is dropped, so no mix of keys and models grows them without bound.
MAX_TURN_SETS = 4096

# What order() is ordering while its strategy runs: the deployments, and whether the
# ordering takes a round-robin turn (a list ordered only as failover candidates does not).
# Strategies keep their (deps, health, weights) signature; a ContextVar keeps concurrent
# requests (tasks, threads) apart.
_ordering: ContextVar[tuple[list, bool] | None] = ContextVar("bonito_ordering", default=None)


@dataclass(slots=True)
class Health:
    consecutive_failures: int = 0
    open_until: float = 0.0
    ewma_ms: float | None = None
    in_flight: int = 0


class DeploymentHealth:
    """Per-process view of how each deployment is doing. Shared by all requests."""

    def __init__(self, rng: random.Random | None = None):
        self._health: dict[int, Health] = {}
        # Round robin: one counter per set of deployments (ids), so each model's (each tier's,
        # each policy's; a key allowed only some of them: that subset's) deployments take
        # turns whatever other traffic the process serves.
        self._turns: OrderedDict[tuple[int, ...], int] = OrderedDict()
        # The strategies' random draws: a seeded Random in tests; else the random module,
        # which Python reseeds in every forked worker.
        self.rng = rng if rng is not None else random
        self._unknown_logged: set = set()

    def get(self, dep_id: int) -> Health:
        h = self._health.get(dep_id)
        if h is None:
            h = self._health[dep_id] = Health()
        return h

    def cooling(self, dep_id: int) -> bool:
        return self.get(dep_id).open_until > time.monotonic()

    def success(self, dep_id: int, latency_ms: float) -> None:
        h = self.get(dep_id)
        h.consecutive_failures = 0
        h.open_until = 0.0
        h.ewma_ms = (
            latency_ms
            if h.ewma_ms is None
            else EWMA_ALPHA * latency_ms + (1 - EWMA_ALPHA) * h.ewma_ms
        )

    def failure(self, dep_id: int, retry_after_s: float | None = None) -> None:
        h = self.get(dep_id)
        h.consecutive_failures += 1
        if retry_after_s:
            h.open_until = max(h.open_until, time.monotonic() + min(retry_after_s, COOLDOWN_S))
        if h.consecutive_failures >= FAILURES_TO_OPEN:
            h.open_until = max(h.open_until, time.monotonic() + COOLDOWN_S)

    def next_rr(self) -> int:
        """The round-robin turn of the deployments order() is ordering: how many orderings of
        that same set took a turn before (modulo its size). Taken here unless order() was
        told ``turn=False``: then the set's next request still gets this turn."""
        deps, take = _ordering.get() or ((), True)
        key = tuple(sorted(d.id for d in deps))
        turn = self._turns.get(key, 0)
        if take:
            self._turns[key] = (turn + 1) % max(len(key), 1)
            self._turns.move_to_end(key)
            if len(self._turns) > MAX_TURN_SETS:
                self._turns.popitem(last=False)
        return turn


def order(
    strategy: str,
    deps: list[DeploymentInfo],
    health: DeploymentHealth,
    weights: Mapping[str, int] | None = None,
    *,
    turn: bool = True,
) -> list[DeploymentInfo]:
    """Order one model's (or one policy's) deployments by strategy; cooling ones go last.

    ``weights`` are a routing policy's (public model name -> weight), for ``weighted``.
    ``turn=False``: the list is only failover candidates (smart routing's tiers above the
    chosen one), so it takes no round-robin turn; it comes out as that set's next request
    would have it (its first is the deployment a request of its own would go to)."""
    chosen = strategies.STRATEGIES.get(strategy)
    if chosen is None:
        # The snapshot builder publishes only known strategies; this is a snapshot from
        # elsewhere (an agent's cache written by a newer control plane). Serve, but say so.
        if strategy not in health._unknown_logged:
            health._unknown_logged.add(strategy)
            log.error("unknown routing strategy %r in the snapshot; using failover", strategy)
        chosen = strategies.STRATEGIES[strategies.DEFAULT]
    if len(deps) > 1:
        token = _ordering.set((deps, turn))
        try:
            deps = chosen.order(deps, health, weights or {})
        finally:
            _ordering.reset(token)
    healthy = [d for d in deps if not health.cooling(d.id)]
    return healthy + [d for d in deps if health.cooling(d.id)]
