"""WebSocket Origin check: a socket opens only from a page of this very origin.

Browsers send cookies with a WebSocket handshake to any site that asks, so the Origin header
is what stops another site, or another service on the same host name (another port, or
plain http next to https), from opening the live tail with a visitor's session. Channels'
AllowedHostsOriginValidator compares host names only; this compares scheme, host and port
with the request's own (default ports normalised), or with a CSRF_TRUSTED_ORIGINS entry."""

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the port made explicit, or None if it is not a web origin."""
    scheme = scheme.lower()
    if scheme not in DEFAULT_PORTS or not netloc:
        return None
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.password is not None:
        return None
    return scheme, parts.hostname.lower().rstrip("."), port or DEFAULT_PORTS[scheme]


def _header(scope, name: bytes) -> str | None:
    values = [v for k, v in scope.get("headers", []) if k.lower() == name]
    if len(values) != 1:  # none, or several: nothing we can trust
        return None
    try:
        return values[0].decode("latin1").strip()
    except UnicodeDecodeError:  # pragma: no cover - latin1 decodes any byte
        return None


def _request_origin(scope) -> tuple[str, str, int] | None:
    """The origin the socket was opened on, read as Django reads a request's host and scheme."""
    host = _header(scope, b"host")
    secure = scope.get("scheme") in ("wss", "https")
    if settings.BEHIND_PROXY:
        forwarded_host = _header(scope, b"x-forwarded-host")
        host = forwarded_host.split(",")[0].strip() if forwarded_host else host
        proto = _header(scope, b"x-forwarded-proto")
        secure = secure or (proto or "").split(",")[0].strip().lower() == "https"
    if not host:
        return None
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    return _origin("https" if secure else "http", host)


def _trusted(origin: tuple[str, str, int]) -> bool:
    scheme, host, port = origin
    for entry in settings.CSRF_TRUSTED_ORIGINS:
        parts = urlsplit(entry)
        wildcard = parts.netloc.startswith("*.")
        trusted = _origin(parts.scheme, parts.netloc[2:] if wildcard else parts.netloc)
        if trusted is None or trusted[0] != scheme or trusted[2] != port:
            continue
        if host == trusted[1] or wildcard and host.endswith("." + trusted[1]):
            return True
    return False


def origin_allowed(scope) -> bool:
    raw = _header(scope, b"origin")
    if not raw:
        return False  # a browser always sends one; a missing Origin is not a page of ours
    parts = urlsplit(raw)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return False
    origin = _origin(parts.scheme, parts.netloc)
    if origin is None:
        return False  # "null", file://, junk
    return origin == _request_origin(scope) or _trusted(origin)


def token_client(scope) -> bool:
    """A client that sends no Origin and authenticates with `Authorization: Bearer` (the
    CLI): a browser always sends an Origin and cannot set that header on a WebSocket, so
    no page can make this handshake with a visitor's credentials. The consumer then reads
    the token only, never the session cookie."""
    headers = [k.lower() for k, _v in scope.get("headers", [])]
    return b"origin" not in headers and headers.count(b"authorization") == 1


class SameOriginValidator:
    """ASGI middleware for WebSocket routes: refuses the handshake unless origin_allowed
    (a page of ours) or it is a token client (token_client)."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            raise ValueError("SameOriginValidator only guards WebSocket connections.")
        if origin_allowed(scope) or token_client(scope):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
