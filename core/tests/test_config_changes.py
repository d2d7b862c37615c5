"""The change log never loses a change to transactions that commit out of order: the
counter's row lock makes the second bump wait for the first's commit, so a reader that
sees version V sees every change row up to V (PostgreSQL; SQLite serialises writers)."""

import threading

import pytest
from django.db import connection, connections, transaction

from core.config_version import ORG, changes_since, config_version_bump, current_version

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers: PostgreSQL")
def test_two_transactions_committing_out_of_order_never_lose_a_change():
    config_version_bump()
    start = current_version()
    first_bumped, let_first_commit = threading.Event(), threading.Event()
    versions = {}

    def first():
        try:
            with transaction.atomic():
                versions["first"] = config_version_bump(ORG, org_id=1)
                first_bumped.set()
                let_first_commit.wait(10)
        finally:
            connections.close_all()

    def second():
        try:
            first_bumped.wait(10)
            with transaction.atomic():  # waits on the counter's row lock until first commits
                versions["second"] = config_version_bump(ORG, org_id=2)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    first_bumped.wait(10)
    threads[1].join(0.5)  # the second is blocked, not committed
    seen = current_version()
    assert seen == start and changes_since(start, seen) == []  # nothing half-visible
    let_first_commit.set()
    for t in threads:
        t.join(10)
    assert versions == {"first": start + 1, "second": start + 2}
    assert changes_since(start, current_version()) == [("org", 1, ""), ("org", 2, "")]
