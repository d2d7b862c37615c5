"""Control-plane wiring of the data plane: one Gateway per process."""

from functools import cache

from django.conf import settings
from django.db import connection

from .dataplane import smart
from .dataplane.limits import Limiter
from .dataplane.memory import release_free_memory
from .dataplane.netpolicy import NetworkPolicy
from .dataplane.proxy import Gateway
from .dataplane.state import SnapshotSource
from .dataplane.upstream import Upstreams
from .dataplane.usage import UsageSink


def network_policy() -> NetworkPolicy:
    """Where provider calls and webhooks may go: public addresses and the operator's
    PROVIDER_ALLOWED_NETWORKS."""
    return NetworkPolicy(settings.PROVIDER_ALLOWED_NETWORKS)


def _prewarm(snapshot) -> None:
    kinds = {
        d.kind for org in snapshot.orgs.values() for deps in org.deployments.values() for d in deps
    }
    # In a thread: this runs before the snapshot goes live, and litellm's import takes
    # seconds; the pass-through serves meanwhile, LiteLLM-path requests wait for it.
    gateway().upstreams.prewarm(kinds, background=True)
    smart.prewarm(snapshot)  # the learned classifier's model, if a policy uses it


@cache
def snapshots() -> SnapshotSource:
    """This process's current snapshot: the refresher publishes it, the Gateway reads it
    (the refresher starts when the Gateway first needs a snapshot)."""
    return SnapshotSource(starter=lambda: refresher().start())


@cache
def refresher():
    from .snapshot_builder import SnapshotRefresher

    return SnapshotRefresher(
        snapshots(), interval=settings.GATEWAY_SNAPSHOT_POLL_S, on_publish=_prewarm
    )


# Where finished-request records are stored: set at start-up by the app that owns the usage
# table (billing.apps), which sits above the gateway.
_usage_writer: dict = {}


def use_usage_writer(write, *, is_refusal, feedback=None) -> None:
    """``feedback(org_id, request_id, score) -> rows rated``: stores POST /v1/feedback."""
    _usage_writer.update(write=write, is_refusal=is_refusal, feedback=feedback)


@cache
def gateway() -> Gateway:
    write_usage, is_refusal = _usage_writer["write"], _usage_writer["is_refusal"]
    return Gateway(
        snapshots=snapshots(),
        limiter=Limiter(
            settings.GATEWAY_REDIS_URL,
            timeout_s=settings.GATEWAY_REDIS_TIMEOUT_S,
            fallback_share=settings.GATEWAY_FALLBACK_SHARE,
            max_connections=settings.GATEWAY_REDIS_MAX_CONNECTIONS,
            lease_s=settings.GATEWAY_SPEND_LEASE_S,
        ),
        sink=UsageSink(
            write_usage,
            settings.GATEWAY_SPOOL_DIR,
            linger=settings.GATEWAY_USAGE_LINGER_S,
            on_stop=close_db_connection,
            on_idle=close_db_connection,
            on_housekeeping=release_free_memory,
            journal_dir=settings.GATEWAY_USAGE_JOURNAL_DIR
            if settings.GATEWAY_USAGE_JOURNAL
            else None,
            dead_letter_dir=settings.GATEWAY_DEAD_LETTER_DIR,
            is_refusal=is_refusal,
        ),
        upstreams=Upstreams(
            passthrough=settings.GATEWAY_PASSTHROUGH,
            network=network_policy(),
            ambient_credentials=settings.PROVIDER_AMBIENT_CREDENTIALS,
        ),
        max_body_bytes=settings.GATEWAY_MAX_BODY_BYTES,
        retry_rounds=settings.GATEWAY_RETRY_ROUNDS,
        feedback=_usage_writer.get("feedback"),
    )


def close_db_connection() -> None:
    connection.close()


def startup() -> None:
    """At server start (ASGI lifespan): the usage sink's thread starts and stores the
    records left in the journals of processes that stopped without storing them, and the
    snapshot refresher starts, so the first snapshot (and what it prewarms: litellm's
    import, the learned classifier's model) is ready before the first request, not built
    for it (a new worker's first smart-routed request waited a second for the model)."""
    gateway().sink.start()
    refresher().start()


def shutdown() -> None:
    """Stop this process's background threads (they close their DB connections); the
    usage sink writes what is queued first (ASGI lifespan shutdown, after the last
    response)."""
    if refresher.cache_info().currsize:
        refresher().stop()
    if gateway.cache_info().currsize:
        gateway().sink.stop()
