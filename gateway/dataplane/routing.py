"""Choosing deployments: strategies, circuit breaker, observed latency, in-flight counts."""

import itertools
import random
import time
from dataclasses import dataclass

from .snapshot import DeploymentInfo

STRATEGIES = (
    "failover",
    "round_robin",
    "weighted",
    "cost_optimized",
    "latency_optimized",
    "least_busy",
)
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

    def __init__(self):
        self._health: dict[int, Health] = {}
        self._rr = itertools.count()

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
    strategy: str, deps: list[DeploymentInfo], health: DeploymentHealth
) -> list[DeploymentInfo]:
    """Order one model's (or one policy's) deployments by strategy; cooling ones go last."""
    if len(deps) > 1:
        if strategy == "round_robin":
            start = health.next_rr() % len(deps)
            deps = deps[start:] + deps[:start]
        elif strategy == "weighted":
            deps = _weighted_order(deps)
        elif strategy == "cost_optimized":
            deps = sorted(deps, key=lambda d: (d.input_cost + d.output_cost, d.priority))
        elif strategy == "latency_optimized":
            # Unmeasured deployments sort first so they get measured.
            deps = sorted(deps, key=lambda d: health.get(d.id).ewma_ms or 0.0)
        elif strategy == "least_busy":
            deps = sorted(deps, key=lambda d: health.get(d.id).in_flight)
    healthy = [d for d in deps if not health.cooling(d.id)]
    return healthy + [d for d in deps if health.cooling(d.id)]


def _weighted_order(deps: list[DeploymentInfo]) -> list[DeploymentInfo]:
    pool = list(deps)
    out = []
    while pool:
        total = sum(max(d.weight, 0) for d in pool)
        if total <= 0:
            out.extend(pool)
            break
        pick = random.uniform(0, total)
        acc = 0.0
        for i, d in enumerate(pool):
            acc += max(d.weight, 0)
            if pick <= acc:
                out.append(pool.pop(i))
                break
        else:
            out.append(pool.pop())
    return out
