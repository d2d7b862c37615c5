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
def check(django_capture_on_commit_callbacks):
    """The beat job, with what it defers to after its commit (the deliveries) run."""

    def run():
        with django_capture_on_commit_callbacks(execute=True):
            return agent_heartbeats_check()

    return run


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
        {"hostname": "a\x00b"},
        {"warnings": ["nul \x00 here"]},
        {"warnings": ["x" * 501]},
        {"providers": [{"name": "oai\x00", "kind": "openai", "healthy": True}]},
        {"providers": [{"name": "oai", "healthy": True, "last_error": "\x00"}]},
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


def test_a_failing_webhook_does_not_hold_back_the_email(
    check, agent_a, org_a, alice, hook, settings
):
    services.agent_alerts_set(
        actor=SETUP, org=org_a, webhook_url=hook.url.replace("/v1", "/nothing-here")
    )
    agent_a.heartbeat()
    _age(org_a, 6)
    assert check()["outages"] == 1
    assert [m.to for m in mail.outbox] == [["alice@acme.test"]]


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
