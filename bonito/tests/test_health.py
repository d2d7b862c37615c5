import socket

import pytest


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_health_is_always_200(client):
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_ready_reports_each_service(client):
    response = client.get("/api/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["services"]["database"]["ok"] is True
    assert body["services"]["broker"]["ok"] is True


@pytest.mark.django_db
def test_ready_is_503_with_the_reason_when_redis_is_dead(client, settings):
    dead = f"redis://127.0.0.1:{_closed_port()}/0"
    settings.REDIS_URL = dead
    response = client.get("/api/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["services"]["redis"]["ok"] is False
    assert "redis is down" in body["reason"]
    assert "ConnectionError" in body["reason"]
    # Anyone may call it: the kind of error, never the driver's words (hosts, ports).
    port = dead.rsplit(":", 1)[1].split("/")[0]
    assert port not in response.content.decode() and "127.0.0.1" not in response.content.decode()


@pytest.mark.django_db
def test_ready_is_503_when_the_broker_is_dead(client, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{_closed_port()}/0"
    response = client.get("/api/ready")
    assert response.status_code == 503
    assert "broker is down" in response.json()["reason"]
    assert "127.0.0.1" not in response.content.decode()


@pytest.mark.django_db
def test_ready_names_no_path_of_a_broken_broker_folder(client, settings, tmp_path):
    folder = tmp_path / "not-a-folder"
    folder.write_text("")  # a file where the broker's folder should be
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.BROKER_DIR = folder
    response = client.get("/api/ready")
    assert response.status_code == 503
    assert "broker is down (unavailable)" in response.json()["reason"]
    assert str(tmp_path) not in response.content.decode()


def test_a_foreign_host_header_gets_400(client):
    assert client.get("/api/health", HTTP_HOST="evil.example.com").status_code == 400


def test_localhost_is_allowed_by_default(client):
    assert client.get("/api/health", HTTP_HOST="localhost").status_code == 200


@pytest.mark.django_db
def test_ready_is_503_while_the_gateway_has_no_configuration(client):
    """A server whose first snapshot could not be built answered every /v1 call 503
    gateway_not_ready while /api/ready said ready (an outside check)."""
    from gateway import runtime
    from gateway.snapshot_builder import build_snapshot

    runtime.refresher()  # a serving process: its refresher exists (started at its start)
    source = runtime.snapshots()
    kept = source.current
    source.current = None
    try:
        response = client.get("/api/ready")
        assert response.status_code == 503
        assert response.json()["services"]["gateway"] == {"ok": False, "detail": "NotReady"}
        assert "gateway is down (NotReady)" in response.json()["reason"]
        source.current = build_snapshot()
        ready = client.get("/api/ready")
        assert ready.status_code == 200 and ready.json()["services"]["gateway"]["ok"] is True
    finally:
        source.current = kept
