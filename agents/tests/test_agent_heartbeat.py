"""What the heartbeat says when the control plane has been away long enough to fill the
spool: the drops are counted and warned about; the payload holds no request content."""

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from agents.runtime import settings as agent_settings
from agents.runtime.app import Agent
from core import keys
from gateway.tests.conftest import free_port
from gateway.tests.external import ROOT


def test_a_full_spool_is_a_heartbeat_warning_with_its_count(tmp_path):
    s = agent_settings.load(
        {
            "BONITO_CONTROL_PLANE": f"http://127.0.0.1:{free_port()}",  # nobody listens
            "BONITO_ORG_TOKEN": keys.generate("bt-"),
            "BONITO_STATE_DIR": str(tmp_path),
            "BONITO_SPOOL_MAX_BYTES": str(1024 * 1024),
            "BONITO_INGEST_INTERVAL_S": "0.01",
        }
    )
    agent = Agent(s)
    sink = agent.gateway.sink
    sink.start()
    padding = "m" * 500  # a long model name: ~630 bytes a record, 1.9 MB in all
    for _ in range(12):
        for _ in range(250):
            sink.submit(
                {
                    "id": str(uuid.uuid4()),
                    "org_id": 1,
                    "key_id": 1,
                    "model_requested": padding,
                    "status": "success",
                    "created_at": time.time(),
                }
            )
        assert sink.flush(10)
    body = agent.stats.heartbeat_body(agent.sync)
    assert body["spool"]["dropped"] > 0
    assert body["spool"]["bytes"] <= 1024 * 1024
    assert body["spool"]["records"] + body["spool"]["dropped"] == 3000
    assert any("records dropped" in w for w in body["warnings"])
    assert body["agent_id"] == agent.control.agent_id
    json.dumps(body)  # JSON as sent
    sink.stop()


@pytest.mark.slow
def test_manage_py_run_agent_runs_the_agent(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BONITO_")}
    result = subprocess.run(
        [sys.executable, "manage.py", "run_agent"],
        cwd=ROOT,
        env={**env, "BONITO_STATE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "bonito-agent: BONITO_CONTROL_PLANE is required" in result.stderr
