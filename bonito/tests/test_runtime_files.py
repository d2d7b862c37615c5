"""Celery writes its runtime files under var/ (or where the settings say), never into the
directory it was started from (a checkout, when run by hand)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_beats_schedule_file_defaults_to_var():
    assert Path(settings.CELERY_BEAT_SCHEDULE_FILENAME).parent == settings.VAR_DIR


def test_a_plain_celery_beat_writes_nothing_where_it_was_started(tmp_path):
    started_in, schedule = tmp_path / "cwd", tmp_path / "var" / "beat" / "schedule"
    started_in.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CELERY_BROKER_URL": "memory://",
        "CELERY_BEAT_SCHEDULE_FILENAME": str(schedule),  # its parent does not exist yet
    }
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bonito", "beat", "--loglevel", "warning"],
        cwd=started_in,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not list(schedule.parent.glob("schedule*")) and time.monotonic() < deadline:
            assert beat.poll() is None, beat.stderr.read().decode()
            time.sleep(0.2)
    finally:
        beat.terminate()
        try:
            beat.wait(20)
        except subprocess.TimeoutExpired:  # still starting up on a loaded machine (CI)
            beat.kill()
            beat.wait(10)
    assert list(schedule.parent.glob("schedule*")), "beat wrote no schedule where the settings say"
    assert list(started_in.iterdir()) == []
