"""Azure Key Vault, Microsoft Entra ID, Google's token endpoint and GCP Secret Manager, faked
at the HTTP level: one HTTPS server (a test CA's certificate naming the real host names)
behind an HTTP CONNECT proxy, so the official SDKs call their usual URLs (HTTPS_PROXY) and
verify TLS against the test CA (REQUESTS_CA_BUNDLE), as they would behind a corporate proxy."""

import base64
import contextlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from gateway.tests.tls_ca import make_tls, server_context

HOSTS = (
    "bonito.vault.azure.net",
    "login.microsoftonline.com",
    "oauth2.googleapis.com",
    "secretmanager.googleapis.com",
)
TENANT = "00000000-0000-0000-0000-0000000000aa"
AAD_TOKEN = "fake-entra-access-token"
GCP_TOKEN = "fake-google-access-token"


class FakeClouds:
    def __init__(self, folder: Path):
        self.ca, cert, key = make_tls(folder, HOSTS)
        self.secrets: dict[str, str] = {}  # Key Vault secret name / GCP resource -> text
        self.requests: list[tuple[str, str, str, str]] = []  # host, method, path, authorization
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body, headers=()):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                host = (self.headers.get("Host") or "").split(":")[0]
                path = urlsplit(self.path).path
                auth = self.headers.get("Authorization") or ""
                outer.requests.append((host, method, path, auth))
                if host == "login.microsoftonline.com":
                    base = f"https://login.microsoftonline.com/{TENANT}"
                    if path.endswith("/token"):
                        return self._send(
                            200,
                            {
                                "token_type": "Bearer",
                                "expires_in": 3600,
                                "ext_expires_in": 3600,
                                "access_token": AAD_TOKEN,
                            },
                        )
                    if "discovery/instance" in path:
                        return self._send(
                            200,
                            {
                                "tenant_discovery_endpoint": f"{base}/v2.0/.well-known/openid-configuration",
                                "api-version": "1.1",
                                "metadata": [
                                    {
                                        "preferred_network": "login.microsoftonline.com",
                                        "preferred_cache": "login.microsoftonline.com",
                                        "aliases": ["login.microsoftonline.com"],
                                    }
                                ],
                            },
                        )
                    return self._send(
                        200,
                        {
                            "token_endpoint": f"{base}/oauth2/v2.0/token",
                            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                            "issuer": f"{base}/v2.0",
                        },
                    )
                if host == "bonito.vault.azure.net" and path.startswith("/secrets/"):
                    if auth != f"Bearer {AAD_TOKEN}":
                        challenge = (
                            f'Bearer authorization="https://login.microsoftonline.com/{TENANT}",'
                            ' resource="https://vault.azure.net"'
                        )
                        return self._send(
                            401,
                            {"error": {"code": "Unauthorized"}},
                            [("WWW-Authenticate", challenge)],
                        )
                    name = path.split("/")[2]
                    if name not in outer.secrets:
                        return self._send(
                            404, {"error": {"code": "SecretNotFound", "message": "not found"}}
                        )
                    return self._send(
                        200,
                        {
                            "value": outer.secrets[name],
                            "id": f"https://bonito.vault.azure.net/secrets/{name}/1",
                            "attributes": {"enabled": True},
                        },
                    )
                if host == "oauth2.googleapis.com" and path == "/token":
                    return self._send(
                        200, {"access_token": GCP_TOKEN, "expires_in": 3600, "token_type": "Bearer"}
                    )
                if host == "secretmanager.googleapis.com" and path.endswith(":access"):
                    if auth != f"Bearer {GCP_TOKEN}":
                        return self._send(
                            401,
                            {
                                "error": {
                                    "code": 401,
                                    "message": "unauthenticated",
                                    "status": "UNAUTHENTICATED",
                                }
                            },
                        )
                    name = path.removeprefix("/v1/").removesuffix(":access")
                    if name not in outer.secrets:
                        return self._send(
                            404,
                            {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}},
                        )
                    data = base64.b64encode(outer.secrets[name].encode()).decode()
                    return self._send(200, {"name": name, "payload": {"data": data}})
                return self._send(404, {"error": "unknown"})

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

        self.https = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = server_context(cert, key)
        self.https.socket = context.wrap_socket(self.https.socket, server_side=True)
        self.proxy = ThreadingHTTPServer(("127.0.0.1", 0), self._proxy_handler())
        self.tunnels: list[str] = []
        for server in (self.https, self.proxy):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.server_address[1]}"

    def env(self) -> dict:
        return {"HTTPS_PROXY": self.proxy_url, "REQUESTS_CA_BUNDLE": str(self.ca), "NO_PROXY": ""}

    def _proxy_handler(self):
        outer = self

        class Connect(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_CONNECT(self):
                outer.tunnels.append(self.path)
                if self.path.split(":")[0] not in HOSTS:
                    self.send_error(403)
                    return
                upstream = socket.create_connection(("127.0.0.1", outer.https.server_address[1]))
                self.send_response(200, "Connection established")
                self.end_headers()
                self.wfile.flush()
                client = self.connection

                def pump(src, dst):
                    try:
                        while data := src.recv(65536):
                            dst.sendall(data)
                    except OSError:
                        pass
                    finally:
                        for s in (src, dst):
                            with contextlib.suppress(OSError):
                                s.shutdown(socket.SHUT_RDWR)

                t = threading.Thread(target=pump, args=(upstream, client), daemon=True)
                t.start()
                pump(client, upstream)
                t.join(5)
                upstream.close()

        return Connect

    def close(self):
        for server in (self.https, self.proxy):
            server.shutdown()
            server.server_close()
