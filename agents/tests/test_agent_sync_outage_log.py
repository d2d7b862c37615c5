"""While the control plane is away, the agent's config pulls and heartbeats fail at every
interval (30 s, 60 s) for as long as it lasts: the log says so when it starts, then at most
once a minute with how long it has lasted, and once when it ends — not once per try."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agents.runtime import settings as agent_settings
from agents.runtime.app import Agent
from agents.tests.test_agent_config_sync import _full
from core import keys


class FlakyControlPlane:
    def __init__(self):
        self.down = True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status, doc):
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if outer.down:
                    return self._answer(503, {"detail": "maintenance"})
                self._answer(200, _full(1, 5, "h1"))

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                if outer.down:
                    return self._answer(503, {"detail": "maintenance"})
                self._answer(200, {"config_version": 5})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def agent(tmp_path):
    plane = FlakyControlPlane()
    s = agent_settings.load(
        {
            "BONITO_CONTROL_PLANE": f"http://127.0.0.1:{plane.server.server_address[1]}",
            "BONITO_ORG_TOKEN": keys.generate("bt-"),
            "BONITO_STATE_DIR": str(tmp_path),
        }
    )
    agent = Agent(s)
    clock = Clock()
    agent.sync._pull_repeats.clock = agent.sync._beat_repeats.clock = clock
    yield plane, agent, clock
    plane.server.shutdown()
    plane.server.server_close()


@pytest.mark.parametrize(
    ("step", "interval", "said"),
    [("pull", 30, "config pull"), ("heartbeat", 60, "heartbeat")],
)
def test_a_long_outage_is_a_line_a_minute_and_one_when_it_ends(agent, caplog, step, interval, said):
    plane, agent, clock = agent
    if step == "heartbeat":
        plane.down = False
        agent.sync.pull()  # a config to beat for
        plane.down = True
    with caplog.at_level("INFO", logger="bonito.agent"):
        tries = 0
        while tries * interval <= 10 * 60:  # ten minutes of tries at the step's interval
            getattr(agent.sync, step)()
            clock.now += interval
            tries += 1
        plane.down = False
        getattr(agent.sync, step)()
        getattr(agent.sync, step)()  # and passing again says nothing more
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(said)]
    failing = [line for line in lines if "back after" not in line]
    back = [line for line in lines if "back after" in line]
    assert interval >= 60 or tries > len(failing), lines
    # the first try, then one a minute: 11 over 10 minutes (the first without a duration)
    assert len(failing) == 11, lines
    assert "503" in failing[0] and "failing for" not in failing[0]
    assert all("failing for" in line for line in failing[1:]), lines
    assert failing[-1].endswith("(failing for 10m)"), failing[-1]
    assert back == [f"{said}: control plane back after {(tries * interval) // 60}m"], lines


def test_a_changed_reason_is_said_at_once(agent, caplog):
    plane, agent, clock = agent
    with caplog.at_level("WARNING", logger="bonito.agent"):
        agent.sync.pull()  # 503
        clock.now += 5
        plane.server.shutdown()
        plane.server.server_close()  # now nothing listens: unreachable
        agent.sync.pull()
        clock.now += 5
        agent.sync.pull()  # the same reason again, within the minute: not said
    pulls = [r.getMessage() for r in caplog.records if r.getMessage().startswith("config pull")]
    assert len(pulls) == 2, pulls
    assert "503" in pulls[0] and "unreachable" in pulls[1] and "(failing for 5s)" in pulls[1]
