"""What the agent says when the control plane does not answer as it should: the control
plane's error code and words (bounded, never a token) for a config pull, a heartbeat and a
usage post, and in /ready; a URL that is not a Bonito control plane's (a 404, a body that is
not Bonito's, a 401 from something else) is called that, not a refused token; a control
plane it cannot reach is logged with the transport's own words."""

import contextlib
import json
import logging
import re
import socket
import threading
import time
import uuid
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from agents.runtime import settings as agent_settings
from agents.runtime.app import Agent
from agents.runtime.control import Refused, Unavailable
from agents.tests.agent_harness import AgentProcess, LoopbackHttp, wait_for
from core import keys
from gateway.tests.conftest import free_port

# What the control plane answers without a KEY_HASH_SECRET of its own (agents/api.py).
SHARED_DETAIL = (
    "The control plane has no KEY_HASH_SECRET of its own: set one before enabling VPC agents."
)
SHARED = (503, "application/json", {"detail": SHARED_DETAIL, "code": "hash_secret_shared"})
DJANGO_404 = (404, "text/html; charset=utf-8", "<!doctype html><title>Not Found</title>")
OPENAI_401 = (
    401,
    "application/json",
    {
        "error": {
            "message": "Invalid API key.",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    },
)


class FakeControlPlane(LoopbackHttp):
    """A real HTTP server answering every call with one (status, content type, body)."""

    def __init__(self, answer, clock_offset_s: float = 0.0):
        self.answer = answer
        self.calls: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def date_time_string(self, timestamp=None):  # its clock, in the Date header
                return formatdate((timestamp or time.time()) + clock_offset_s, usegmt=True)

            def _reply(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                outer.calls.append(f"{self.command} {self.path}")
                status, kind, body = outer.answer
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _reply

        self.serve(Handler)


@pytest.fixture
def fake():
    server = FakeControlPlane(SHARED)
    yield server
    server.close()


def _agent(tmp_path, url: str, token: str) -> Agent:
    s = agent_settings.load(
        {
            "BONITO_CONTROL_PLANE": url,
            "BONITO_ORG_TOKEN": token,
            "BONITO_STATE_DIR": str(tmp_path / "state"),
            "BONITO_CONTROL_PLANE_TIMEOUT_S": "3",
        }
    )
    return Agent(s)


def _record() -> dict:
    return {"id": str(uuid.uuid4()), "org_id": 1, "status": "success", "created_at": time.time()}


def test_the_control_planes_error_is_logged_for_a_pull_a_heartbeat_and_a_usage_post(
    fake, tmp_path, caplog
):
    token = keys.generate("bt-")
    agent = _agent(tmp_path, fake.url, token)
    caplog.set_level(logging.INFO, logger="bonito.agent")
    assert agent.sync.pull() == "unreachable"  # a 503: retried at the next interval
    assert agent.sync.problem == f"config pull answered 503 hash_secret_shared: {SHARED_DETAIL}"
    agent.sync.heartbeat()
    with pytest.raises(Unavailable) as info:
        agent.writer([_record()])
    assert str(info.value) == f"ingest answered 503 hash_secret_shared: {SHARED_DETAIL}"
    assert fake.calls == [
        "GET /api/agent/config",
        "POST /api/agent/heartbeat",
        "POST /api/agent/ingest",
    ]
    lines = [r.getMessage() for r in caplog.records if r.name == "bonito.agent"]
    assert lines == [
        f"config pull answered 503 hash_secret_shared: {SHARED_DETAIL}; keeping config version None",
        f"heartbeat answered 503 hash_secret_shared: {SHARED_DETAIL}",
        f"usage post failed (ingest answered 503 hash_secret_shared: {SHARED_DETAIL});"
        " the batch stays spooled and is retried",
    ]
    with pytest.raises(Unavailable):
        agent.writer([_record()])  # the same problem again: not logged again
    assert len([r for r in caplog.records if r.name == "bonito.agent"]) == 3


def test_an_error_detail_is_bounded_one_line_and_never_quotes_a_token(fake, tmp_path, caplog):
    token = keys.generate("bt-")
    fake.answer = (
        503,
        "application/json",
        {"detail": f"down for\nmaintenance; token {token} " + "x" * 5000, "code": "unavailable"},
    )
    agent = _agent(tmp_path, fake.url, token)
    caplog.set_level(logging.INFO, logger="bonito.agent")
    agent.sync.pull()
    problem = agent.sync.problem
    assert problem.startswith(
        "config pull answered 503 unavailable: down for maintenance; token bt-…"
    )
    assert token not in caplog.text and token[3:] not in caplog.text
    assert "\n" not in problem and len(problem) < 400


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (
            DJANGO_404,
            "config pull answered 404 with a body (text/html) that is not Bonito's JSON error",
        ),
        (
            (
                404,
                "application/json",
                {"detail": "No agent API endpoint at /x.", "code": "not_found"},
            ),
            "config pull answered 404 not_found: No agent API endpoint at /x.",
        ),
        (
            (200, "text/html", "<html>a login page</html>"),
            "config pull answered 200 with a body (text/html) that is not JSON",
        ),
        (
            OPENAI_401,
            "config pull answered 401 with a body (application/json) that is not Bonito's JSON error",
        ),
    ],
)
def test_a_url_that_is_not_a_bonito_control_plane_is_called_that(
    fake, tmp_path, caplog, answer, says
):
    fake.answer = answer
    agent = _agent(tmp_path, fake.url, keys.generate("bt-"))
    caplog.set_level(logging.INFO, logger="bonito.agent")
    agent.sync.pull()
    assert agent.sync.problem.startswith(says), agent.sync.problem
    assert f"BONITO_CONTROL_PLANE ({fake.url}) does not look like a Bonito control plane" in (
        agent.sync.problem
    )
    assert "refused the org token" not in caplog.text  # the token was never judged


def test_a_401_from_the_agent_api_is_still_a_refused_token(fake, tmp_path, caplog):
    fake.answer = (
        401,
        "application/json",
        {"detail": "The org token is unknown, revoked or expired.", "code": "unauthorized"},
    )
    agent = _agent(tmp_path, fake.url, keys.generate("bt-"))
    caplog.set_level(logging.INFO, logger="bonito.agent")
    assert agent.sync.pull() == "refused"
    assert (
        "the control plane refused the org token (401 unauthorized: The org token is" in caplog.text
    )
    assert "does not look like a Bonito control plane" not in caplog.text


def test_an_unreachable_control_plane_is_logged_with_the_transports_words(fake, tmp_path, caplog):
    token = keys.generate("bt-")
    nobody = f"http://127.0.0.1:{free_port()}"  # nobody listens
    tls = f"https://127.0.0.1:{fake.server.server_address[1]}"  # TLS to a plain HTTP server
    for url, words in [
        (nobody, "ConnectError: [Errno 111] Connection refused"),
        (tls, "ConnectError: [SSL"),
    ]:
        caplog.clear()
        agent = _agent(tmp_path, url, token)
        caplog.set_level(logging.INFO, logger="bonito.agent")
        assert agent.sync.pull() == "unreachable"
        assert agent.sync.problem.startswith(
            f"config pull failed: control plane unreachable ({words}"
        ), agent.sync.problem
        agent.sync.heartbeat()
        with pytest.raises(Unavailable, match=re.escape(f"control plane unreachable ({words}")):
            agent.writer([_record()])
        assert caplog.text.count(words) == 3, caplog.text
        assert token not in caplog.text


@pytest.mark.slow
def test_ready_says_why_it_is_not_ready(fake, tmp_path):
    # A real agent process against a control plane that refuses to hand out its config.
    agent = AgentProcess(tmp_path / "state", fake.url, keys.generate("bt-"))

    def ready() -> httpx.Response:
        return httpx.get(agent.url + "/ready", timeout=2)

    try:
        agent.start(wait_ready=False)
        assert wait_for(lambda: ready().json()["reason"], 20), agent.log()
        r = ready()
        assert r.status_code == 503
        assert r.json() == {
            "status": "starting",
            "detail": "no config loaded yet",
            "reason": f"config pull answered 503 hash_secret_shared: {SHARED_DETAIL}",
        }
        assert f"503 hash_secret_shared: {SHARED_DETAIL}" in agent.log(whole=True)

        # Now something that is not a control plane answers there: /ready says so.
        fake.answer = DJANGO_404
        assert wait_for(lambda: "404" in ready().json()["reason"], 10), agent.log()
        r = ready()
        assert r.status_code == 503
        assert "does not look like a Bonito control plane" in r.json()["reason"]
    finally:
        agent.stop()


@pytest.mark.parametrize(
    "answer",
    [
        (200, "text/html", "<html>a single-page app's index, for every path</html>"),
        (200, "application/json", {"ok": True}),
        (204, "text/plain", ""),
    ],
)
def test_a_usage_post_is_stored_only_when_the_control_plane_says_it_took_that_batch(
    fake, tmp_path, caplog, answer
):
    """Something else at BONITO_CONTROL_PLANE (a catch-all page, a proxy) may answer a
    POST with a 2xx: that stores nothing, so the batch stays spooled and is retried (it was
    taken for stored and the usage was gone). The agent API answers with the batch's id."""
    fake.answer = answer
    agent = _agent(tmp_path, fake.url, keys.generate("bt-"))
    caplog.set_level(logging.INFO, logger="bonito.agent")
    with pytest.raises(Unavailable) as info:
        agent.writer([_record()])
    assert str(info.value).startswith(f"ingest answered {answer[0]} with "), info.value
    assert f"BONITO_CONTROL_PLANE ({fake.url}) does not look like a Bonito control plane" in str(
        info.value
    )
    assert "usage post failed" in caplog.text

    # In the usage sink: nothing is lost, everything is in the spool.
    sink = agent.gateway.sink
    sink.retry_interval = 0.05
    records = [_record() for _ in range(3)]
    for record in records:
        sink.submit(record)
    assert sink.flush(10)
    assert sink.written == 0 and sink.spooled == 3
    sink.stop()


@pytest.mark.parametrize(
    "answer",
    [
        (400, "text/html", "<html><h1>400 Bad Request</h1>a proxy or WAF said no</html>"),
        (422, "application/json", {"error": "a gateway in front has its own errors"}),
        (400, "text/plain", ""),
    ],
)
def test_a_400_or_422_that_is_not_bonitos_keeps_the_usage_spooled(fake, tmp_path, caplog, answer):
    """Only the agent API's own refusal ({"detail", "code"}) sets records aside: a 400 or
    422 from something else at that URL (a proxy, a WAF, a load balancer's error page) says
    nothing about the records. It was taken as the control plane refusing them, so every
    record was split out and set aside in dead/, never sent again."""
    fake.answer = answer
    agent = _agent(tmp_path, fake.url, keys.generate("bt-"))
    with pytest.raises(Unavailable) as info:
        agent.writer([_record()])
    assert "does not look like a Bonito control plane" in str(info.value)
    sink = agent.gateway.sink
    sink.retry_interval = 0.05
    for _ in range(3):
        sink.submit(_record())
    assert sink.flush(10)
    assert sink.written == 0 and sink.spooled == 3 and sink.dead_lettered == 0
    sink.stop()


def test_the_agent_apis_own_refusal_still_sets_the_records_aside(fake, tmp_path):
    fake.answer = (
        422,
        "application/json",
        {"detail": "1 record(s) refused", "code": "records_refused", "errors": []},
    )
    agent = _agent(tmp_path, fake.url, keys.generate("bt-"))
    with pytest.raises(Refused):
        agent.writer([_record()])


class Trickle:
    """A raw HTTP server whose answer to every call is a 200 that never ends: its headers,
    then one byte of body every ``every`` seconds (a slow proxy, a half-dead control plane);
    or, with ``huge``, that many bytes of body as fast as the link takes them."""

    def __init__(self, every: float = 0.3, huge: int = 0):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.every, self.huge = every, huge
        self.closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn):
        with conn, contextlib.suppress(OSError):
            conn.recv(1 << 20)
            length = self.huge or 10**9
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {length}\r\n\r\n".encode()
            )
            if self.huge:
                block = b" " * (1 << 20)
                for _ in range(self.huge // len(block)):
                    conn.sendall(block)
                return
            while not self.closed.wait(self.every):
                conn.sendall(b" ")

    def close(self):
        self.closed.set()
        self.sock.close()


@pytest.mark.parametrize("huge", [0, 300 * 2**20])
def test_a_call_to_the_control_plane_is_bounded_in_time_and_size(tmp_path, huge):
    """BONITO_CONTROL_PLANE_TIMEOUT_S bounds a whole call: an answer trickling a byte at a
    time held the sync thread (no pull, no heartbeat) or the usage sink's for ever, as
    httpx's timeout bounds each read only. An answer far larger than any config (something
    else at that URL) is not read whole into memory."""
    server = Trickle(huge=huge)
    try:
        agent = _agent(tmp_path, server.url, keys.generate("bt-"))  # a 3 s timeout
        t0 = time.monotonic()
        assert agent.sync.pull() == "unreachable"
        assert time.monotonic() - t0 < 8
        assert agent.sync.problem.startswith("config pull failed: control plane unreachable (")
        t0 = time.monotonic()
        agent.sync.heartbeat()
        with pytest.raises(Unavailable):
            agent.writer([_record()])
        assert time.monotonic() - t0 < 16
    finally:
        server.close()


@pytest.mark.parametrize(
    "offset, said", [(-600, "600 s ahead of"), (600, "600 s behind"), (-5, None)]
)
def test_a_clock_off_the_control_plane_s_is_a_heartbeat_warning(tmp_path, caplog, offset, said):
    """The control plane refuses usage records dated over 5 minutes ahead of its clock: an
    agent whose host clock is off says so (log once, heartbeat warning) instead of only
    counting refused records."""
    server = FakeControlPlane(SHARED, clock_offset_s=offset)
    try:
        agent = _agent(tmp_path, server.url, keys.generate("bt-"))
        caplog.set_level(logging.WARNING, logger="bonito.agent")
        agent.sync.pull()
        agent.sync.pull()
        warnings = agent.stats.heartbeat_body(agent.sync)["warnings"]
        clock = [w for w in warnings if "clock" in w]
        if said is None:
            assert clock == []
        else:
            assert len(clock) == 1 and said in clock[0] and "NTP" in clock[0]
            logged = [r for r in caplog.records if "clock" in r.getMessage()]
            assert len(logged) == 1  # once, not at every call
    finally:
        server.close()
