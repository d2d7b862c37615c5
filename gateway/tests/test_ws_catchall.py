"""A WebSocket handshake on a path with no WebSocket endpoint is refused cleanly (the
handshake closed: uvicorn answers a 403), as one the origin check refuses. The channels
router had no route for it and raised: a page of ours (its own Origin) or a token client
(Authorization, no Origin) opening a socket on any other path than the live tail got a
plain-text 500, and the server logged a traceback. Served as `make serve` serves it
(uvicorn with the project's HTTP protocol, in its own process), with a real client."""

import orjson
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from gateway.tests.conftest import free_port
from gateway.tests.external import ExternalBonito

pytestmark = pytest.mark.slow

PATHS = [
    "/",
    "/ws",
    "/ws/",
    "/ws/o/acme/",
    "/ws/o/acme/logs",  # the live tail's path without its slash
    "/ws/o/acme/logs/extra/",
    "/ws/o/a%20b/logs/",  # not a slug
    "/api/health",
    "/dashboard/",
    "/static/css/app.css",
    "/%ff",
    "/nope?token=x",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ws")
    ext = ExternalBonito(tmp)
    try:
        ext.migrate()
        port = free_port()
        url = ext.serve(port)
        yield url, tmp / f"server-{port}.log"
    finally:
        ext.close()


def handshake(url: str, path: str, **kwargs):
    """The HTTP answer to a real client's handshake: (status, body)."""
    with (
        pytest.raises(InvalidStatus) as refused,
        connect(url.replace("http://", "ws://") + path, open_timeout=10, **kwargs),
    ):
        pass  # an opened socket fails the test
    return refused.value.response.status_code, bytes(refused.value.response.body)


def no_error_logged(log, since: int) -> None:
    """Nothing in what the server logged after ``since`` (bytes) is an error."""
    text = log.read_bytes()[since:].decode()
    assert "Traceback" not in text and "ERROR" not in text, text[-3000:]


CLIENTS = {
    "page": lambda url: {"origin": url},  # a page of this very origin
    "token": lambda url: {"additional_headers": {"Authorization": "Bearer bn-not-a-real-token"}},
    "bare": lambda url: {},  # neither: refused by the origin check, as before
}


def refused_without_an_error(server, path: str, client: str) -> None:
    """A handshake on ``path`` from ``client`` is refused (a 403), and the server logs no
    error or traceback for it."""
    url, log = server
    since = log.stat().st_size
    status, body = handshake(url, path, **CLIENTS[client](url))
    assert status == 403, body[:300]
    no_error_logged(log, since)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("path", PATHS)
def test_a_handshake_on_a_path_with_no_socket_is_refused_without_an_error(server, path, client):
    refused_without_an_error(server, path, client)


@pytest.mark.parametrize("client", CLIENTS)
def test_the_live_tail_still_refuses_a_socket_without_a_session_or_a_token(server, client):
    refused_without_an_error(server, "/ws/o/acme/logs/", client)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_handshake_on_v1_is_still_answered_as_http(server, client):
    url, log = server
    since = log.stat().st_size
    for path in ("/v1/models", "/v1/realtime"):
        status, body = handshake(url, path, **CLIENTS[client](url))
        assert status == 401, body[:300]  # the gateway's answer: no valid key
        assert orjson.loads(body)["error"]["code"] == "invalid_api_key"
    no_error_logged(log, since)
