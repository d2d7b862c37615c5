"""uvicorn's httptools protocol with a deadline on each request's head.

uvicorn bounds the idle time between requests (its keep-alive timeout) but not the time a
client takes to send a request line and headers: a connection that opens and sends nothing,
or sends part of a head and stalls (slowloris), is kept open for ever, one file descriptor
each, until the process can accept no more. Here the head must be whole within
``BONITO_HEADERS_TIMEOUT_S`` seconds (default 30) of the connection opening or of the
request's first byte; past that the connection is closed, as nginx's
``client_header_timeout`` does. The body has its own bounds (``asgi_v1.BODY_IDLE_S``).

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


class HeadDeadlineProtocol(HttpToolsProtocol):
    _head_timer = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # a later request on a kept-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(HEADERS_TIMEOUT_S, self._expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _expired(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()
