"""Several worker processes, one agent: one heartbeat with every worker's counts."""

import json
import os
import subprocess

from agents.runtime.sync import Stats
from agents.runtime.workers import WorkerShare


def test_the_leader_sums_every_workers_counts_and_keeps_a_gone_workers_share(tmp_path):
    share = WorkerShare(tmp_path, workers=2)
    stats = Stats(share)
    for status in (200, 200, 502):
        stats.response(status)
    share.publish(stats)
    other = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / "workers" / f"{other.pid}.json").write_text(
            json.dumps({"requests": 5, "errors": 1, "providers": {}})
        )
        assert share.totals(stats)[:2] == (8, 2)
    finally:
        other.kill()
        other.wait()
    assert share.totals(stats)[:2] == (8, 2)  # its requests happened: they stay counted
    assert not (tmp_path / "workers" / f"{other.pid}.json").exists()
    assert (tmp_path / "workers" / f"{os.getpid()}.json").exists()


def test_one_worker_at_a_time_sends_the_heartbeat(tmp_path):
    first, second = WorkerShare(tmp_path, 2), WorkerShare(tmp_path, 2)
    assert first.leader() is True
    assert second.leader() is False
    assert first.leader() is True
    assert WorkerShare(tmp_path, 1).leader() is True  # one worker: no lock needed


def test_the_newest_provider_result_wins(tmp_path):
    share = WorkerShare(tmp_path, 2)
    stats = Stats(share)
    stats.provider_result("vpc-llm", "openai_compatible", "UpstreamError 401")
    other = subprocess.Popen(["sleep", "30"])
    try:
        newer = {
            "name": "vpc-llm",
            "kind": "openai_compatible",
            "healthy": True,
            "last_error": None,
        }
        (tmp_path / "workers").mkdir(exist_ok=True)
        (tmp_path / "workers" / f"{other.pid}.json").write_text(
            json.dumps({"requests": 1, "errors": 0, "providers": {"vpc-llm": {**newer, "at": 4e9}}})
        )
        assert share.totals(stats)[2]["vpc-llm"]["healthy"] is True
    finally:
        other.kill()
        other.wait()


def test_every_worker_logs_in_the_agents_format_and_level(tmp_path):
    """With BONITO_AGENT_WORKERS > 1, uvicorn starts the workers as new processes, which the
    main process's logging set-up never reached: their lines came without time, level or
    name, and everything below WARNING (BONITO_LOG_LEVEL=INFO: the control plane's answers,
    'usage posts are stored again', replayed journals) was dropped."""
    import re

    from agents.tests.agent_harness import AgentProcess, wait_for
    from core import keys
    from gateway.tests.conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: every pull is logged
    agent = AgentProcess(
        tmp_path / "state", dead, keys.generate("bt-"), env={"BONITO_AGENT_WORKERS": "2"}
    )
    agent.start(wait_ready=False)
    try:
        line = re.compile(
            r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ WARNING bonito\.agent: config pull failed", re.M
        )
        assert wait_for(lambda: len(line.findall(agent.log(whole=True))) >= 2, 20), agent.log()
        assert not re.search(r"^config pull failed", agent.log(whole=True), re.M)
    finally:
        agent.stop()
