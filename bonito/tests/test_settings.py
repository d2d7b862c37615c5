import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run_check(**env_overrides):
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_refuses_to_start_without_a_secret_key():
    result = _run_check(DEBUG="0")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_debug_allows_the_dev_default():
    result = _run_check(DEBUG="1")
    assert result.returncode == 0, result.stderr


def test_a_production_install_passes_the_deploy_check():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={
            **os.environ,
            "DEBUG": "0",
            "SECRET_KEY": "x" * 64 + "-production-like-secret-key",
            "ALLOWED_HOSTS": "gateway.example.com",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("lease", "ok"), [("9", False), ("0", False), ("-5", False), ("10", True)])
def test_a_spend_lease_shorter_than_four_heartbeats_is_refused_at_start(lease, ok):
    """A live process beats every quarter of its lease, each beat bounded by the Redis
    timeout (2 s + 0.5 s margin): a shorter lease (or 0) would let a live process's
    reservations be swept and the cap passed."""
    result = _run_check(DEBUG="1", GATEWAY_SPEND_LEASE_S=lease, GATEWAY_REDIS_TIMEOUT_S="2")
    assert (result.returncode == 0) is ok, result.stderr
    if not ok:
        assert "GATEWAY_SPEND_LEASE_S must be at least 4 x (GATEWAY_REDIS_TIMEOUT_S + 0.5)" in (
            result.stderr
        )
