"""While the control plane does not take usage, the agent spools it and retries: its log
says so once when the outage starts (why), at most once a minute while it lasts (how long,
how many records are spooled), and once when the spool is sent ("control plane back; N
spooled records sent") — not a line per retry, nor one per spooled file sent."""

import gzip
import json
import logging
import re
import time
import uuid
from http.server import BaseHTTPRequestHandler

import pytest

from agents.runtime import settings as agent_settings
from agents.runtime.app import Agent
from agents.runtime.control import ControlPlane as Control
from agents.runtime.control import IngestWriter, Unavailable
from agents.runtime.state import Token
from agents.tests.agent_harness import (
    AgentProcess,
    ControlPlane,
    LoopbackHttp,
    RecordingLink,
    wait_for,
)
from core import keys
from gateway.dataplane.usage import _write_spool_file
from gateway.tests.fake_upstream import FakeUpstream

BUSY = {"detail": "The control plane is starting.", "code": "unavailable"}


class Ingest(LoopbackHttp):
    """/api/agent/ingest as the control plane answers it: 503 while ``down``, else the
    batch's id and how many records it took."""

    def __init__(self):
        self.down = True
        self.records = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if outer.down:
                    status, answer = 503, BUSY
                else:
                    batch = json.loads(gzip.decompress(body))
                    outer.records += len(batch["records"])
                    status = 200
                    answer = {"batch_id": batch["batch_id"], "accepted": len(batch["records"])}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.serve(Handler)


class Clock:
    """The writer's clock: 7 s later at each look (a retry's worth of time)."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        self.now += 7
        return self.now


def _record() -> dict:
    return {"id": str(uuid.uuid4()), "org_id": 1, "status": "success", "created_at": time.time()}


def test_a_long_outage_is_one_line_then_one_a_minute_then_one_when_back(tmp_path, caplog):
    ingest = Ingest()
    s = agent_settings.load(
        {
            "BONITO_CONTROL_PLANE": ingest.url,
            "BONITO_ORG_TOKEN": keys.generate("bt-"),
            "BONITO_STATE_DIR": str(tmp_path / "state"),
        }
    )
    agent = Agent(s)
    sink, writer = agent.gateway.sink, agent.writer
    writer.outage.clock = clock = Clock()
    # Retried at once (the agent's backoff is up to a minute, which the clock stands for).
    sink.retry_interval, sink.retry_backoff_max, sink.min_batch_interval = 0.01, 0.02, 0
    caplog.set_level(logging.INFO, logger="bonito.agent")
    try:
        submitted, deadline = 0, time.monotonic() + 60
        while clock.now < 1000 + 7 * 60:  # seven minutes away
            assert time.monotonic() < deadline, "the writer no longer reads its clock"
            for _ in range(3):
                sink.submit(_record())
            submitted += 3
            assert sink.flush(10)
            time.sleep(0.05)  # a few retries of the spool
        assert ingest.records == 0
        down = [r for r in caplog.records if r.name == "bonito.agent"]
        assert down[0].getMessage() == (
            "usage post failed (ingest answered 503 unavailable: The control plane is"
            " starting.); the batch stays spooled and is retried"
        )
        reminders = down[1:]
        assert 5 <= len(reminders) <= 7, [r.getMessage() for r in down]  # once a minute
        for reminder in reminders:
            assert re.fullmatch(
                r"usage posts still failing after \d+(s|m) \(ingest answered 503 unavailable:"
                r" The control plane is starting\.\); \d+ records spooled, sent when the"
                r" control plane is back",
                reminder.getMessage(),
            ), reminder.getMessage()
        counts = [int(re.search(r"(\d+) records spooled", r.getMessage())[1]) for r in reminders]
        assert counts == sorted(counts) and 0 < counts[-1] <= submitted, counts

        caplog.clear()
        ingest.down = False
        assert wait_for(lambda: ingest.records == submitted, 20), (ingest.records, submitted)
        # (the agent's own line: another logger's, the sink's, may come first)
        assert wait_for(lambda: any(r.name == "bonito.agent" for r in caplog.records), 5)
        assert [r.getMessage() for r in caplog.records if r.name == "bonito.agent"] == [
            f"control plane back; {submitted} spooled records sent"
        ]
        # Back to normal: a new batch is posted and nothing more is said.
        sink.submit(_record())
        assert sink.flush(10) and wait_for(lambda: ingest.records == submitted + 1, 10)
        assert len([r for r in caplog.records if r.name == "bonito.agent"]) == 1
    finally:
        sink.stop()
        ingest.close()


def test_a_changed_reason_waits_for_the_minutes_line(tmp_path, caplog):
    """Retries come far more often than config pulls: a reason that changes between them
    (a link that flaps between refusing and timing out) is said in the minute's line, not at
    every change; the line then names the reason of the moment."""
    ingest = Ingest()
    s = agent_settings.load(
        {
            "BONITO_CONTROL_PLANE": ingest.url,
            "BONITO_ORG_TOKEN": keys.generate("bt-"),
            "BONITO_STATE_DIR": str(tmp_path),
        }
    )
    writer = IngestWriter(Control(s, Token(s.token, tmp_path), str(uuid.uuid4())))
    writer.outage.clock = Clock()
    caplog.set_level(logging.INFO, logger="bonito.agent")
    try:
        with pytest.raises(Unavailable):
            writer([_record()])  # 503
        ingest.close()  # nothing listens now: unreachable
        for _ in range(9):  # 7 s apart: the minute has passed at the 10th try
            with pytest.raises(Unavailable):
                writer([_record()])
    finally:
        writer.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "bonito.agent"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("usage post failed (ingest answered 503 unavailable"), lines
    assert lines[1].startswith("usage posts still failing after 63s (control plane unreachable")
    assert writer.problem.startswith("control plane unreachable"), writer.problem


@pytest.mark.slow
def test_the_agent_process_says_it_once_and_sends_everything(tmp_path):
    """Real processes: the control plane goes away (its port refuses connections) while the
    agent serves; every spooled record arrives once it is back, and the log has one line
    at each end of the outage and none per retry or per spooled file."""
    upstream = FakeUpstream().start()
    cp = ControlPlane(tmp_path / "cp", upstream.url)
    link = RecordingLink("127.0.0.1", cp.port).start()
    agent = AgentProcess(tmp_path / "agent-state", f"http://127.0.0.1:{link.port}", cp.token)
    try:
        agent.start()
        for _ in range(3):
            assert agent.chat(cp.key).status_code == 200
        assert wait_for(lambda: cp.usage_count() == 3, 20), agent.log()
        link.stop()
        away = 0
        deadline = time.time() + 8  # many retries (BONITO_INGEST_INTERVAL_S=0.5 here)
        while time.time() < deadline:
            assert agent.chat(cp.key).status_code == 200
            away += 1
            time.sleep(0.3)
        assert any((agent.state_dir / "spool").glob("*.jsonl")), agent.log()
        assert len(list((agent.state_dir / "spool").glob("*.jsonl"))) > 2  # several files
        link.start()
        assert wait_for(lambda: cp.usage_count() == 3 + away, 60, interval=0.5), agent.log()
        back = f"control plane back; {away} spooled records sent"
        assert wait_for(lambda: back in agent.log(whole=True), 10), agent.log()
    finally:
        agent.stop()
        link.stop()
        cp.close()
    log = agent.log(whole=True)
    assert log.count("usage post failed (control plane unreachable (ConnectError") == 1, log
    assert log.count("control plane back;") == 1, log
    assert "usage writer failed" not in log, log
    assert "spooled usage records from" not in log, log  # one line per spooled file


def test_a_spool_left_by_an_earlier_run_is_said_once_when_sent(tmp_path, caplog):
    """An agent stopped or killed while the control plane was away leaves a spool; the next
    run sends it with no outage of its own to end, and says so once (not once per file)."""
    ingest = Ingest()
    ingest.down = False
    s = agent_settings.load(
        {
            "BONITO_CONTROL_PLANE": ingest.url,
            "BONITO_ORG_TOKEN": keys.generate("bt-"),
            "BONITO_STATE_DIR": str(tmp_path / "state"),
        }
    )
    for seq in range(1, 4):
        _write_spool_file(s.spool_dir, f"{seq:06d}", [_record() for _ in range(seq)])
    caplog.set_level(logging.INFO, logger="bonito.agent")
    agent = Agent(s)
    sink = agent.gateway.sink
    sink.retry_interval, sink.min_batch_interval = 0.01, 0
    try:
        sink.submit(_record())  # this run's own record queues behind the spool
        assert sink.flush(10)
        assert wait_for(lambda: ingest.records == 1 + 2 + 3 + 1, 20), ingest.records
        assert wait_for(lambda: any(r.name == "bonito.agent" for r in caplog.records), 5)
        lines = [r.getMessage() for r in caplog.records if r.name == "bonito.agent"]
        assert len(lines) == 1 and re.fullmatch(
            r"(6|7) records spooled by an earlier run sent", lines[0]
        ), lines
        # Back to normal: a new batch is posted and nothing more is said.
        sink.submit(_record())
        assert sink.flush(10) and wait_for(lambda: ingest.records == 8, 10)
        assert len([r for r in caplog.records if r.name == "bonito.agent"]) == 1
    finally:
        sink.stop()
        ingest.close()
