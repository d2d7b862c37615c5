"""The agent's usage reporter: the data plane's UsageSink (journal + spool) writing gzip
batches to a control plane faked at the HTTP level, answering as protocol.md says."""

import gzip
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agents.runtime import settings as agent_settings
from agents.runtime.control import ControlPlane, IngestWriter, batch_id, is_refusal
from agents.runtime.state import Token
from core import keys
from gateway.dataplane.usage import UsageSink


class FakeIngest:
    """/api/agent/ingest: ``answer(records) -> status`` decides; accepted records are kept."""

    def __init__(self, answer):
        self.answer = answer
        self.accepted: dict[str, dict] = {}
        self.calls: list[tuple[str, int, int]] = []  # batch id, records, status
        self.tokens: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                assert self.headers["Content-Encoding"] == "gzip"
                body = json.loads(gzip.decompress(raw))
                outer.tokens.append(self.headers["Authorization"])
                status = outer.answer(body["records"])
                outer.calls.append((body["batch_id"], len(body["records"]), status))
                if status == 200:
                    new = [r for r in body["records"] if r["id"] not in outer.accepted]
                    outer.accepted.update({r["id"]: r for r in new})
                    out = {"batch_id": body["batch_id"], "accepted": len(new), "duplicates": 0}
                else:
                    out = {"detail": "refused", "code": "x"}
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _record(model="chat-small"):
    return {
        "id": str(uuid.uuid4()),
        "org_id": 1,
        "key_id": 1,
        "model_requested": model,
        "status": "success",
        "cost": 0.001,
        "created_at": time.time(),
    }


def _sink(tmp_path, fake, **options):
    s = agent_settings.load(
        {
            "BONITO_CONTROL_PLANE": fake.url,
            "BONITO_ORG_TOKEN": keys.generate("bt-"),
            "BONITO_STATE_DIR": str(tmp_path),
        }
    )
    control = ControlPlane(s, Token(s.token, tmp_path), str(uuid.uuid4()))
    writer = IngestWriter(control)
    sink = UsageSink(
        writer,
        s.spool_dir,
        batch_size=5000,
        journal_dir=s.journal_dir,
        dead_letter_dir=s.dead_letter_dir,
        is_refusal=is_refusal,
        retry_interval=0.05,
        **options,
    )
    return sink, writer


@pytest.fixture
def fake():
    servers = []

    def make(answer):
        servers.append(FakeIngest(answer))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def _wait(predicate, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline and not predicate():
        time.sleep(0.02)
    return predicate()


def test_a_batch_over_the_size_limit_is_split_until_it_fits(tmp_path, fake):
    server = fake(lambda records: 413 if len(records) > 2 else 200)
    sink, _ = _sink(tmp_path, server)
    records = [_record() for _ in range(9)]
    sink.start()
    for r in records:
        sink.submit(r)
    assert sink.flush(10)
    assert set(server.accepted) == {r["id"] for r in records}
    assert sink.dead_lettered == 0
    sink.stop()


def test_a_refused_record_is_isolated_and_set_aside_the_rest_arrive(tmp_path, fake):
    server = fake(
        lambda records: 422 if any(r["model_requested"] == "poison" for r in records) else 200
    )
    sink, _ = _sink(tmp_path, server)
    good = [_record() for _ in range(6)]
    bad = _record("poison")
    sink.start()
    for r in [*good[:3], bad, *good[3:]]:
        sink.submit(r)
    assert sink.flush(10)
    assert set(server.accepted) == {r["id"] for r in good}
    assert sink.dead_lettered == 1
    dead = (tmp_path / "dead").glob("*.jsonl")
    assert [
        json.loads(line)["record"]["id"] for f in dead for line in f.read_text().splitlines()
    ] == [bad["id"]]
    sink.stop()


@pytest.mark.parametrize("status", [401, 403, 429, 500, 503])
def test_an_unavailable_control_plane_keeps_everything_and_a_retry_keeps_its_batch_id(
    tmp_path, fake, status
):
    state = {"status": status}
    server = fake(lambda records: state["status"])
    sink, _ = _sink(tmp_path, server, retry_backoff_max=0.2)
    records = [_record() for _ in range(5)]
    sink.start()
    for r in records:
        sink.submit(r)
    assert sink.flush(10)
    assert _wait(lambda: len(server.calls) >= 3)  # retried (with backoff), still refused
    assert not server.accepted and sink.dead_lettered == 0
    spooled = list((tmp_path / "spool").glob("*.jsonl"))
    assert spooled and all(oct(f.stat().st_mode & 0o777) == "0o600" for f in spooled)
    state["status"] = 200
    assert _wait(lambda: len(server.accepted) == 5)
    # Every retry of a batch carried its first id: each id refused was later accepted.
    accepted_ids = [bid for bid, _n, s in server.calls if s == 200]
    assert {bid for bid, _n, _s in server.calls} == set(accepted_ids)
    assert len(accepted_ids) == len(set(accepted_ids))
    assert _wait(lambda: not any((tmp_path / "spool").glob("*.jsonl")))
    sink.stop()


def test_batch_ids_depend_on_the_content_only():
    a, b = json.dumps([_record()]).encode(), json.dumps([_record()]).encode()
    assert batch_id(a) == batch_id(a) != batch_id(b)
    assert uuid.UUID(batch_id(a)).version == 4


def test_the_writer_posts_at_most_one_batch_per_interval(tmp_path, fake):
    server = fake(lambda records: 200)
    sink, _ = _sink(tmp_path, server, min_batch_interval=0.5)
    sink.start()
    started = time.monotonic()
    while time.monotonic() - started < 1.6:
        sink.submit(_record())
        time.sleep(0.01)
    assert sink.flush(10)
    assert len(server.accepted) == sink._submitted
    # ~1.6 s of traffic: the first batch at once, then one per 0.5 s (the flush adds one).
    assert 2 <= len(server.calls) <= 6, server.calls
    sink.stop()


def test_a_full_spool_drops_its_oldest_records_and_counts_them(tmp_path, fake):
    server = fake(lambda records: 503)
    sink, _ = _sink(tmp_path, server, spool_max_bytes=4000, retry_backoff_max=60)
    sink.start()
    for _ in range(40):
        sink.submit(_record())
        assert sink.flush(10)
    files, size = sink.spool_bytes()
    assert size <= 4000
    assert sink.dropped > 0
    assert (
        sink.dropped + sum(f.read_text().count("\n") for f in (tmp_path / "spool").glob("*.jsonl"))
        == 40
    )
    sink.stop()


def test_a_batch_it_can_neither_post_nor_spool_is_kept_and_posted_when_it_can(tmp_path, fake):
    """The control plane away and the state folder's disk full (here: a file where the
    spool's folder should be, so the spool cannot be written): the batch is kept in memory
    and posted once the control plane answers; it was counted done and never sent."""
    state = {"status": 503}
    server = fake(lambda records: state["status"])
    sink, _ = _sink(tmp_path, server)
    (tmp_path / "spool").write_text("")  # not a folder: every spool write fails
    records = [_record() for _ in range(5)]
    sink.start()
    for r in records:
        sink.submit(r)
    assert not sink.flush(1)  # neither posted nor spooled: not done
    assert _wait(lambda: len(server.calls) >= 2)  # tried again
    assert not server.accepted
    state["status"] = 200
    assert sink.flush(10)
    assert set(server.accepted) == {r["id"] for r in records}
    sink.stop()
    # Stored: the journal goes too (it was kept for ever after one failed spool).
    assert not list((tmp_path / "journal").glob("*.jsonl"))


def test_records_set_aside_go_back_to_the_control_plane_with_requeue_dead(tmp_path, fake):
    """Once the cause of a refusal is fixed, ``python -m agents.runtime requeue-dead`` puts
    the records set aside back in the spool and the running agent sends them: each arrives
    once, and one still refused is set aside again."""
    import os
    import subprocess
    import sys

    refused = {"poison", "still-poison"}
    server = fake(
        lambda records: 422 if any(r["model_requested"] in refused for r in records) else 200
    )
    sink, _ = _sink(tmp_path, server)
    fixed, still = _record("poison"), _record("still-poison")
    sink.start()
    try:
        for r in (_record(), fixed, still):
            sink.submit(r)
        assert sink.flush(10)
        assert sink.dead_lettered == 2

        refused.discard("poison")  # the cause is fixed for one of them
        env = {
            **os.environ,
            "BONITO_CONTROL_PLANE": server.url,
            "BONITO_ORG_TOKEN": keys.generate("bt-"),
            "BONITO_STATE_DIR": str(tmp_path),
        }
        done = subprocess.run(
            [sys.executable, "-m", "agents.runtime", "requeue-dead"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("2 usage records put back in ")
        # (dead/ is not checked empty here: the running agent may already have replayed
        # the spool and set the still-refused record aside again.)

        assert _wait(lambda: fixed["id"] in server.accepted and sink.dead_lettered == 3)
        assert still["id"] not in server.accepted
        [line] = [
            ln for f in (tmp_path / "dead").glob("*.jsonl") for ln in f.read_text().splitlines()
        ]
        assert json.loads(line)["record"]["id"] == still["id"]
        assert len(server.accepted) == 2  # the good one and the fixed one, once each

        wrong = subprocess.run(
            [sys.executable, "-m", "agents.runtime", "requeue"], env=env, capture_output=True
        )
        assert wrong.returncode == 2 and b"usage:" in wrong.stderr
    finally:
        sink.stop()


def test_a_spool_it_cannot_write_is_one_clear_log_line(tmp_path, fake, caplog):
    """The control plane away and the spool unwritable (a full disk; here a file where the
    spool's folder should be) are expected in the field: one line naming the cause, no
    traceback (they read as a crash), once until a batch is stored again."""
    server = fake(lambda records: 503)
    sink, _ = _sink(tmp_path, server)
    (tmp_path / "spool").write_text("")
    sink.start()
    try:
        with caplog.at_level("WARNING"):
            sink.submit(_record())
            assert not sink.flush(1)
            assert _wait(lambda: len(server.calls) >= 2)
    finally:
        sink.stop()
    spool = [r for r in caplog.records if "spool" in r.getMessage()]
    assert spool and not [r for r in caplog.records if r.exc_info], caplog.text
    [failed] = [r for r in spool if "usage spool failed" in r.getMessage()]
    assert str(tmp_path / "spool") in failed.getMessage(), failed.getMessage()
