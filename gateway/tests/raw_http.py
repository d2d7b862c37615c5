"""Raw sockets to a served Bonito, for tests of the HTTP protocol's edges: bytes written
as they are, the answer read as it comes."""

import contextlib
import re
import socket
import time

from gateway.dataplane.http_protocol import LINGER_BYTES, LINGER_S


def connect(url: str) -> socket.socket:
    """A new connection to ``url``'s host and port (``http://host:port``)."""
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)))


def read_until_close(sock: socket.socket, timeout: float = 20.0) -> bytes:
    """All the server sends until it closes the connection (or resets it); each read
    waits at most ``timeout`` seconds."""
    sock.settimeout(timeout)
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def responses(data: bytes) -> list[tuple[bytes, bytes]]:
    """(head, body) of each whole response in ``data`` (each has a Content-Length)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep and head.startswith(b"HTTP/1.1 "), data[:300]
        size = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))
        out.append((head, rest[:size]))
        data = rest[size:]
    return out


def says_close(head: bytes) -> bool:
    return re.search(rb"(?im)^connection: *close\r?$", head) is not None


def models_request(raw: str, close: bool = False) -> bytes:
    """A GET /v1/models with key ``raw``: the next request a client sends on a connection."""
    return (
        b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
        + raw.encode()
        + b"\r\n"
        + (b"Connection: close\r\n" if close else b"")
        + b"\r\n"
    )


def refused_then_closed(url: str, raw: str, request: bytes, status: int) -> bytes:
    """Send ``request`` (a head and the start of a body), expect an answer of ``status``
    before the body, then send the next request on the connection: it must not be read as
    body bytes (dropped, or waited on until some timeout). The answer must be the only one
    and say `Connection: close`, and the connection end within the bounded drain. Returns
    the answer's body."""
    started = time.monotonic()
    with connect(url) as sock:
        sock.sendall(request)
        sock.settimeout(10)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 %d " % status), first[:300]
        with contextlib.suppress(OSError):  # already closed: as good
            sock.sendall(models_request(raw))
        rest = read_until_close(sock, timeout=10)
    elapsed = time.monotonic() - started
    [(head, body)] = responses(first + rest)  # the answer alone, then the close
    assert says_close(head), head
    assert elapsed < LINGER_S + 5, elapsed  # closed, not kept until a timeout
    return body


def answer_while_sending(url: str, head: bytes) -> tuple[bytes, bytes]:
    """Send ``head``, then body bytes (half the bounded drain) whatever comes back; the one
    whole response read before the connection ends, as (head, body)."""
    with connect(url) as sock:
        sock.sendall(head)
        sent, piece = 0, b"x" * 65536
        while sent < LINGER_BYTES // 2:
            sock.sendall(piece)
            sent += len(piece)
        answer = read_until_close(sock, timeout=10)
    [response] = responses(answer)
    return response


def answer_then_next(url: str, raw: str, request: bytes, until: bytes) -> list[tuple[bytes, bytes]]:
    """Send ``request``, read until ``until`` arrives, then send a GET /v1/models (saying
    close) on the same connection; every response the connection carried."""
    with connect(url) as sock:
        sock.sendall(request)
        sock.settimeout(10)
        answer = b""
        while until not in answer:
            answer += sock.recv(65536)
        sock.sendall(models_request(raw, close=True))
        answer += read_until_close(sock, timeout=10)
    return responses(answer)
