"""A request's head (request line and headers) must be whole within BONITO_HEADERS_TIMEOUT_S
of the connection opening or the request's first byte: uvicorn alone keeps a connection
that sends nothing, or a head that stalls (slowloris), open for ever. Served as `make
serve` serves it (ExternalBonito: uvicorn with the project's HTTP protocol)."""

import socket
import time

import httpx
import pytest

from gateway.tests.conftest import free_port
from gateway.tests.external import ExternalBonito

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ext = ExternalBonito(tmp_path_factory.mktemp("head"), env={"BONITO_HEADERS_TIMEOUT_S": "1"})
    try:
        ext.migrate()
        url = ext.serve(free_port())
        yield url
    finally:
        ext.close()


def _closed_by_server(sock: socket.socket, within_s: float = 20) -> bytes:
    """What the server sent before closing (b'' for nothing); fails if it never closes."""
    sock.settimeout(within_s)
    received = b""
    while True:
        chunk = sock.recv(4096)  # socket.timeout: the server kept the connection
        if not chunk:
            return received
        received += chunk


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)))


@pytest.mark.parametrize(
    "head",
    [
        b"",  # connects and says nothing
        b"POST /v1/chat/completions HTTP/1.1\r\n",  # the request line, then nothing
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bn-",
    ],
    ids=["nothing", "request-line", "half-headers"],
)
def test_a_head_that_stalls_is_closed(server, head):
    with _connect(server) as sock:
        if head:
            sock.sendall(head)
        assert _closed_by_server(sock) == b""


def test_a_head_dripped_slowly_is_closed_at_the_deadline(server):
    with _connect(server) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /api/health HTTP/1.1\r\n")
        with pytest.raises(OSError):  # reset or broken pipe once the server closed it
            while time.monotonic() - start < 20:
                sock.sendall(b"X-Drip: 1\r\n")  # every line resets nothing
                time.sleep(0.2)
            pytest.fail("a head dripped for 20 s was still being read")


def test_requests_on_a_kept_alive_connection_are_served(server):
    with httpx.Client(base_url=server, timeout=10) as client:
        for _ in range(3):
            assert client.get("/api/health").status_code == 200
            time.sleep(1.5)  # longer than the head deadline, shorter than keep-alive (5 s)
        assert client.get("/api/health").status_code == 200
