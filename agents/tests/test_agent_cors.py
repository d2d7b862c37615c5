"""A VPC agent applies the org's browser access (CORS) from the config document it pulls,
as the shared gateway does, and follows a change at its next sync."""

import httpx
import pytest

from agents.tests.agent_harness import AgentProcess, ControlPlane, RecordingLink, wait_for
from gateway.tests.fake_upstream import FakeUpstream

pytestmark = pytest.mark.slow

APP = "https://app.acme.example"


@pytest.fixture
def system(tmp_path):
    upstream = FakeUpstream().start()
    cp = ControlPlane(tmp_path / "cp", upstream.url)
    link = RecordingLink("127.0.0.1", cp.port).start()
    agent = AgentProcess(tmp_path / "agent-state", f"http://127.0.0.1:{link.port}", cp.token)
    yield cp, agent
    agent.stop()
    link.stop()
    cp.close()


def _set_origins(cp, origins):
    cp.shell(
        "from orgs.models import Organization; from gateway.services import gateway_config_set;"
        "from orgs.audit import Actor;"
        f"gateway_config_set(actor=Actor(via='test'), org=Organization.objects.get(slug='acme'),"
        f" cors_origins={origins!r}); print('ok')"
    )


def _preflight(agent, origin):
    return httpx.options(
        agent.url + "/v1/chat/completions",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        timeout=10,
    )


def test_the_agent_answers_cors_from_the_orgs_origins(system):
    cp, agent = system
    _set_origins(cp, [APP])
    agent.start()
    assert _preflight(agent, APP).status_code == 204
    assert _preflight(agent, "https://evil.example").status_code == 403
    response = httpx.post(
        agent.url + "/v1/chat/completions",
        json={"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {cp.key}", "Origin": APP},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == APP

    _set_origins(cp, [])  # withdrawn: the agent follows at its next pull
    assert wait_for(lambda: _preflight(agent, APP).status_code == 403, 30), agent.log()
