"""Routing strategies: the one registry of them.

The data plane orders deployments with it (routing.order); the control plane reads it for
everything else: the choices of RoutingPolicy.strategy and GatewayConfig.default_strategy
(and so the admin's selects), the dashboard's Routing form, the REST API's enum, and the
check every save makes (services refuse an unknown strategy, naming the allowed ones).

A strategy is a function ``(deps, health, weights) -> deps in the order to try them``:

- ``deps``: the deployments one request may use (one model's, or all of a routing
  policy's models' in the policy's order), never fewer than two;
- ``health``: routing.DeploymentHealth, this process's view of each deployment (observed
  latency, requests in flight, a round-robin counter, and ``rng``, the random source to use
  so tests can seed it);
- ``weights``: a routing policy's weights, public model name -> weight (empty for an org's
  default strategy and for a policy without weights).

routing.order moves cooling deployments (circuit open) last afterwards, whatever the
strategy, so a strategy only says what it prefers.

Adding a strategy is one function, one registry line and a test. For example a strategy
that tries deployments in a uniformly random order:

    def _random(deps, health, weights):
        \"\"\"Any order, uniformly: spreads load with no state at all.\"\"\"
        deps = list(deps)
        health.rng.shuffle(deps)
        return deps

    STRATEGIES = _registry(
        ...
        Strategy("random", "Random", _random),
    )

    # gateway/tests/test_strategies.py
    def test_random_puts_each_deployment_first_about_equally_often():
        health = routing.DeploymentHealth(rng=random.Random(1))
        deps = [_dep(1), _dep(2)]
        firsts = Counter(routing.order("random", deps, health)[0].id for _ in range(10_000))
        assert abs(firsts[1] / 10_000 - 0.5) < 0.02

Nothing else changes: the model fields take their choices from ``choices`` (a callable, so
no migration), and the dashboard, REST, apply_config and the admin accept the new name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.dataplane.routing import DeploymentHealth
    from gateway.dataplane.snapshot import DeploymentInfo

    OrderFn = Callable[[list[DeploymentInfo], DeploymentHealth, Mapping[str, int]], list]

NAME_MAX_LENGTH = 20  # the model fields' max_length
DEFAULT = "failover"


@dataclass(frozen=True, slots=True)
class Strategy:
    name: str  # stored in the database and in config files
    label: str  # shown in the dashboard and the admin
    order: OrderFn


# ------------------------------------------------------------------------------ the strategies
def _failover(deps, health, weights):
    """In the listed order (a model's deployments by priority; a policy's models in order)."""
    return list(deps)


def _round_robin(deps, health, weights):
    """Each request starts one further along the list."""
    start = health.next_rr() % len(deps)
    return deps[start:] + deps[:start]


def _weighted(deps, health, weights):
    """A weighted random order. With a routing policy's weights (model -> weight), the
    policy's models are drawn by those weights, so {"a": 90, "b": 10} sends 90 % of requests
    to a first; a model with weight 0 or no weight is tried only after the weighted ones.
    Within one model (and with no weights at all) deployments are drawn by their own
    Deployment.weight."""
    if not weights:
        return weighted_draw(deps, lambda d: d.weight, health.rng)
    by_model: dict[str, list] = {}
    for d in deps:
        by_model.setdefault(d.model, []).append(d)
    models = weighted_draw(by_model, lambda m: weights.get(m, 0), health.rng)
    return [d for m in models for d in weighted_draw(by_model[m], lambda d: d.weight, health.rng)]


def _cost_optimized(deps, health, weights):
    """Cheapest first (input plus output price per token), then by priority."""
    return sorted(deps, key=lambda d: (d.input_cost + d.output_cost, d.priority))


def _latency_optimized(deps, health, weights):
    """Fastest observed first; unmeasured deployments sort first so they get measured."""
    return sorted(deps, key=lambda d: health.get(d.id).ewma_ms or 0.0)


def _least_busy(deps, health, weights):
    """Fewest requests in flight in this process first."""
    return sorted(deps, key=lambda d: health.get(d.id).in_flight)


def _smart(deps, health, weights):
    """Smart routing picks a tier per prompt (gateway.dataplane.smart) before any
    strategy runs; where no prompt is scored (embeddings), the tiers are tried in order."""
    return list(deps)


def _registry(*strategies: Strategy) -> dict[str, Strategy]:
    out = {}
    for s in strategies:
        if s.name in out or not s.name.isidentifier() or len(s.name) > NAME_MAX_LENGTH:
            raise ValueError(f"strategy name {s.name!r}: unique, a-z0-9_, {NAME_MAX_LENGTH} max")
        out[s.name] = s
    return out


STRATEGIES: dict[str, Strategy] = _registry(
    Strategy("failover", "Failover", _failover),
    Strategy("round_robin", "Round robin", _round_robin),
    Strategy("weighted", "Weighted (A/B)", _weighted),
    Strategy("cost_optimized", "Cost optimized", _cost_optimized),
    Strategy("latency_optimized", "Latency optimized", _latency_optimized),
    Strategy("least_busy", "Least busy", _least_busy),
    Strategy("smart", "Smart (by prompt difficulty)", _smart),
)


# ------------------------------------------------------------------------------ for the control plane
def choices() -> list[tuple[str, str]]:
    """(name, label) of every strategy, for model fields, forms and serializers."""
    return [(s.name, s.label) for s in STRATEGIES.values()]


def error_for(name: object) -> str | None:
    """Why ``name`` is not a strategy (a message naming the allowed ones), or None if it is."""
    if isinstance(name, str) and name in STRATEGIES:
        return None
    shown = repr(name) if len(repr(name)) <= 60 else repr(name)[:57] + "..."
    return f"Unknown strategy {shown}; use one of {', '.join(STRATEGIES)}."


# ------------------------------------------------------------------------------ helpers
def weighted_draw(items: Iterable, weight: Callable[[object], float], rng) -> list:
    """``items`` in a weighted random order without replacement: each next one is drawn with
    probability weight / the remaining total. Items of weight 0 (or less) come last, in
    their given order."""
    pool = list(items)
    out = []
    while pool:
        ws = [max(weight(x), 0) for x in pool]
        total = sum(ws)
        if total <= 0:
            out.extend(pool)
            break
        pick = rng.random() * total
        chosen, acc = None, 0.0
        for i, w in enumerate(ws):
            acc += w
            if w and pick < acc:
                chosen = i
                break
        if chosen is None:  # float rounding put pick at the total: the last weighted item
            chosen = max(i for i, w in enumerate(ws) if w)
        out.append(pool.pop(chosen))
    return out
