"""uvicorn's httptools protocol with a deadline on each request's head.

uvicorn bounds the idle time between requests (its keep-alive timeout) but not the time a
client takes to send a request line and headers: a connection that opens and sends nothing,
or sends part of a head and stalls (slowloris), is kept open for ever, one file descriptor
each, until the process can accept no more. Here the head must be whole within
``BONITO_HEADERS_TIMEOUT_S`` seconds (default 30) of the connection opening or of the
request's first byte; past that the connection is closed, as nginx's
``client_header_timeout`` does. The body has its own bounds (``asgi_v1.BODY_IDLE_S``).

A head is also at most ``BONITO_MAX_HEADER_BYTES`` (default 64 KiB): httptools keeps
reading a header that never ends (hundreds of megabytes a connection, and seconds of CPU
joining its pieces, until the deadline), so past the limit the client gets a 431 and the
connection is closed, as nginx's ``large_client_header_buffers`` does. A request httptools
cannot parse gets a 400 in OpenAI's error shape (uvicorn's is plain text).

Used as ``uvicorn --http gateway.dataplane.http_protocol:HeadDeadlineProtocol`` (make serve,
the container's entrypoint) and by the VPC agent."""

import os

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

SPEC = "gateway.dataplane.http_protocol:HeadDeadlineProtocol"


def headers_timeout() -> float:
    try:
        value = float(os.environ.get("BONITO_HEADERS_TIMEOUT_S", "30"))
    except ValueError:
        return 30.0
    return value if value > 0 else 30.0


HEADERS_TIMEOUT_S = headers_timeout()  # read once, when a worker imports the protocol


def max_header_bytes() -> int:
    try:
        value = int(os.environ.get("BONITO_MAX_HEADER_BYTES", "65536"))
    except ValueError:
        return 65536
    return value if value > 0 else 65536


MAX_HEADER_BYTES = max_header_bytes()
TOO_LARGE_BODY = (
    b'{"error":{"message":"The request\'s headers are larger than this server accepts.",'
    b'"type":"invalid_request_error","param":null,"code":"request_headers_too_large"}}'
)
TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"connection: close\r\n"
    b"content-length: " + str(len(TOO_LARGE_BODY)).encode() + b"\r\n\r\n" + TOO_LARGE_BODY
)


INVALID_BODY = (
    b'{"error":{"message":"The request is not valid HTTP/1.1 (its request line, a header, '
    b'or the framing of its body).","type":"invalid_request_error","param":null,'
    b'"code":"invalid_http_request"}}'
)


class HeadDeadlineProtocol(HttpToolsProtocol):
    _head_timer = None
    _head_bytes = 0

    _head_began = False  # a head began within the read being parsed

    def data_received(self, data: bytes) -> None:
        self._head_began = False
        super().data_received(data)
        if self._head_timer is not None and not self.transport.is_closing():
            # Still in a head: the read is all head, unless the head began within it (after
            # the end of a previous request, pipelined): that read is not counted, so a
            # head is refused past the limit plus at most one read.
            if not self._head_began:
                self._head_bytes += len(data)
            if self._head_bytes > MAX_HEADER_BYTES:
                self._disarm()
                self.transport.write(TOO_LARGE)
                self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """What httptools cannot parse (two Content-Lengths, Transfer-Encoding beside one, a
        folded header, a method or a path that is not ASCII…): a 400 in OpenAI's shape, as
        the gateway's own, rather than uvicorn's plain text. No key was read: nothing is
        recorded."""
        self._disarm()
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: "
            + str(len(INVALID_BODY)).encode()
            + b"\r\n\r\n"
            + INVALID_BODY
        )
        self.transport.close()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # a later request on a kept-alive connection
            self._arm()
            self._head_began = True

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(HEADERS_TIMEOUT_S, self._expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _expired(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()
