"""The REST API and /v1 over httpx; every failure becomes a CliError with the API's message."""

import os
import re
import ssl
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from . import __version__

OK, FAILURE, USAGE, AUTH = 0, 1, 2, 3
MAX_PAGES = 1000  # a server that always says "next" is not followed forever


class CliError(Exception):
    def __init__(self, message: str, code: int = FAILURE):
        super().__init__(message)
        self.code = code


def api_message(response: httpx.Response) -> str:
    """The message the server put in its body: DRF's detail or field errors, or /v1's
    OpenAI-shaped error; the status line when the body says nothing readable."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code} {response.reason_phrase}"
    if isinstance(body, dict):
        if isinstance(body.get("error"), dict) and body["error"].get("message"):
            return str(body["error"]["message"])
        if "detail" in body and len(body) == 1:
            detail = body["detail"]
            return " ".join(map(str, detail)) if isinstance(detail, list) else str(detail)
        parts = []
        for field, problems in body.items():
            problems = problems if isinstance(problems, list) else [problems]
            text = " ".join(p if isinstance(p, str) else str(p) for p in problems)
            parts.append(text if field in ("detail", "non_field_errors") else f"{field}: {text}")
        if parts:
            return "; ".join(parts)
    return f"HTTP {response.status_code} {response.reason_phrase}"


def shown_url(url) -> str:
    """``url`` without a user:password part, for messages."""
    try:
        parts = urlsplit(str(url))
    except ValueError:  # an unclosed IPv6 bracket: shown as given
        return str(url)
    if "@" not in parts.netloc:
        return str(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


# A token travels in a header: printable ASCII with no spaces. Surrounding whitespace (a
# pasted newline) is dropped; anything else is refused without echoing the token.
_TOKEN = re.compile(r"[\x21-\x7e]+")


def clean_token(token: str | None, what: str = "token") -> str | None:
    if token is None:
        return None
    token = token.strip()
    if not token:
        return None
    if not _TOKEN.fullmatch(token):
        raise CliError(
            f"The {what} holds spaces or characters a header cannot carry: copy it again.", AUTH
        )
    return token


_ID = re.compile(r"[0-9]{1,18}")


def path_id(value) -> str:
    """An id for a URL path: digits, or a name quoted to stay one path segment."""
    text = str(value)
    if _ID.fullmatch(text):
        return text
    if text in ("", ".", "..") or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise CliError(f"{text!r} is not an id.", USAGE)
    return quote(text, safe="")


def body_of(response: httpx.Response):
    """The JSON body, or a clear error when the answer is not the API's (an HTML page, a
    proxy's login form, a redirect)."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        raise CliError(
            f"{shown_url(response.request.url)} is not a Bonito API answer (got {kind}, "
            "not JSON): is the URL the Bonito server's?"
        ) from None


SHAPE = "the server's answer is not shaped as the Bonito API's (is the URL right?)"


def expect(data, kind: type, what: str):
    if not isinstance(data, kind):
        raise CliError(f"{what}: {SHAPE}.")
    return data


def me_of(client: "Client") -> dict:
    """GET /api/me, checked to hold what the CLI reads from it."""
    me = expect(client.get("/api/me"), dict, "/api/me")
    org = me.get("org")
    if not (isinstance(org, dict) and isinstance(org.get("slug"), str) and "role" in me):
        raise CliError(f"/api/me: {SHAPE}.")
    me.setdefault("email", "")
    return me


# The server's own top-level paths: a URL whose path reaches one of them is not the server's
# root (a reverse proxy's prefix before them, like https://example.com/bonito, is).
SERVER_PATHS = {
    "v1": "the OpenAI-compatible API that SDKs call",
    "api": "a path of the REST API",
    "o": "a dashboard page",
    "ws": "the live tail's socket",
    "admin": "the admin site",
    "settings": "a dashboard page",
    "static": "a static file",
}


def server_url(url: str) -> str:
    """``url`` as the CLI's server URL (the server's root, or a reverse proxy's prefix for
    it), or a usage error naming the URL to use instead."""
    shown = shown_url(url)
    try:
        parts = urlsplit(str(url))
        parts.port  # noqa: B018 - raises for a port that is not 0-65535
    except ValueError as exc:  # an unclosed IPv6 bracket, a port out of range
        raise CliError(
            f"{shown!r} is not a server URL ({exc}): write it as http:// or https:// and a"
            " host name (e.g. https://bonito.example.com), with --url or BONITO_URL.",
            USAGE,
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(
            f"{shown!r} is not a server URL: write it with http:// or https:// "
            "(e.g. https://bonito.example.com), with --url or BONITO_URL.",
            USAGE,
        )
    if parts.query or parts.fragment:
        raise CliError(
            f"{shown} has a query or fragment: give the Bonito server's root URL "
            f"({shown_url(urlunsplit(parts._replace(query='', fragment='')))}?) "
            "with --url or BONITO_URL.",
            USAGE,
        )
    segments = parts.path.split("/")
    for n, segment in enumerate(segments):
        if segment.lower() in SERVER_PATHS:
            root = shown_url(urlunsplit(parts._replace(path="/".join(segments[:n]))))
            raise CliError(
                f"{shown} is not the Bonito server's root URL (/{segment} is "
                f"{SERVER_PATHS[segment.lower()]}): use --url {root} (or BONITO_URL={root}).",
                USAGE,
            )
    return str(url).rstrip("/")


def openai_error(response: httpx.Response) -> bool:
    """Whether the body is the /v1 gateway's OpenAI-shaped error ({"error": {...}}), which
    the management API never answers."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), dict)


def raise_for(response: httpx.Response) -> None:
    if 300 <= response.status_code < 400:
        where = response.headers.get("location", "")
        raise CliError(
            f"{shown_url(response.request.url)} redirected to {shown_url(where) or 'elsewhere'}: "
            "use the server's final URL (e.g. https://) with --url or BONITO_URL."
        )
    if response.status_code < 400:
        return
    message = api_message(response)
    if openai_error(response):
        # The management API was asked, the gateway answered ("Incorrect API key provided"
        # for a pat- token): the URL leads to the /v1 data plane, not to the control plane.
        raise CliError(
            f"{shown_url(response.request.url)} answered as the gateway's OpenAI-compatible "
            f"/v1 API ({message}), not as Bonito's management API: the URL is not the control "
            "plane's. Give the Bonito server's root URL (without /v1) with --url or BONITO_URL."
        )
    if response.status_code == 404 and message.startswith("HTTP 404"):
        # Not the API's "not found" (that has a JSON body): the server has no such endpoint.
        message = (
            f"{response.request.url.path}: this server has no such endpoint "
            "(an older Bonito, or the URL is not a Bonito server)."
        )
    if response.status_code == 404:
        message = _not_found(response.request.url.path, message)
    if response.status_code in (401, 403):
        raise CliError(message, AUTH)
    raise CliError(message, FAILURE)


# The REST API's collections, as a user names what is in them.
NOUNS = {
    "keys": "key",
    "providers": "provider",
    "deployments": "deployment",
    "models": "model",
    "routing-policies": "routing policy",
    "budgets": "budget",
    "teams": "team",
    "members": "member",
    "tokens": "token",
    "audit": "audit entry",
}
_DJANGO_404 = re.compile(r"No \w+ matches the given query\.")


def _not_found(path: str, message: str) -> str:
    """Django's "No ApiKey matches the given query." in the user's words: "No key 12 in
    this org." (the server's class names mean nothing to them)."""
    if not _DJANGO_404.fullmatch(message):
        return message
    segments = [unquote(s) for s in path.split("/") if s]
    for n, segment in enumerate(segments[:-1]):
        if segment in NOUNS:
            return f"No {NOUNS[segment]} {segments[n + 1][:100]} in this org."
    return message


def http_client(**kwargs) -> httpx.Client:
    """An httpx client; SSL_CERT_FILE / SSL_CERT_DIR (read by httpx to trust a private CA)
    naming no readable CA is a usage error naming the variable, not an unexplained OSError."""
    try:
        return httpx.Client(**kwargs)
    except (OSError, ssl.SSLError) as exc:
        name = "SSL_CERT_FILE" if os.environ.get("SSL_CERT_FILE") else "SSL_CERT_DIR"
        why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise CliError(
            f"{name} {os.environ.get(name, '')} is not a readable PEM CA certificate ({why}):"
            " point it at the PEM file of the CA that signed the server's certificate, or unset"
            " it.",
            USAGE,
        ) from None


# What a TLS client reads when the other end answers in plain HTTP ("HTTP/1.1 400 …" read as a
# TLS record): OpenSSL's names for it.
_PLAIN_HTTP = ("WRONG_VERSION_NUMBER", "wrong version number", "RECORD_LAYER_FAILURE",
               "packet length too long", "HTTP_REQUEST", "http request")  # fmt: skip


def scheme_hint(url, exc: Exception) -> str:
    """A hint when the URL's scheme is likely the wrong one: https:// to a server that
    speaks plain HTTP, or http:// to one that only speaks HTTPS (it closes or resets the
    connection when a request arrives in clear). Empty when nothing points that way."""
    try:
        parts = urlsplit(str(url))
    except ValueError:
        return ""
    text = str(exc)
    if parts.scheme == "https" and any(mark in text for mark in _PLAIN_HTTP):
        other = shown_url(urlunsplit(parts._replace(scheme="http")))
        return (
            f"The server at that address speaks plain HTTP, not HTTPS: use --url {other} "
            "(or BONITO_URL), or put it behind a TLS proxy."
        )
    if parts.scheme == "http" and isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        other = shown_url(urlunsplit(parts._replace(scheme="https")))
        return (
            "The server closed the connection without answering: if it speaks HTTPS only, "
            f"use --url {other} (or BONITO_URL)."
        )
    return ""


class Unreachable(CliError):
    """The server could not be reached or did not answer: nothing it said, nothing to read."""


class Client:
    def __init__(self, url: str, token: str | None, timeout: float = 30.0):
        self.url = server_url(url)
        self.token = token = clean_token(token)
        headers = {"User-Agent": f"bonito-cli/{__version__}", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = http_client(base_url=self.url, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, *, auth: bool = True, **kwargs) -> httpx.Response:
        if auth and not self.token:
            raise CliError("Not logged in: run `bonito auth login` or set BONITO_TOKEN.", AUTH)
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise Unreachable(
                f"Cannot reach {shown_url(self.url)}: {self._scrub(exc)}. "
                + (scheme_hint(self.url, exc) or "Is the server running?")
            ) from None
        except httpx.TimeoutException:
            raise Unreachable(f"{shown_url(self.url)} did not answer in time.") from None
        except httpx.HTTPError as exc:
            hint = scheme_hint(self.url, exc)
            raise Unreachable(
                f"Talking to {shown_url(self.url)} failed: {self._scrub(exc)}"
                + (f". {hint}" if hint else "")
            ) from None
        raise_for(response)
        return response

    def _scrub(self, exc) -> str:
        """An httpx error's text without the token or a URL's password in it."""
        text = str(exc)
        if self.token:
            text = text.replace(self.token, "***")
        return text.replace(self.url, shown_url(self.url))

    def get(self, path: str, **params):
        return body_of(
            self.request("GET", path, params={k: v for k, v in params.items() if v is not None})
        )

    def post(self, path: str, body=None):
        return body_of(self.request("POST", path, json=body if body is not None else {}))

    def patch(self, path: str, body):
        return body_of(self.request("PATCH", path, json=body))

    def put(self, path: str, body):
        return body_of(self.request("PUT", path, json=body))

    def delete(self, path: str):
        self.request("DELETE", path)

    def list(self, path: str, limit: int | None = None, **params) -> list:
        """Every row of a list endpoint, following its pages (up to ``limit`` rows)."""
        rows: list = []
        page = 1
        while limit is None or len(rows) < limit:
            body = self.get(path, page=page, **params)
            if isinstance(body, list):  # not paginated
                rows = body
                break
            results = expect(body, dict, path).get("results")
            rows.extend(expect(results, list, path))
            if not body.get("next") or not results:
                break
            if page >= MAX_PAGES:
                raise CliError(f"{path}: more than {MAX_PAGES} pages; narrow it with --limit.")
            page += 1
        for row in rows:
            expect(row, dict, path)
        return rows if limit is None else rows[:limit]
