"""An agent started to see how it starts (``python -m agents.runtime`` as an operator starts
it), run until it exits. A module of its own, light to import: a test module that imports
it is also imported by the spawned worker processes of its tests."""

import os
import subprocess
import sys
from pathlib import Path

from core import keys
from gateway.tests.external import ROOT


def start_env(tmp_path: Path, **env) -> dict:
    """The environment of an agent started to see how it starts (as an operator starts
    it): none of this process's BONITO_ settings; a control plane it never reaches (it
    stops before, or is stopped); its state in ``tmp_path/state``; ``env`` over these (a
    None: that setting left out)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("BONITO_")}
    env = {
        "BONITO_CONTROL_PLANE": "http://127.0.0.1:9",
        "BONITO_ORG_TOKEN": keys.generate("bt-"),
        "BONITO_STATE_DIR": str(tmp_path / "state"),
        "BONITO_AGENT_HOST": "127.0.0.1",
        "BONITO_AGENT_PORT": "9",
        **env,
    }
    return {**base, **{k: v for k, v in env.items() if v is not None}}


def run_agent(tmp_path: Path, *, timeout: float = 60, preexec_fn=None, **env):
    """``python -m agents.runtime`` in ``start_env(tmp_path, **env)``, until it exits (or
    ``timeout`` passes: subprocess.TimeoutExpired, an agent that got past its start
    serves); its subprocess.CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "agents.runtime"],
        cwd=ROOT,
        env=start_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec_fn,  # noqa: PLW1509 - the caller's (a prctl only, no threads)
    )
