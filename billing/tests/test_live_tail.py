"""The Logs page's live tail over a WebSocket (channels)."""

import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from billing.live import publish_usage
from bonito.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


def _record(org, **extra):
    return {
        "id": "6f1c3f0e-0000-4000-8000-000000000001",
        "org_id": org.id,
        "key_id": None,
        "created_at": time.time(),
        "status": "success",
        "http_status": 200,
        "error_type": "",
        "model_requested": "chat-small",
        "model_used": "chat-small",
        "provider": "fake",
        "input_tokens": 3,
        "output_tokens": 2,
        "cost": 0.001,
        "latency_ms": 12,
        "request_id": "req_live",
        **extra,
    }


def _socket(user, slug, origin=b"http://localhost"):
    client = Client()
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    return WebsocketCommunicator(
        application,
        f"/ws/o/{slug}/logs/",
        headers=[(b"cookie", cookie), (b"origin", origin), (b"host", b"localhost")],
    )


async def test_new_rows_reach_the_org_s_open_sockets(alice, org_a, org_b):
    socket = await sync_to_async(_socket)(alice, "acme")
    connected, _ = await socket.connect(timeout=10)
    assert connected
    await sync_to_async(publish_usage)([_record(org_b, request_id="req_other_org"), _record(org_a)])
    message = await socket.receive_json_from(timeout=5)
    assert [r["request_id"] for r in message["rows"]] == ["req_live"]  # only Acme's rows
    assert "prompt" not in str(message)
    await socket.disconnect()


async def test_charlie_cannot_tail_alices_org(charlie, org_a):
    socket = await sync_to_async(_socket)(charlie, "acme")
    connected, code = await socket.connect(timeout=10)
    assert not connected and code == 4404


async def test_anonymous_sockets_are_refused(org_a):
    socket = WebsocketCommunicator(
        application,
        "/ws/o/acme/logs/",
        headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")],
    )
    connected, _ = await socket.connect(timeout=10)
    assert not connected


async def test_a_foreign_origin_is_refused(alice, org_a):
    socket = await sync_to_async(_socket)(alice, "acme", origin=b"http://evil.example.com")
    connected, _ = await socket.connect(timeout=10)
    assert not connected


async def test_tailed_rows_carry_the_key_s_name_as_a_reload_shows_it(alice, org_a):
    from billing import live
    from gateway import services
    from gateway.tests.conftest import ACTOR

    key, _raw = await sync_to_async(services.api_key_create)(
        actor=ACTOR, org=org_a, name="billing-app"
    )
    # Names are cached by id for a minute; an earlier test's key may have had this id (the
    # test database reuses ids after a rollback).
    live._names.clear()
    socket = await sync_to_async(_socket)(alice, "acme")
    connected, _ = await socket.connect(timeout=10)
    assert connected
    await sync_to_async(publish_usage)(
        [_record(org_a, key_id=key.id), _record(org_a, key_id=987654, request_id="req_gone")]
    )
    rows = (await socket.receive_json_from(timeout=5))["rows"]
    assert [(r["key_id"], r["key_name"]) for r in rows] == [(key.id, "billing-app"), (987654, None)]
    await socket.disconnect()
