"""An open live-tail socket stops as soon as its user may no longer read the org's logs."""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from billing import live
from billing.live import publish_usage
from bonito.asgi import application
from orgs import services
from orgs.audit import Actor
from orgs.models import Membership, Role

from .test_live_tail import _record

pytestmark = pytest.mark.django_db(transaction=True)
ADMIN = Actor(via="admin")


def _signed_in(user):
    client = Client()
    client.force_login(user)
    return client


def _socket(client, slug="acme"):
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    return WebsocketCommunicator(
        application,
        f"/ws/o/{slug}/logs/",
        headers=[(b"cookie", cookie), (b"origin", b"http://localhost"), (b"host", b"localhost")],
    )


async def _open(user):
    client = await sync_to_async(_signed_in)(user)
    socket = _socket(client)
    connected, _ = await socket.connect(timeout=10)
    assert connected
    return client, socket


async def _push(org, request_id):
    await sync_to_async(publish_usage)([_record(org, request_id=request_id)])


async def _closed_with(socket, code):
    message = await socket.receive_output(timeout=5)
    assert message == {"type": "websocket.close", "code": code}


async def _receives(socket, request_id):
    message = await socket.receive_json_from(timeout=5)
    assert [r["request_id"] for r in message["rows"]] == [request_id]


@pytest.fixture
def spy(monkeypatch):
    """Counts membership re-checks (each one is the only DB work a socket does)."""
    calls = []
    real = live.tail_allowed

    def counting(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(live, "tail_allowed", counting)
    return calls


async def test_a_removed_member_is_cut_off_while_others_keep_receiving(alice, bob, org_a):
    _, alice_socket = await _open(alice)
    _, bob_socket = await _open(bob)
    membership = await sync_to_async(Membership.objects.get)(user=bob)
    await sync_to_async(services.membership_remove)(actor=ADMIN, membership=membership)

    await _closed_with(bob_socket, 4403)  # at once, before any row
    await _push(org_a, "req_after_removal")
    await _receives(alice_socket, "req_after_removal")
    assert await bob_socket.receive_nothing(timeout=0.3)
    await alice_socket.disconnect()


async def test_a_removed_member_gets_no_row_even_without_the_nudge(alice, bob, org_a, monkeypatch):
    # With the channel-layer nudge lost, the version check before the push still stops it.
    from orgs import access

    monkeypatch.setattr(access, "group_send", lambda messages: None)
    _, bob_socket = await _open(bob)
    membership = await sync_to_async(Membership.objects.get)(user=bob)
    await sync_to_async(services.membership_remove)(actor=ADMIN, membership=membership)
    await _push(org_a, "req_after_removal")
    await _closed_with(bob_socket, 4403)


async def test_a_demoted_member_is_cut_off_when_the_role_may_not_read_logs(
    alice, bob, org_a, monkeypatch
):
    monkeypatch.setattr(live, "TAIL_ROLE", Role.MEMBER)
    _, bob_socket = await _open(bob)
    membership = await sync_to_async(Membership.objects.get)(user=bob)
    await sync_to_async(services.membership_set_role)(
        actor=ADMIN, membership=membership, role=Role.VIEWER
    )
    await _closed_with(bob_socket, 4403)


async def test_a_demotion_that_keeps_log_access_keeps_the_socket(alice, bob, org_a, spy):
    _, bob_socket = await _open(bob)
    membership = await sync_to_async(Membership.objects.get)(user=bob)
    await sync_to_async(services.membership_set_role)(
        actor=ADMIN, membership=membership, role=Role.VIEWER
    )
    await _push(org_a, "req_viewer")
    await _receives(bob_socket, "req_viewer")  # viewers read logs
    assert len(spy) >= 2  # re-checked after the change
    await bob_socket.disconnect()


async def test_a_deactivated_user_is_cut_off(alice, bob, org_a):
    _, bob_socket = await _open(bob)
    await sync_to_async(services.user_update)(actor=ADMIN, user=bob, is_active=False)
    await _closed_with(bob_socket, 4403)


async def test_signing_out_closes_the_session_s_sockets(alice, bob, org_a):
    client, bob_socket = await _open(bob)
    _, alice_socket = await _open(alice)
    await sync_to_async(client.logout)()
    await _closed_with(bob_socket, 4403)
    await _push(org_a, "req_after_logout")
    await _receives(alice_socket, "req_after_logout")
    await alice_socket.disconnect()


async def test_a_deleted_org_closes_its_sockets(alice, org_a):
    _, socket = await _open(alice)
    await sync_to_async(services.org_delete)(actor=ADMIN, org=org_a)
    await _closed_with(socket, 4403)


async def test_pushes_make_no_query_while_nothing_changed(alice, bob, org_a, spy):
    _, socket = await _open(bob)
    connect_checks = len(spy)
    for n in range(5):
        await _push(org_a, f"req_{n}")
        await _receives(socket, f"req_{n}")
    assert len(spy) == connect_checks  # no re-check, so no query, per pushed row
    # A change to another org does not make Acme's sockets re-check either.
    await sync_to_async(services.membership_add)(actor=ADMIN, org=await _globex(), user=bob)
    await _push(org_a, "req_more")
    await _receives(socket, "req_more")
    assert len(spy) == connect_checks
    await socket.disconnect()


async def test_the_recheck_runs_no_more_than_the_interval_when_idle(
    alice, bob, org_a, spy, monkeypatch
):
    monkeypatch.setattr(live, "RECHECK_S", 0.0)  # every push is past the interval
    _, socket = await _open(bob)
    before = len(spy)
    await _push(org_a, "req_x")
    await _receives(socket, "req_x")
    assert len(spy) == before + 1
    await socket.disconnect()


@sync_to_async
def _globex():
    return services.org_create(actor=ADMIN, name="Globex", slug="globex")


async def test_a_password_set_by_an_admin_closes_the_user_s_sockets(alice, bob, org_a):
    _, bob_socket = await _open(bob)
    await sync_to_async(services.user_set_password)(actor=ADMIN, user=bob, password="new-pass-123")
    await _closed_with(bob_socket, 4403)
