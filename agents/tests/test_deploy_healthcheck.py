"""deploy/healthcheck.py, the images' HEALTHCHECK: it must ask the port the process listens
on. The images asked a fixed http://127.0.0.1:8000, while the agent listens on
BONITO_AGENT_PORT and the platform on PORT (both documented settings): a container moved to
another port was unhealthy for ever (ECS and Compose's health checks restart or hold it)."""

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gateway.tests.external import ROOT

SCRIPT = ROOT / "deploy" / "healthcheck.py"


@pytest.fixture
def server():
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200 if self.path in ("/health", "/api/health") else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def _check(args, env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_path_is_asked_on_the_port_of_the_agent_or_the_platform(server):
    port = str(server)
    assert _check(["/health"], {"BONITO_AGENT_PORT": port}).returncode == 0
    assert _check(["/api/health"], {"PORT": port}).returncode == 0
    # the agent's port wins in the agent image (Cloud Run sets PORT too)
    assert _check(["/health"], {"BONITO_AGENT_PORT": port, "PORT": "1"}).returncode == 0
    assert _check(["/nothing"], {"BONITO_AGENT_PORT": port}).returncode == 1
    # a full URL still works as before
    assert _check([f"http://127.0.0.1:{port}/health"], {}).returncode == 0


def test_the_dockerfile_and_compose_checks_ask_by_path():
    texts = [
        (ROOT / "deploy" / name).read_text()
        for name in (
            "Dockerfile",
            "compose/agent.yaml",
            "compose/platform.yaml",
            "snippets/compose.yaml",
        )
    ]
    for text in texts:
        assert "healthcheck.py" in text
        assert 'healthcheck.py", "http://127.0.0.1:8000' not in text
