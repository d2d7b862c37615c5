"""The agent's log at its default level (INFO) holds its own lines, not one line per call
to the control plane from the HTTP client library (a config pull every 30 s, a heartbeat
every minute: thousands of lines a day saying nothing)."""

import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler

import pytest

from agents.tests.agent_harness import LoopbackHttp, wait_for
from core import keys
from gateway.tests.conftest import free_port
from gateway.tests.external import ROOT

pytestmark = pytest.mark.slow


class Busy(BaseHTTPRequestHandler):
    seen: list = []

    def log_message(self, *args):
        pass

    def _answer(self):
        Busy.seen.append(self.path)
        body = b'{"detail": "The control plane is starting.", "code": "unavailable"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer


@pytest.mark.parametrize(("level", "client_lines"), [("", False), ("DEBUG", True)])
def test_the_http_clients_lines_are_debug_only(tmp_path, level, client_lines):
    cp = LoopbackHttp()
    cp.serve(Busy)
    Busy.seen = []
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BONITO_")},
        "BONITO_CONTROL_PLANE": cp.url,
        "BONITO_ORG_TOKEN": keys.generate("bt-"),
        "BONITO_STATE_DIR": str(tmp_path / "state"),
        "BONITO_AGENT_HOST": "127.0.0.1",
        "BONITO_AGENT_PORT": str(free_port()),
        "BONITO_SYNC_INTERVAL_S": "0.2",
        "BONITO_LOG_LEVEL": level,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents.runtime"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert wait_for(lambda: len(Busy.seen) >= 3, 30), Busy.seen
        time.sleep(0.3)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
        cp.close()
    assert "config pull answered 503 unavailable" in out, out  # its own line stays
    assert ("HTTP Request: GET" in out) is client_lines, out
