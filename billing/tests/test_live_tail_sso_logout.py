"""The IdP's single logout closes the live-tail sockets of the sessions it ends, in any
browser, at once (not at the socket's next periodic re-check)."""

# ruff: noqa: F811  (the fixtures imported from orgs' SSO tests are parameters here)
import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from orgs.models import SSOSession
from orgs.tests.test_sso import (  # noqa: F401
    _no_acs_limit,
    _valid,
    acme_sso,
    idp,
    post,
    start,
)

from .test_live_tail_access import _closed_with, _open, _push, _receives, _socket

pytestmark = pytest.mark.django_db(transaction=True)
SLS_URL = "http://testserver/sso/acme/sls/"


def _sso_sign_in(idp, email="dana@acme.test") -> Client:
    client = Client()
    assert (
        post(client, idp.signed_response(**_valid(idp, start(client), name_id=email))).status_code
        == 302
    )
    return client


def _idp_logs_out(idp, email="dana@acme.test"):
    # The IdP's LogoutRequest comes through another browser (the user's IdP session).
    query = idp.signed_logout_request(sls_url=SLS_URL, name_id=email)
    response = Client().get(f"/sso/acme/sls/?{query}")
    assert response.status_code == 302 and response["Location"].startswith(idp.slo_url)


async def test_an_idp_logout_closes_the_ended_sessions_sockets_at_once(acme_sso, idp, alice, org_a):
    dana = await sync_to_async(_sso_sign_in)(idp)
    dana_socket = _socket(dana)
    connected, _ = await dana_socket.connect(timeout=10)
    assert connected
    _, alice_socket = await _open(alice)

    await sync_to_async(_idp_logs_out)(idp)
    assert not await sync_to_async(SSOSession.objects.exists)()
    await _closed_with(dana_socket, 4403)  # before any row is pushed
    await _push(org_a, "req_after_slo")
    await _receives(alice_socket, "req_after_slo")  # others keep their tail
    await alice_socket.disconnect()
