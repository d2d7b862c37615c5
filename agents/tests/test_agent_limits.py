"""Limits across an agent's replicas, in real processes: a control plane, two agent replicas
(no Redis between them) and a fake upstream inside the "VPC"."""

import httpx
import pytest

from agents.tests.agent_harness import AgentProcess, ControlPlane, wait_for
from gateway.tests.fake_upstream import FakeUpstream

pytestmark = pytest.mark.slow


@pytest.fixture
def upstream():
    return FakeUpstream().start()


@pytest.fixture
def replicas(tmp_path, upstream):
    cp = ControlPlane(tmp_path / "cp", upstream.url)
    agents = [AgentProcess(tmp_path / f"state-{n}", cp.url, cp.token) for n in (1, 2)]
    yield cp, agents
    for agent in agents:
        agent.stop()
    cp.close()


def _chat(agent, key) -> httpx.Response:
    return httpx.post(
        agent.url + "/v1/chat/completions",
        json={
            "model": "chat-small",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def _version(agent) -> int:
    return httpx.get(agent.url + "/ready", timeout=5).json()["config_version"]


def test_without_redis_a_replica_stops_at_the_cap_the_others_spend_reached(replicas, upstream):
    """Without BONITO_REDIS_URL each replica counts its own spend, on top of the org's
    month-to-date spend from the control plane's facts: another replica's spend reaches it
    through those facts (usage uploaded, facts pulled), and once they say the cap is spent
    it refuses too. It kept the spend it saw at its first request for the whole month, and
    each replica could spend the whole cap."""
    cp, (a, b) = replicas
    for agent in (a, b):
        agent.start()
    before = [_version(a), _version(b)]
    cp.apply(upstream.url, spend_cap="0.01")  # ~130 requests at $0.0000775 each
    assert wait_for(lambda: _version(a) > before[0] and _version(b) > before[1], 20)

    assert _chat(a, cp.key).status_code == 200  # replica a's counter starts
    served = 0
    for _ in range(400):
        r = _chat(b, cp.key)
        if r.status_code != 200:
            break
        served += 1
    assert r.status_code == 429 and r.json()["error"]["code"] == "spend_cap_exceeded", r.text

    def uploaded() -> bool:
        return sum(row["status"] == "success" for row in cp.usage()) == served + 1

    assert wait_for(uploaded, 30, interval=0.5), b.log()
    # Replica a's next config pull (each second here) brings the facts: the cap is spent.
    assert wait_for(lambda: _chat(a, cp.key).status_code == 429, 5), a.log()
    refused = [_chat(a, cp.key) for _ in range(3)]
    assert [r.status_code for r in refused] == [429] * 3
    assert refused[0].json()["error"]["code"] == "spend_cap_exceeded"
