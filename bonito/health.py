"""Liveness and readiness of the process and the services it depends on."""

import logging
import os

from django.conf import settings
from django.db import connection
from django.http import JsonResponse

log = logging.getLogger("bonito.health")


def check_database() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return True, connection.vendor
    except Exception as exc:  # any driver error means "not ready"
        return (
            False,
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreachable'}",
        )


def _redis_ping(url: str) -> tuple[bool, str]:
    from core import redisurl

    try:
        client = redisurl.sync_client(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            client.ping()
        finally:
            client.close()
        return True, "ok"
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"


def check_redis() -> tuple[bool, str] | None:
    """None when Redis is not configured (the embedded default)."""
    if not settings.REDIS_URL:
        return None
    return _redis_ping(settings.REDIS_URL)


def check_gateway_redis() -> tuple[bool, str] | None:
    """The limiter's Redis when it is another one (a Cluster): None otherwise."""
    if settings.GATEWAY_REDIS_URL in ("", settings.REDIS_URL):
        return None
    return _redis_ping(settings.GATEWAY_REDIS_URL)


def check_broker() -> tuple[bool, str]:
    url = settings.CELERY_BROKER_URL
    if url.startswith("filesystem://"):
        folder = settings.BROKER_DIR
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return False, f"broker folder {folder}: {exc.strerror}"
        if not os.access(folder, os.W_OK):
            return False, f"broker folder {folder} is not writable"
        return True, "filesystem"
    if url.startswith(("redis://", "rediss://")):
        return _redis_ping(url)
    return True, "not checked"


def system_status() -> dict:
    checks = {"database": check_database(), "broker": check_broker()}
    redis_state = check_redis()
    if redis_state is not None:
        checks["redis"] = redis_state
    gateway_redis = check_gateway_redis()
    if gateway_redis is not None:
        checks["gateway_redis"] = gateway_redis
    return {name: {"ok": ok, "detail": detail} for name, (ok, detail) in checks.items()}


def health(request):
    return JsonResponse({"status": "ok"})


def _public(detail: str) -> str:
    """What anyone may read of a failed check: the error's kind, never its text (a driver's
    message names hosts, ports and paths). The whole is in the log and the admin's page."""
    kind = detail.split(":", 1)[0]
    return kind if kind.isidentifier() else "unavailable"


def check_gateway() -> tuple[bool, str] | None:
    """Whether this process's gateway has a configuration to serve /v1 with; None where it
    does not serve (its snapshot refresher never started: a test, a command). A server whose
    first snapshot could not be built answered every /v1 call 503 gateway_not_ready while
    this said ready (an outside check)."""
    from gateway import runtime

    if not runtime.refresher.cache_info().currsize:
        return None
    if runtime.snapshots().current is None:
        return False, "NotReady: no configuration built yet (see the log)"
    return True, "configured"


def ready(request):
    services = system_status()
    gateway_state = check_gateway()
    if gateway_state is not None:
        services["gateway"] = {"ok": gateway_state[0], "detail": gateway_state[1]}
    failing = [name for name, state in services.items() if not state["ok"]]
    for name in failing:
        log.warning("ready check: %s is down (%s)", name, services[name]["detail"])
    shown = {
        name: state if state["ok"] else {"ok": False, "detail": _public(state["detail"])}
        for name, state in services.items()
    }
    body = {"status": "ready" if not failing else "unavailable", "services": shown}
    if failing:
        body["reason"] = ", ".join(f"{name} is down ({shown[name]['detail']})" for name in failing)
    return JsonResponse(body, status=503 if failing else 200)
