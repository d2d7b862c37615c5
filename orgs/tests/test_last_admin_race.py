"""Two admins demoting each other at the same moment must leave the org one admin."""

import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from conftest import SETUP
from orgs import services
from orgs.models import Membership, Role


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_demotions_leave_one_admin(org_a, alice):
    second = services.user_create(actor=SETUP, email="dana@acme.test", password=None, name="Dana")
    services.membership_add(actor=SETUP, org=org_a, user=second, role=Role.ADMIN)
    rows = list(Membership.objects.for_org(org_a).filter(role=Role.ADMIN))
    assert len(rows) == 2
    barrier = threading.Barrier(2)
    outcomes = []

    def demote(membership):
        try:
            barrier.wait()
            services.membership_set_role(actor=SETUP, membership=membership, role=Role.VIEWER)
            outcomes.append("demoted")
        except ValidationError:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=demote, args=(m,)) for m in rows]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["demoted", "refused"]
    assert Membership.objects.for_org(org_a).filter(role=Role.ADMIN).count() == 1
