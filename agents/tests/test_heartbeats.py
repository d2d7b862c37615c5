"""Heartbeats: what an agent reports is stored (metadata only); the org's indicator goes
green, yellow, red by the age of the newest heartbeat; missed heartbeats alert once per
outage on every channel, and recovery is announced once."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from agents import services
from agents.alerts import agent_heartbeats_check
from agents.models import Agent, OrgAgentState
from agents.selectors import org_agent_status
from billing.models import Notification
from conftest import SETUP


@pytest.fixture
def check(db):
    """The beat job, as Celery beat runs it every minute."""
    return agent_heartbeats_check


def _age(org, minutes):
    Agent.objects.filter(org=org).update(
        last_heartbeat_at=timezone.now() - timedelta(minutes=minutes)
    )


def test_a_heartbeat_is_stored(agent_a, org_a):
    r = agent_a.heartbeat(
        requests=120,
        errors=3,
        error_rate=0.025,
        config_version=7,
        providers=[{"name": "oai", "kind": "openai", "healthy": False, "last_error": "HTTP 503"}],
        spool={"records": 5, "bytes": 900, "dropped": 0},
        warnings=["spool 80% full"],
    )
    assert r.status_code == 200, r.content
    assert r.json()["ok"] is True and isinstance(r.json()["config_version"], int)
    agent = Agent.objects.get(org=org_a)
    assert agent.agent_id == agent_a.agent_id and agent.hostname == "agent-1"
    assert (agent.requests, agent.errors, agent.config_version) == (120, 3, 7)
    assert agent.providers[0]["healthy"] is False and agent.warnings == ["spool 80% full"]
    assert agent.request_rate == pytest.approx(2.0)  # 120 requests over its 60 s of uptime


@pytest.mark.parametrize(
    "bad",
    [
        {"requests": -1},
        {"error_rate": 2},
        {"uptime_s": "long"},
        {"providers": "all fine"},
        {"warnings": ["w"] * 51},
        {"started_at": "yesterday"},
        {"warnings": ["nul \x00 here"]},
        {"warnings": ["x" * 501]},
        {"providers": [{"name": "oai\x00", "kind": "openai", "healthy": True}]},
        {"providers": [{"name": "oai", "healthy": True, "last_error": "\x00"}]},
        # Numbers the columns or JSON cannot hold: a 400, never a 500 later on a list.
        {"uptime_s": float("inf")},
        {"uptime_s": float("nan")},
        {"error_rate": float("nan")},
        {"requests": 2**70},
        {"config_version": 2**63},
        {"spool": {"records": 2**64, "bytes": 0, "dropped": 0}},
        # Times at the ends of the calendar: converting them to UTC overflowed (a 500).
        {"started_at": "0001-01-01T00:00:00+14:00"},
        {"started_at": "9999-12-31T23:59:59-14:00"},
        {"started_at": "1900-01-01T00:00:00+00:00"},
        # A lone surrogate is no text PostgreSQL (or any UTF-8 reader) can store.
        {"warnings": ["\ud800"]},
        {"providers": [{"name": "oai", "healthy": False, "last_error": "x\udfff"}]},
    ],
)
def test_a_malformed_heartbeat_is_400(agent_a, bad):
    r = agent_a.heartbeat(**bad)
    assert r.status_code == 400 and r.json()["code"] == "invalid"
    assert not Agent.objects.filter(last_heartbeat_at__isnull=False).exists()


def test_a_heartbeat_for_another_agent_id_is_400(agent_a):
    import uuid

    r = agent_a.heartbeat(agent_id=str(uuid.uuid4()))
    assert r.status_code == 400 and r.json()["code"] == "agent_id"


@pytest.mark.parametrize(
    ("minutes", "colour"), [(None, "grey"), (0, "green"), (1.9, "green"), (3, "yellow"), (6, "red")]
)
def test_the_indicator_colour_follows_the_newest_heartbeat(agent_a, org_a, minutes, colour):
    if minutes is not None:
        agent_a.heartbeat()
        _age(org_a, minutes)
    assert org_agent_status(org_a) == colour


def test_red_alerts_once_per_outage_on_every_channel_and_recovery_once(
    check, agent_a, org_a, alice, bob, platform_admin, hook
):
    services.agent_alerts_set(actor=SETUP, org=org_a, webhook_url=hook.url.replace("/v1", "/hooks"))
    agent_a.heartbeat()
    _age(org_a, 3)  # yellow: no alert yet
    assert check() == {"outages": 0, "recoveries": 0}
    _age(org_a, 6)
    assert check() == {"outages": 1, "recoveries": 0}
    assert check() == {"outages": 0, "recoveries": 0}, "once per outage"
    to = sorted(a for m in mail.outbox for a in m.to)
    assert to == ["alice@acme.test", "root@bonito.test"]  # the org's admins and platform admins
    assert "offline" in mail.outbox[0].subject
    assert len(hook.hooks) == 1 and "offline" in hook.hooks[0]["text"]
    assert Notification.objects.filter(org=org_a, level="error").count() == 1
    assert OrgAgentState.objects.get(org=org_a).outage_since is not None

    mail.outbox.clear()
    agent_a.heartbeat()
    assert check() == {"outages": 0, "recoveries": 1}
    assert check() == {"outages": 0, "recoveries": 0}
    assert len(mail.outbox) == 2 and all("recovered" in m.subject for m in mail.outbox)
    assert len(hook.hooks) == 2 and "back" in hook.hooks[1]["text"]
    assert Notification.objects.filter(org=org_a, level="info").count() == 1

    _age(org_a, 10)  # a second outage alerts again
    assert check() == {"outages": 1, "recoveries": 0}


def test_a_failing_channel_holds_back_nothing_and_is_retried_once_alone(
    check, agent_a, org_a, alice, hook
):
    good = hook.url.replace("/v1", "/hooks")
    services.agent_alerts_set(actor=SETUP, org=org_a, webhook_url=good.replace("/hooks", "/nope"))
    agent_a.heartbeat()
    _age(org_a, 6)
    assert check()["outages"] == 1
    assert [m.to for m in mail.outbox] == [["alice@acme.test"]]
    assert OrgAgentState.objects.get(org=org_a).notice_pending == ["webhook"]
    services.agent_alerts_set(actor=SETUP, org=org_a, webhook_url=good)
    check()
    assert len(hook.hooks) == 1 and len(mail.outbox) == 1, "only the failed channel is retried"
    assert OrgAgentState.objects.get(org=org_a).notice_pending == []
    check()
    assert len(hook.hooks) == 1


def test_an_org_whose_agent_never_connected_is_not_alerted(check, token_a, org_a, alice):
    assert check() == {"outages": 0, "recoveries": 0}
    assert not mail.outbox


def test_shared_orgs_are_not_watched(check, agent_a, org_a, alice):
    agent_a.heartbeat()
    _age(org_a, 30)
    services.vpc_disable(actor=SETUP, org=org_a)
    assert check() == {"outages": 0, "recoveries": 0}


def test_the_beat_schedule_runs_the_check_every_minute(db, settings):
    entry = settings.CELERY_BEAT_SCHEDULE["agent-heartbeats"]
    assert entry == {"task": "agents.tasks.agent_heartbeats_check", "schedule": 60.0}
    from agents.tasks import agent_heartbeats_check as task

    assert task.delay().get() == {"outages": 0, "recoveries": 0}


def test_agents_long_gone_and_old_ingest_batches_are_forgotten(agent_a, org_a, check):
    from agents.models import IngestBatch

    agent_a.heartbeat()
    assert agent_a.ingest([]).status_code == 200
    assert check() == {"outages": 0, "recoveries": 0}
    assert Agent.objects.count() == 1 and IngestBatch.objects.count() == 1
    Agent.objects.update(last_seen_at=timezone.now() - timedelta(days=8))
    IngestBatch.objects.update(created_at=timezone.now() - timedelta(days=9))
    check()
    assert not Agent.objects.exists() and not IngestBatch.objects.exists()


def test_a_tiny_uptime_makes_no_absurd_rate_and_the_lists_still_answer(agent_a, org_a, alice):
    from django.test import Client

    assert agent_a.heartbeat(uptime_s=1e-300, requests=10**18).status_code == 200
    agent = Agent.objects.get(org=org_a)
    assert agent.request_rate == 10**18  # over at least a second, never infinite
    client = Client()
    client.force_login(alice)
    assert client.get(f"/api/orgs/{org_a.slug}/agent").status_code == 200


def test_an_oversized_heartbeat_is_a_json_413(agent_a, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    r = agent_a.heartbeat(warnings=["x" * 400] * 40)
    assert r.status_code == 413 and r.json()["code"] == "too_large"
