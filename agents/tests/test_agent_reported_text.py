"""What a VPC agent says about itself (its hostname and version, its providers and
warnings) and the text of its usage records reach the Agents page, the admin's list, the
REST API and the Logs page. They are stored safe to show, never refused: every control,
bidi or zero-width character written as its escape (core.text.name_safe), the hostname
and version cut to their columns (docs/security.md, "Names"). An agent on a host with a
strange name keeps its service."""

import pytest
from django.urls import reverse

from agents.models import Agent
from billing.models import UsageRecord
from conftest import SETUP
from core.text import name_error, name_safe
from gateway.services import api_key_create

from .test_ingest import record

# Each would reorder or hide what is drawn around it, or break a line.
HOSTILE = [
    "web\u202e1-dorp",
    "\u2066host\u2069",
    "ho\u200bst",
    "host\x00name",
    "host\x1b[2J",
    "host\nnext line",
    "host\x85",
    "host\ufeff",
    "host\U000e0041",
    "\u3164",
]


def _bad(text: str) -> bool:
    return name_error(text) is not None


def _visible(text: str, sent: list[str]) -> bool:
    return not any(s in text for s in sent)


@pytest.mark.parametrize("hostname", HOSTILE)
def test_a_strange_hostname_is_stored_escaped_not_refused(
    agent_a, org_a, alice_client, admin_client, hostname
):
    text = hostname.replace("\x00", "")  # a NUL in a warning is still a 400 (test_heartbeats)
    provider = {"name": f"oai{text}", "kind": "openai", "healthy": False}
    r = agent_a.heartbeat(
        hostname=hostname,
        version="1.2\u202e3",
        warnings=[f"disk {text} full"],
        providers=[{**provider, "last_error": f"refused\n{text}"}],
    )
    assert r.status_code == 200, r.content
    agent = Agent.objects.get(org=org_a)
    assert agent.hostname == name_safe(hostname.strip())
    assert agent.version == "1.2\\u202e3"
    texts = [
        agent.hostname,
        agent.version,
        *agent.warnings,
        *(p["name"] for p in agent.providers),
        *(p["last_error"] for p in agent.providers),
    ]
    assert not any(_bad(t) for t in texts), texts
    sent = [s for s in (hostname, text, "1.2\u202e3") if _bad(s)]
    for page in (
        alice_client.get(reverse("agents", args=[org_a.slug])),
        alice_client.get("/api/orgs/acme/agent"),
        admin_client.get("/api/admin/agents"),
    ):
        assert page.status_code == 200
        assert _visible(page.content.decode(), sent)


def test_a_long_hostname_and_version_are_cut_not_refused(agent_a, org_a):
    r = agent_a.heartbeat(hostname="h" * 1000, version="9" * 200)
    assert r.status_code == 200, r.content
    agent = Agent.objects.get(org=org_a)
    assert agent.hostname == "h" * 255 and agent.version == "9" * 64
    # Escapes never take it past its column either.
    assert agent_a.heartbeat(hostname="\u202e" * 300).status_code == 200
    assert len(Agent.objects.get(org=org_a).hostname) == 255


@pytest.mark.parametrize("version", ["1.0\u202e", "1.0\x1b[2J", "2.0\x00"])
def test_the_version_header_is_stored_escaped(token_a, org_a, version):
    from .conftest import AgentClient

    agent = AgentClient(token_a, version=version)
    assert agent.keys().status_code == 200
    stored = Agent.objects.get(org=org_a).version
    assert stored == name_safe(version) and not _bad(stored)


def test_an_agent_s_usage_records_are_stored_escaped(agent_a, org_a, alice_client):
    key = api_key_create(actor=SETUP, org=org_a, name="backend")[0]
    fields = ("model_requested", "model_used", "provider", "deployment", "error_type")
    records = [record(key, **dict.fromkeys(fields, f"m{h}")) for h in HOSTILE]
    r = agent_a.ingest(records)
    assert r.status_code == 200, r.content
    rows = list(UsageRecord.objects.filter(org=org_a).values_list(*fields))
    assert sorted(rows) == sorted((name_safe(f"m{h}"),) * len(fields) for h in HOSTILE)
    page = alice_client.get(reverse("logs", args=[org_a.slug]) + "?range=24h")
    assert _visible(page.content.decode(), [f"m{h}" for h in HOSTILE])
