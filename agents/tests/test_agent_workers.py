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
