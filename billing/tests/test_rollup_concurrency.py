"""Rollups while other work runs on PostgreSQL: two runs at once (a tick that outlasted its
interval, a backfill beside the schedule) and late rows committed during a run. Every
total read afterwards equals the sum of the raw rows."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.db.models import Sum
from django.utils import timezone

from billing.models import UsageRecord, UsageRollup
from billing.services import rollup_recent, rollup_window
from billing.spend import spend_by_org
from billing.tests.test_rollups import _record
from billing.usage_writer import write_usage

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time: these races need PostgreSQL")


def _in_thread(target):
    def run():
        try:
            target()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _hour(now, hours_ago: int):
    return (now - timedelta(hours=hours_ago)).replace(minute=0, second=0, microsecond=0)


def test_two_runs_at_once_write_a_window_once(org_a):
    now = timezone.now()
    hour = _hour(now, 2)  # behind the watermark the second run leaves: read from rollups
    write_usage([_record(org_a, hour + timedelta(minutes=m)) for m in (1, 2, 3)])
    inside, release = threading.Event(), threading.Event()

    def slow_run():  # a run whose window is computed, not yet committed
        with transaction.atomic():
            rollup_window(period="hour", start=hour, end=hour)
            rollup_window(period="day", start=hour, end=hour)
            inside.set()
            release.wait(10)

    first = _in_thread(slow_run)
    assert inside.wait(10)
    second = _in_thread(lambda: rollup_recent(now=now))  # the next tick, meanwhile
    time.sleep(0.5)
    release.set()
    first.join()
    second.join()
    raw = UsageRecord.objects.aggregate(n=Sum("cost"))["n"]
    for period in ("hour", "day"):
        rolled = UsageRollup.objects.filter(period=period)
        assert rolled.aggregate(n=Sum("requests"), c=Sum("cost")) == {"n": 3, "c": raw}, period
    assert spend_by_org(hour, org_id=org_a.id) == {org_a.id: raw}


def test_a_late_row_committed_during_a_run_is_counted_by_the_next(org_a):
    """An hour already marked by a late row gets another one whose transaction is still open
    (an agent's batch: its ingest writes the rows, then checks budgets, then commits) while
    a run recomputes that hour: the run cannot see it, so the mark must outlive the run."""
    now = timezone.now()
    hour = _hour(now, 5)
    write_usage([_record(org_a, hour + timedelta(minutes=1))])
    rollup_recent(now=now)
    write_usage([_record(org_a, hour + timedelta(minutes=2))])  # late: marks its hour
    written, release = threading.Event(), threading.Event()

    def batch_in_flight():
        with transaction.atomic():
            write_usage([_record(org_a, hour + timedelta(minutes=3))])
            written.set()
            release.wait(10)

    writer = _in_thread(batch_in_flight)
    assert written.wait(10)
    runner = _in_thread(lambda: rollup_recent(now=now + timedelta(minutes=5)))
    time.sleep(0.5)
    release.set()
    writer.join()
    runner.join()
    rollup_recent(now=now + timedelta(minutes=10))  # the next run
    raw = UsageRecord.objects.aggregate(c=Sum("cost"))["c"]
    assert spend_by_org(hour, org_id=org_a.id) == {org_a.id: raw}
    rolled = UsageRollup.objects.filter(period="hour").aggregate(n=Sum("requests"), c=Sum("cost"))
    assert rolled == {"n": 3, "c": raw}
