"""Raw sockets to a served Bonito, for tests of the HTTP protocol's edges: bytes written
as they are, the answer read as it comes."""

import socket


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
