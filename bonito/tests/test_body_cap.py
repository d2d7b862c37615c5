"""Bodies outside /v1 are capped before Django reads them: Django's handler reads a whole
body (to a temporary file) before any sign-in check, so an anonymous client could make the
server read and store hundreds of megabytes per request. Served as `make serve` serves it."""

import socket

import httpx
import pytest

from gateway.tests.conftest import free_port
from gateway.tests.external import ExternalBonito

pytestmark = pytest.mark.slow

CAP = 64 * 1024 + 1024  # GATEWAY_MAX_BODY_BYTES + 1024 (DATA_UPLOAD_MAX_MEMORY_SIZE)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ext = ExternalBonito(
        tmp_path_factory.mktemp("bodycap"), env={"GATEWAY_MAX_BODY_BYTES": str(64 * 1024)}
    )
    try:
        ext.migrate()
        yield ext.serve(free_port())
    finally:
        ext.close()


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.settimeout(20)
    return sock


def _response(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (a 413 closes it)."""
    received = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


@pytest.mark.parametrize("path", ["/login/", "/api/agent/ingest", "/api/gateway/config/apply"])
def test_a_body_declared_too_large_is_refused_before_it_is_sent(server, path):
    with _connect(server) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {300 * 1024 * 1024}\r\n\r\n".encode()
        )
        head = _response(sock)  # no byte of the 300 MB sent
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert f"({CAP} bytes at most)".encode() in head.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize("path", ["/login/", "/api/agent/ingest"])
def test_a_chunked_body_is_cut_off_past_the_cap(server, path):
    """Without a length the body is read up to the cap, then answered 413 and closed: the
    client is refused long before it could send megabytes."""
    with _connect(server) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"x" * 16384
        sent, refused = 0, b""
        sock.settimeout(0.05)
        while sent < 50 * 1024 * 1024:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                refused += sock.recv(65536)
            except TimeoutError:
                continue
            if refused:
                break
        sock.settimeout(20)
        if not refused:
            refused = _response(sock)
    assert refused.startswith(b"HTTP/1.1 413"), refused[:200]
    assert sent < 4 * CAP  # refused at the cap, not after the whole body


@pytest.mark.parametrize("size", [b"ffffffffff", b"%x" % (CAP + 1)])
@pytest.mark.parametrize("path", ["/login/", "/api/agent/ingest"])
def test_a_chunk_size_past_the_cap_is_refused_at_once(server, path, size):
    """A chunk announcing more than the cap is a 413 at once: it waited for bytes that
    would never be read (Django reads a body with no timeout)."""
    with _connect(server) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
            + size
            + b"\r\n{}"
        )
        sock.settimeout(5)  # not the 30 s body timeout, nor forever
        refused = _response(sock)
    assert refused.startswith(b"HTTP/1.1 413"), refused[:200]


def test_a_body_within_the_cap_reaches_django(server):
    # An anonymous REST call under the cap: Django's own answer (not the cap's 413).
    answer = httpx.post(f"{server}/api/gateway/config/apply", content=b"{}" + b" " * (CAP - 4000))
    assert answer.status_code in (401, 403)
    # The agent API reads a body under the cap and refuses the missing token itself.
    answer = httpx.post(
        f"{server}/api/agent/ingest",
        content=b'{"records": []}',
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 401
