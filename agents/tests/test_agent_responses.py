"""The Responses API through a real agent: an OpenAI deployment gets it as sent (pass-through
is on in the agent), as on the shared gateway, and its stored responses can be read back.
The agent wraps each adapter to watch its health (agents/runtime/upstreams.Watched), and
the data plane asked whether a deployment's adapter *is* the pass-through: never, in an
agent, so every Responses request was translated to chat completions, one only the
Responses API can carry was refused, and GET /v1/responses/{id} was a 404."""

import httpx
import pytest

from agents.tests.agent_harness import AgentProcess
from agents.tests.test_agent_media import SECRET, FakeControlPlane
from core import keys
from gateway.dataplane.snapshot import DeploymentInfo, KeyInfo, OrgInfo, Snapshot, snapshot_to_dict
from gateway.tests.fake_upstream import FakeUpstream

pytestmark = pytest.mark.slow


@pytest.fixture
def agent(tmp_path):
    upstream = FakeUpstream().start()
    key = keys.generate("bn-")
    cp = FakeControlPlane(upstream.url, key)
    digest = keys.digest(key, SECRET)
    dep = DeploymentInfo(1, "gpt", "oai", "openai", "gpt-4o", upstream.url)
    snap = Snapshot(
        version=3,
        keys={digest: KeyInfo(id=10, org_id=1, name="app", hash=digest)},
        orgs={1: OrgInfo(id=1, slug="acme", tier="enterprise", deployments={"gpt": (dep,)})},
    )
    cp.config["snapshot"] = snapshot_to_dict(snap)
    process = AgentProcess(tmp_path / "state", cp.url, keys.generate("bt-")).start()
    yield process, upstream, key
    process.stop()
    cp.close()


def test_an_openai_deployment_gets_the_responses_api_as_sent(agent):
    process, upstream, key = agent
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=process.url + "/v1", headers=auth, timeout=30) as v1:
        created = v1.post("/responses", json={"model": "gpt", "input": "hello"})
        assert created.status_code == 200, (created.text, process.log())
        assert [r["endpoint"] for r in upstream.requests] == ["responses"]
        stored = v1.get(f"/responses/{created.json()['id']}")
        assert stored.status_code == 200, stored.text
