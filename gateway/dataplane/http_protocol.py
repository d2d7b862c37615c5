"""uvicorn's httptools protocol with a deadline on each request's head.

uvicorn bounds the idle time between requests (its keep-alive timeout) but not the time a
client takes to send a request line and headers: a connection that opens and sends nothing,
or sends part of a head and stalls (slowloris), is kept open for ever, one file descriptor
each, until the process can accept no more. Here the head must be whole within
``BONITO_HEADERS_TIMEOUT_S`` seconds (default 30) of the connection opening or of the
request's first byte; past that the connection is closed, as nginx's
``client_header_timeout`` does. The body has its own bounds (``asgi_v1.BODY_IDLE_S``).

A head is also at most ``BONITO_MAX_HEADER_BYTES`` (default 64 KiB), counted as it
arrives: httptools keeps reading a header that never ends (hundreds of megabytes a
connection, and seconds of CPU joining its pieces, until the deadline), so past the limit
the client gets a 431 and the connection is closed, as nginx's
``large_client_header_buffers`` does. A request httptools cannot parse gets a 400 in
OpenAI's error shape (uvicorn's is plain text), after the answers to the requests before
it on the connection (pipelined), whether its head or its body broke. A request target in
absolute form (``GET http://host/path``) has its authority taken as the request's host
(RFC 9112 3.2.2).

Each message is handed to the parser apart (its head, then its body to its end), so a
chunked body's size lines are read as they arrive (_Chunks): the sum announced is put in
the request's scope (``BODY_ANNOUNCED``) for the app to hold against its cap, so a size of
a terabyte is refused at once rather than waited for.

Used as ``uvicorn --http gateway.dataplane.http_protocol:HeadDeadlineProtocol`` (make serve,
the container's entrypoint) and by the VPC agent."""

import os
import re
from urllib.parse import unquote

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
# Set in a request's scope when its body's framing broke (asgi_v1 reads it by this name).
BODY_BROKE = "bonito.body_broke"
# In a chunked request's scope: the sum of the chunk sizes announced so far, which asgi_v1
# holds against its cap before the chunks arrive (by this name too).
BODY_ANNOUNCED = "bonito.body_announced"
CRLFCRLF = b"\r\n\r\n"
LINGER_S = 2.0
LINGER_BYTES = 1024 * 1024
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


async def _too_large_app(scope, receive, send):
    """The answer to a head past the limit that was parsed whole (begun within a read),
    in its turn among pipelined requests; the connection is closed after it."""
    await send(
        {
            "type": "http.response.start",
            "status": 431,
            "headers": [
                (b"content-type", b"application/json"),
                (b"connection", b"close"),
                (b"content-length", str(len(TOO_LARGE_BODY)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": TOO_LARGE_BODY})


UPGRADE_BODY = (
    b'{"error":{"message":"A request with a body cannot ask to upgrade the connection '
    b'(Upgrade: h2c, websocket...): send it without the Upgrade header.",'
    b'"type":"invalid_request_error","param":null,"code":"unsupported_upgrade"}}'
)


class _Refused(Exception):
    """Raised in a parser callback: the parse stops, and send_400_response answers."""


def _bodies(name: bytes, value: bytes) -> bool:
    """Whether a header announces a body."""
    return name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0")


def _is_v1(url: bytes) -> bool:
    """Whether a request target is the gateway's, as gateway.asgi_v1.is_v1 decides (which
    this module cannot import): its path's first segment, decoded, is `v1` in any case."""
    path = unquote(url.partition(b"?")[0].decode("latin-1"))
    for segment in path.split("/"):
        if segment not in ("", ".", ".."):
            return segment.lower() == "v1"
    return False


_HEX = re.compile(rb"[0-9A-Fa-f]+")
_SIZE, _DATA, _CRLF, _TRAILERS, _LOST = range(5)
MAX_SIZE_LINE = 4096  # a chunk size line (with its extensions) longer is not followed


class _Chunks:
    """Follows a chunked body as it arrives, as far as reading each chunk's size and finding
    the body's end; the parser checks the framing (what this reads otherwise is a framing
    the parser refuses). httptools tells when a chunk's size line has been parsed, not the
    size: a size of a terabyte was waited for, its chunk never coming, for the body's idle
    timeout, where a Content-Length of a terabyte is refused at once."""

    def __init__(self):
        self.state = _SIZE
        self.line = b""  # the current size or trailer line, as far as it has come
        self.left = 0  # of the current chunk's data, or of the CRLF after it
        self.announced = 0

    def scan(self, data: bytes) -> int:
        """How much of ``data`` is this body: up to its end, or all of it (-1: not ended)."""
        i, n = 0, len(data)
        while i < n:
            if self.state == _LOST:
                return -1
            if self.state in (_DATA, _CRLF):
                step = min(self.left, n - i)
                i, self.left = i + step, self.left - step
                if self.left == 0:
                    if self.state == _DATA:
                        self.state, self.left = _CRLF, 2
                    else:
                        self.state = _SIZE
                continue
            end = data.find(b"\n", i)
            self.line += data[i : n if end < 0 else end]
            if len(self.line) > MAX_SIZE_LINE:
                self.state = _LOST
                return -1
            if end < 0:
                return -1
            i, line, self.line = end + 1, self.line.rstrip(b"\r"), b""
            if self.state == _TRAILERS:
                if not line:
                    return i  # the blank line after the last chunk (and its trailers)
                continue
            size = _HEX.match(line)
            if size is None:
                self.state = _LOST
                return -1
            value = int(size.group(), 16)
            if value == 0:
                self.state = _TRAILERS
            else:
                self.announced += value
                self.state, self.left = _DATA, value
        return -1


class _Transport:
    """The connection's transport as uvicorn's request cycles see it. A close while the
    request's body is still arriving (an answer given before its body was read, with
    Connection: close: a 413 on a declared size over the cap, a chunk size past it) is
    not done at once: what the client is still sending is read and dropped for a moment
    (HeadDeadlineProtocol._linger), else the close resets the connection and the reset
    can reach the client before the answer it is reading."""

    __slots__ = ("_protocol", "raw")

    def __init__(self, raw, protocol):
        self.raw, self._protocol = raw, protocol

    def __getattr__(self, name):
        return getattr(self.raw, name)

    def write(self, data) -> None:
        self.raw.write(data)

    def is_closing(self) -> bool:
        return self._protocol._closing_soon or self.raw.is_closing()

    def close(self) -> None:
        protocol = self._protocol
        if protocol._in_body and protocol._lingering is None and not self.raw.is_closing():
            protocol._linger()
        else:
            self.raw.close()


class HeadDeadlineProtocol(HttpToolsProtocol):
    _head_timer = None
    _head_bytes = 0  # of the head being read, counted as they arrive
    _in_body = False  # between a head's end and its message's end
    _lingering = None  # refused: how much more of what the client sends is dropped
    _refusal = None  # the body of the 400 send_400_response is to answer, if not INVALID_BODY
    _last = None  # the connection's last answer, once those before it are written
    _head_tail = b""  # the last 3 bytes of the head being read (its end may straddle reads)
    _body_left = None  # of a Content-Length body being read
    _chunks = None  # a chunked body being read (_Chunks)
    _closing_soon = False  # answered before its body's end: lingering, then closed

    def data_received(self, data: bytes) -> None:
        # In a head, the parser is given no more than what is left of the limit: a head
        # past it is refused at the limit exactly, however large the read it came in (on
        # loopback a read is up to 256 KiB, so counting after the parse served heads of
        # that size). Each message is given to the parser apart, its head up to its blank
        # line, then its body up to its end (its Content-Length, or the chunked framing's
        # end): where each body begins and ends is known, so a chunked body's sizes are
        # read as they arrive (_Chunks), and a pipelined head is measured as any other.
        if self._lingering is not None:
            self._lingering -= len(data)
            if self._lingering < 0:
                self.transport.close()
            return
        while data:
            if self._in_body:
                take = self._body_size(data)
                if take <= 0 or take >= len(data):
                    super().data_received(data)
                    data = b""
                else:
                    super().data_received(data[:take])
                    data = data[take:]
            else:
                allowance = MAX_HEADER_BYTES - self._head_bytes
                end = self._head_end(data)
                take = min(allowance, len(data) if end < 0 else end)
                piece = data if take == len(data) else data[:take]
                self._head_bytes += len(piece)
                super().data_received(piece)
                data = data[take:]
                if not self._in_body and self._head_bytes:  # the head goes on in the next read
                    self._head_tail = (self._head_tail + piece[-3:])[-3:]
            if self._lingering is not None:  # refused: the rest is dropped
                self._lingering -= len(data)
                if self._lingering < 0:
                    self.transport.close()
                return
            if not data or self.transport.is_closing() or self.parser.should_upgrade():
                return
            if not self._in_body and self._head_bytes >= MAX_HEADER_BYTES:
                self._refuse_head()  # the same head, still open, at the limit
                return

    def _head_end(self, data: bytes) -> int:
        """Where in ``data`` the head being read ends (past its blank line), or -1."""
        if self._head_tail:
            at = (self._head_tail + data[:3]).find(CRLFCRLF)
            if at >= 0:
                return at + 4 - len(self._head_tail)
        at = data.find(CRLFCRLF)
        return at + 4 if at >= 0 else -1

    def _body_size(self, data: bytes) -> int:
        """How much of ``data`` is the body being read (-1: all of it)."""
        if self._chunks is not None:
            before = self._chunks.announced
            take = self._chunks.scan(data)
            if self._chunks.announced != before and self.cycle is not None:
                self.cycle.scope[BODY_ANNOUNCED] = self._chunks.announced
                self.cycle.message_event.set()  # an app waiting for the chunk checks its size
            return take
        if self._body_left is not None:
            take = min(self._body_left, len(data))
            self._body_left -= take
            return take
        return -1

    def _refuse_head(self) -> None:
        self._last_word(TOO_LARGE)

    def send_400_response(self, msg: str) -> None:
        """What httptools cannot parse (two Content-Lengths, Transfer-Encoding beside one, a
        folded header, a method or a path that is not ASCII…): a 400 in OpenAI's shape, as
        the gateway's own, rather than uvicorn's plain text. No key was read: nothing is
        recorded, unless the request's body is what broke (a chunked framing that is not
        one): the app, which read the key, then records the 400 the client got rather than
        a client that left (it is told the client left, at once)."""
        body, self._refusal = self._refusal or INVALID_BODY, None
        cycle, queued = self.cycle, False
        if self._in_body and cycle is not None and not cycle.response_complete:
            cycle.scope[BODY_BROKE] = True
            cycle.disconnected = True
            cycle.message_event.set()
            # pipelined behind a request still being answered: its app has not started
            queued = any(waiting is cycle for waiting, _app in self.pipeline)
        self._last_word(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body,
            queued,
        )

    def _last_word(self, response: bytes, queued: bool = False) -> None:
        """``response`` (a 400 or a 431) is the connection's last: the parser is done with
        it, and what arrives after is dropped. It goes out after the answers to the whole
        requests before it on the connection (pipelined), ``queued`` the broken body's own
        request among them: written at once, it cut them (a request served and billed lost
        its answer)."""
        self._disarm()
        self._lingering = LINGER_BYTES
        if queued or (
            not self._in_body and self.cycle is not None and not self.cycle.response_complete
        ):
            self._last = response  # on_response_complete writes it
            return
        self._say(response)

    def _say(self, response: bytes) -> None:
        if self.transport.is_closing():
            return
        self.transport.write(response)
        # What the client is still sending is read and dropped for a moment (up to
        # LINGER_BYTES, LINGER_S) before the close: a connection closed with unread data is
        # reset, and the reset can reach the client before it has read the answer.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The last request's answer is out, or that request is the broken body's (now
        # started, told its client left: its answer is the 400).
        done = self.cycle.response_complete or self.cycle.disconnected
        if self._last is not None and not self.pipeline and done:
            last, self._last = self._last, None
            self._say(last)

    def connection_made(self, transport) -> None:
        super().connection_made(_Transport(transport, self))
        self._arm()

    def _linger(self) -> None:
        """The connection closed after an answer given before its request's body was
        read to its end (its app sent Connection: close): not kept alive, since the rest of
        that body would be parsed as the next request (or waited for, for a chunk of a
        terabyte), and not reset, as _say does: up to LINGER_BYTES of what the client is
        still sending are dropped for LINGER_S, then it is closed."""
        self._disarm()
        self._closing_soon = True
        self._lingering = LINGER_BYTES
        raw = self.transport.raw
        if raw.can_write_eof():
            raw.write_eof()
        raw.resume_reading()  # paused while the unread body filled uvicorn's buffer
        self.loop.call_later(LINGER_S, raw.close)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # a later request on a kept-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        if self.url[:1] != b"/" and self.url != b"*":
            self._absolute_form()
        # An upgrade this server does not take is ignored (RFC 9110 7.8), but the parser
        # takes what follows the head for the other protocol: a body would be dropped, and
        # the request answered as if it had none.
        if (
            self.parser.should_upgrade()
            and not self._should_upgrade()
            and any(_bodies(n, v) for n, v in self.headers)
        ):
            self._refusal = UPGRADE_BODY
            raise _Refused
        if self.parser.get_http_version() not in ("1.1", "1.0"):
            raise _Refused  # `HTTP/2.0` in an HTTP/1 request line was served as HTTP/1.1
        self._in_body = True
        self._head_tail = b""
        self._chunks, self._body_left = None, None
        for name, value in self.headers:
            if name == b"transfer-encoding":  # the parser refuses any but chunked last
                self._chunks = _Chunks()
            elif name == b"content-length":  # one, digits: the parser refuses others
                self._body_left = int(value)
        if self._chunks is not None:
            self._body_left = None
        if self._parsed_size() > MAX_HEADER_BYTES:
            # A head begun within a read, after another request's body: its answer waits
            # for the one before it, as any pipelined request's does.
            app, self.app = self.app, _too_large_app
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        upgrading = self.parser.should_upgrade()
        if upgrading and self._should_upgrade():
            return super().on_headers_complete()  # a websocket: its protocol takes over
        super().on_headers_complete()
        # Not kept alive: a request that expects 100-continue (answered before it asked
        # for its body, a refusal, the client sends none, and the parser would take its
        # next request for that body), and one whose upgrade is ignored (the parser drops
        # what follows it in the same read: a request pipelined behind it was lost).
        if self.expect_100_continue or upgrading:
            self.cycle.keep_alive = False

    def _should_upgrade(self) -> bool:
        # /v1 has no websocket endpoint: a handshake there is answered as the HTTP request
        # it also is (the websocket router, with no route for it, answered a bare 500).
        return super()._should_upgrade() and not _is_v1(self.url)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._head_bytes = 0
        self._head_tail = b""
        self._chunks = self._body_left = None
        super().on_message_complete()

    def _parsed_size(self) -> int:
        """The head's size as parsed: its request line and each header line (the wire
        may also carry whitespace around values, which the parser drops)."""
        return (
            len(self.url)
            + 16  # the method, the version, spaces and line ends, the blank line
            + sum(len(name) + len(value) for name, value in self.headers)
            + 4 * len(self.headers)
        )

    def _absolute_form(self) -> None:
        """A request target in absolute form (`GET http://host/path`, as sent to a proxy):
        a server must accept it, and its authority is then the request's host, whatever
        the Host header says (RFC 9112 3.2.2). uvicorn kept only the path, so a request
        with an allowed Host reached any app whose host check it names: the authority
        replaces the Host header, and the host checks (/v1's, Django's ALLOWED_HOSTS)
        apply to it. A target that is not an http(s) URL with a host, or that carries
        credentials (RFC 9110 4.2.4), is a 400 (raised here, it stops the parser, whose
        error is answered by send_400_response)."""
        scheme, sep, rest = self.url.partition(b"://")
        authority = rest
        for stop in (b"/", b"?", b"#"):
            authority = authority.split(stop, 1)[0]
        if not sep or scheme.lower() not in (b"http", b"https") or not authority:
            raise ValueError("an absolute-form target that is not an http(s) URL")
        if b"@" in authority:
            raise ValueError("an absolute-form target with userinfo")
        target = rest[len(authority) :]
        if target[:1] != b"/":
            target = b"/" + target
        self.url = target
        self.headers[:] = [(n, v) for n, v in self.headers if n != b"host"]
        self.headers.append((b"host", authority.lower()))

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
