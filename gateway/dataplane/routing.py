"""Choosing deployments: the strategies (strategies.py), circuit breaker, observed latency,
in-flight counts."""

import itertools
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

from core import strategies

from .snapshot import DeploymentInfo

log = logging.getLogger("bonito.gateway.routing")

FAILURES_TO_OPEN = 3
COOLDOWN_S = 30.0
EWMA_ALPHA = 0.3


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
        self._rr = itertools.count()
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
        return next(self._rr)


def order(
    strategy: str,
    deps: list[DeploymentInfo],
    health: DeploymentHealth,
    weights: Mapping[str, int] | None = None,
) -> list[DeploymentInfo]:
    """Order one model's (or one policy's) deployments by strategy; cooling ones go last.

    ``weights`` are a routing policy's (public model name -> weight), for ``weighted``."""
    chosen = strategies.STRATEGIES.get(strategy)
    if chosen is None:
        # The snapshot builder publishes only known strategies; this is a snapshot from
        # elsewhere (an agent's cache written by a newer control plane). Serve, but say so.
        if strategy not in health._unknown_logged:
            health._unknown_logged.add(strategy)
            log.error("unknown routing strategy %r in the snapshot; using failover", strategy)
        chosen = strategies.STRATEGIES[strategies.DEFAULT]
    if len(deps) > 1:
        deps = chosen.order(deps, health, weights or {})
    healthy = [d for d in deps if not health.cooling(d.id)]
    return healthy + [d for d in deps if health.cooling(d.id)]
