"""A real Celery worker process, on a Redis broker, runs the rollup task (not eager mode)."""

import os
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from celery import Celery
from django.conf import settings
from django.db import connection
from django.utils import timezone

from billing.models import UsageRecord, UsageRollup
from core.tests.workers import local_redis_url

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]


def _broker():
    url = settings.REDIS_URL or local_redis_url(12)
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        pytest.skip("no Redis reachable on this machine")
    return url


def _database_url() -> str:
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER']}:{s['PASSWORD'] or ''}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def test_a_worker_process_runs_the_rollup_task_from_redis(org_a):
    broker = _broker()
    queue = "test-" + uuid.uuid4().hex[:8]
    UsageRecord.objects.create(
        id=uuid.uuid4(),
        org=org_a,
        created_at=timezone.now(),
        model_requested="chat",
        model_used="chat",
        provider="fake",
        status="success",
        cost=Decimal("0.5"),
    )
    env = {
        **os.environ,
        "CELERY_BROKER_URL": broker,
        "DATABASE_URL": _database_url(),
        "DEBUG": "0",
        "SECRET_KEY": os.environ.get("SECRET_KEY", "worker-test-secret-key-0123456789abcdefghijkl"),
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bonito",
            "worker",
            "--pool",
            "solo",
            "-Q",
            queue,
            "--loglevel",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Not the current app: shared tasks of later tests in this process (mail, say) would
        # go to this broker instead of running eagerly.
        sender = Celery(broker=broker, set_as_current=False)
        sender.send_task("billing.tasks.usage_rollup_recent", queue=queue)
        deadline = time.time() + 30
        # The hour and the day rows may commit apart: wait for both, then compare exactly.
        while UsageRollup.objects.count() < 2 and time.time() < deadline:
            time.sleep(0.2)
        rows = list(UsageRollup.objects.values_list("period", "requests", "cost"))
        assert sorted(rows) == [("day", 1, Decimal("0.5")), ("hour", 1, Decimal("0.5"))]
    finally:
        worker.terminate()
        worker.wait(20)
