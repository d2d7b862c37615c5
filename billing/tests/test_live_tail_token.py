"""The live tail for token clients (the CLI's `logs --follow`): a personal access token in
the handshake's Authorization header, with the same org and role checks as a session."""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from billing.live import publish_usage
from billing.tests.test_live_tail import _record
from bonito.asgi import application
from gateway.tests.conftest import ACTOR
from orgs import services as org_services
from orgs.models import Membership, Role

pytestmark = pytest.mark.django_db(transaction=True)


def _pat(user, org):
    return org_services.pat_create(actor=ACTOR, user=user, org=org, name="cli")


def _socket(slug, headers=(), path_suffix=""):
    return WebsocketCommunicator(
        application, f"/ws/o/{slug}/logs/{path_suffix}", headers=[(b"host", b"localhost"), *headers]
    )


def _bearer(raw):
    return (b"authorization", f"Bearer {raw}".encode())


# Handshakes wait up to 10 s (channels' default is 1 s): each runs the consumer's
# database checks in a thread, which a loaded test machine has taken longer than 1 s to
# schedule; how long a handshake takes is not what these tests check.
async def _refused(socket) -> int | None:
    connected, code = await socket.connect(timeout=10)
    assert not connected
    return code


async def test_a_valid_token_gets_its_org_s_rows_only(bob, org_a, org_b, vera):
    _token, raw = await sync_to_async(_pat)(bob, org_a)
    socket = _socket("acme", [_bearer(raw)])
    connected, _ = await socket.connect(timeout=10)
    assert connected
    await sync_to_async(publish_usage)(
        [_record(org_b, request_id="req_other_org"), _record(org_a, request_id="req_mine")]
    )
    rows = (await socket.receive_json_from(timeout=5))["rows"]
    assert [r["request_id"] for r in rows] == ["req_mine"]
    assert await socket.receive_nothing(timeout=0.3)
    await socket.disconnect()
    # a viewer reads logs too (the Logs page's role)
    _token, raw = await sync_to_async(_pat)(vera, org_a)
    viewer = _socket("acme", [_bearer(raw)])
    assert (await viewer.connect(timeout=10))[0]
    await viewer.disconnect()


@pytest.mark.parametrize(
    "header",
    [
        b"Bearer pat-nope",
        b"Bearer ",
        b"Basic Ym9iOnB3",
        b"bearer bn-0123456789",
    ],
)
async def test_a_wrong_token_is_refused(org_a, header):
    assert await _refused(_socket("acme", [(b"authorization", header)])) == 4404


async def test_a_revoked_token_is_refused_and_an_open_socket_cut_off(bob, org_a):
    token, raw = await sync_to_async(_pat)(bob, org_a)
    socket = _socket("acme", [_bearer(raw)])
    assert (await socket.connect(timeout=10))[0]
    other, other_raw = await sync_to_async(_pat)(bob, org_a)
    kept = _socket("acme", [_bearer(other_raw)])
    assert (await kept.connect(timeout=10))[0]
    # The revocation announces itself (orgs.access): the socket closes at once, without a
    # row to push and long before its periodic re-check (RECHECK_S); another token's
    # socket stays open and gets the next row.
    await sync_to_async(org_services.pat_revoke)(actor=ACTOR, token=token)
    out = await socket.receive_output(timeout=5)
    assert out["type"] == "websocket.close" and out["code"] == 4403
    assert await _refused(_socket("acme", [_bearer(raw)])) == 4404
    await sync_to_async(publish_usage)([_record(org_a, request_id="req_after")])
    rows = (await kept.receive_json_from(timeout=5))["rows"]
    assert [r["request_id"] for r in rows] == ["req_after"]
    await kept.disconnect()


async def test_another_org_s_member_s_token_is_refused(charlie, org_a, org_b):
    _token, raw = await sync_to_async(_pat)(charlie, org_b)
    assert await _refused(_socket("acme", [_bearer(raw)])) == 4404
    # and a token opens only its own org's tail, even for a member of both
    await sync_to_async(Membership.objects.create)(user=charlie, org=org_a, role=Role.ADMIN)
    assert await _refused(_socket("acme", [_bearer(raw)])) == 4404


async def test_a_token_whose_member_left_the_org_is_refused(bob, org_a):
    _token, raw = await sync_to_async(_pat)(bob, org_a)
    await sync_to_async(Membership.objects.filter(user=bob, org=org_a).delete)()
    assert await _refused(_socket("acme", [_bearer(raw)])) == 4404


async def test_a_token_in_the_query_string_is_not_accepted(bob, org_a):
    _token, raw = await sync_to_async(_pat)(bob, org_a)
    for suffix in (f"?token={raw}", f"?access_token={raw}", f"?authorization=Bearer%20{raw}"):
        # without an Origin: no page, no token header; with one: no session
        assert await _refused(_socket("acme", path_suffix=suffix)) not in (4404, 4403)
        page = _socket("acme", [(b"origin", b"http://localhost")], path_suffix=suffix)
        assert await _refused(page) == 4404


async def test_a_token_client_ignores_a_session_cookie_and_a_page_still_needs_its_origin(
    alice, org_a
):
    from django.test import Client

    client = Client()
    await sync_to_async(client.force_login)(alice)
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    # a session without Origin (not a page) and without a token: refused before the consumer
    assert await _refused(_socket("acme", [cookie])) not in (4404, 4403)
    # a session plus a bad token: the token decides
    assert await _refused(_socket("acme", [cookie, _bearer("pat-nope")])) == 4404
