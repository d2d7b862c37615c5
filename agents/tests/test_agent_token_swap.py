"""The config cache is bound to the org token it was pulled with: an agent restarted on the
same state folder with another org's token, while the control plane is away, serves no key
of the old org (real processes: agents/tests/agent_harness.py)."""

import httpx
import pytest

from agents.tests.agent_harness import AgentProcess, ControlPlane, RecordingLink, wait_for
from gateway.tests.fake_upstream import FakeUpstream

pytestmark = pytest.mark.slow


@pytest.fixture
def system(tmp_path):
    upstream = FakeUpstream().start()
    cp = ControlPlane(tmp_path / "cp", upstream.url)
    link = RecordingLink("127.0.0.1", cp.port).start()
    agent = AgentProcess(tmp_path / "agent-state", f"http://127.0.0.1:{link.port}", cp.token)
    yield cp, link, agent
    agent.stop()
    link.stop()
    cp.close()


def _other_org(cp: ControlPlane) -> tuple[str, str]:
    """Globex, a second org in VPC mode: its bn- key and its bt- token."""
    key, token = cp.shell(
        "import io; from django.core.management import call_command;"
        "from orgs.models import Organization; from agents.services import vpc_enable;"
        "from orgs.audit import Actor;"
        "org = Organization.objects.create(slug='globex', name='Globex');"
        "out = io.StringIO();"
        "call_command('create_api_key', '--org', 'globex', '--name', 'app', stdout=out);"
        "print(out.getvalue().strip().splitlines()[-1], vpc_enable(actor=Actor(via='test'), org=org))"
    ).split()
    return key, token


def test_another_orgs_token_never_serves_the_cached_config(system):
    cp, link, agent = system
    agent.start()
    assert agent.chat(cp.key).status_code == 200
    other_key, other_token = _other_org(cp)
    agent.stop()

    # The operator points the agent at another org (same state folder) while the control
    # plane is away: Acme's cached keys must not be served under Globex's token.
    link.stop()
    swapped = AgentProcess(agent.state_dir, agent.env["BONITO_CONTROL_PLANE"], other_token)
    try:
        swapped.start(wait_ready=False)
        ready = httpx.get(swapped.url + "/ready")
        assert ready.status_code == 503, ready.text
        answer = swapped.chat(cp.key)
        assert answer.status_code != 200, answer.text
        assert "another org token" in swapped.log(whole=True)

        # The control plane back: Globex's config, and Acme's key refused.
        link.start()
        assert wait_for(lambda: httpx.get(swapped.url + "/ready").status_code == 200, 20)
        # Globex's key is known (Globex has no models: 404 for the model, not 401).
        known = swapped.chat(other_key)
        assert known.status_code == 404, known.text
        refused = swapped.chat(cp.key)
        assert refused.status_code == 401, refused.text
    finally:
        swapped.stop()


def test_a_rotated_token_deployed_later_still_serves_the_cache(system):
    cp, link, agent = system
    agent.start()
    new_token = cp.rotate()
    token_file = agent.state_dir / "token.json"
    assert wait_for(lambda: token_file.exists() and new_token in token_file.read_text(), 15)
    assert wait_for(lambda: agent.chat(cp.key).status_code == 200, 5)
    agent.stop()

    # The rotated token, now put in the deployment, is the same org's: the cache serves.
    link.stop()
    redeployed = AgentProcess(agent.state_dir, agent.env["BONITO_CONTROL_PLANE"], new_token)
    try:
        redeployed.start()
        assert httpx.get(redeployed.url + "/ready").json()["config_from"] == "disk cache"
        assert redeployed.chat(cp.key).status_code == 200
    finally:
        redeployed.stop()
