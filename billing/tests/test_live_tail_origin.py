"""The live tail's WebSocket opens only from a page of Bonito's own origin (scheme, host and
port, default ports normalised) or a CSRF_TRUSTED_ORIGINS entry: another service on the same
host name cannot open it with a visitor's cookies."""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from bonito.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _hosts(settings):
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]", "bonito.example.com"]
    settings.CSRF_TRUSTED_ORIGINS = []


def _cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def _opens(user, host, origins, scheme="ws", extra=()) -> bool:
    headers = [(b"cookie", await sync_to_async(_cookie)(user)), (b"host", host.encode())]
    headers += [(b"origin", o.encode()) for o in origins]
    headers += [(k.encode(), v.encode()) for k, v in extra]
    socket = WebsocketCommunicator(application, "/ws/o/acme/logs/", headers=headers)
    socket.scope["scheme"] = scheme
    connected, _ = await socket.connect(timeout=10)
    if connected:
        await socket.disconnect()
    return connected


SAME_ORIGIN = [
    ("localhost", "http://localhost", "ws"),
    ("localhost", "http://localhost:80", "ws"),
    ("localhost:80", "http://localhost", "ws"),
    ("localhost:8000", "http://localhost:8000", "ws"),
    ("LOCALHOST:8000", "http://localhost:8000", "ws"),
    ("127.0.0.1:8000", "http://127.0.0.1:8000", "ws"),
    ("[::1]:8000", "http://[::1]:8000", "ws"),
    ("localhost", "https://localhost", "wss"),
    ("localhost:443", "https://localhost", "wss"),
    ("localhost:8443", "https://localhost:8443", "wss"),
]


@pytest.mark.parametrize(("host", "origin", "scheme"), SAME_ORIGIN)
async def test_a_page_of_the_same_origin_opens_it(alice, org_a, host, origin, scheme):
    assert await _opens(alice, host, [origin], scheme)


OTHER_ORIGINS = [
    # another port on the same host name: the reported case
    ("127.0.0.1:8000", "http://127.0.0.1:1"),
    ("127.0.0.1:8000", "http://127.0.0.1"),
    ("localhost", "http://localhost:1"),
    ("localhost", "http://localhost:8080"),
    ("localhost:8000", "http://localhost:8001"),
    ("localhost:8000", "http://localhost"),
    # the other scheme on the same host and port
    ("localhost", "https://localhost"),
    ("localhost:8000", "https://localhost:8000"),
    # other hosts, and things that are not an origin
    ("localhost", "http://evil.example.com"),
    ("localhost", "http://localhost.evil.test"),
    ("localhost", "http://127.0.0.1"),
    ("localhost", "http://user@localhost"),
    ("localhost", "null"),
    ("localhost", "file://localhost"),
    ("localhost", "ws://localhost"),
    ("localhost", "http://localhost/path"),
    ("localhost", "http://localhost:notaport"),
    ("localhost", ""),
    # a host we do not serve, even when the origin matches it
    ("evil.test", "http://evil.test"),
]


@pytest.mark.parametrize(("host", "origin"), OTHER_ORIGINS)
async def test_any_other_origin_is_refused(alice, org_a, host, origin):
    assert not await _opens(alice, host, [origin])


async def test_the_plain_scheme_is_refused_on_a_secure_socket(alice, org_a):
    assert not await _opens(alice, "localhost", ["http://localhost"], "wss")


async def test_no_origin_or_several_are_refused(alice, org_a):
    assert not await _opens(alice, "localhost", [])
    assert not await _opens(alice, "localhost", ["http://localhost", "http://localhost:1"])


async def test_behind_the_proxy_the_forwarded_host_and_scheme_count(settings, alice, org_a):
    settings.BEHIND_PROXY = True
    forwarded = [("x-forwarded-proto", "https"), ("x-forwarded-host", "bonito.example.com")]
    # The proxy speaks plain ws to us on an internal address; the page was https.
    origin = "https://bonito.example.com"
    assert await _opens(alice, "10.0.0.7:8000", [origin], extra=forwarded)
    assert not await _opens(
        alice, "10.0.0.7:8000", ["https://bonito.example.com:8443"], extra=forwarded
    )
    assert not await _opens(alice, "10.0.0.7:8000", ["http://bonito.example.com"], extra=forwarded)
    # Without BEHIND_PROXY the forwarded headers are not believed.
    settings.BEHIND_PROXY = False
    assert not await _opens(alice, "10.0.0.7:8000", [origin], extra=forwarded)


async def test_csrf_trusted_origins_are_accepted_exactly(settings, alice, org_a):
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.com", "https://*.corp.example"]
    assert await _opens(alice, "localhost", ["https://app.example.com"])
    assert await _opens(alice, "localhost", ["https://app.example.com:443"])
    assert await _opens(alice, "localhost", ["https://tail.corp.example"])
    assert not await _opens(alice, "localhost", ["https://app.example.com:8443"])
    assert not await _opens(alice, "localhost", ["http://app.example.com"])
    assert not await _opens(alice, "localhost", ["https://corp.example.evil.test"])
