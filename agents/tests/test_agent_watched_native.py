"""Every provider call an agent makes is watched (agents/runtime/upstreams.Watched): the
heartbeat's provider health, and a 401/403 that makes the agent read its credential
sources again (docs/agent.md). Anthropic's native Messages API (and a stored response's
GET) went around the watch: an Anthropic key rotated in the secret store was not read
again while an app called /v1/messages only."""

import asyncio

from agents.runtime.upstreams import AgentUpstreams
from gateway.dataplane import anthropic_api
from gateway.dataplane.netpolicy import NetworkPolicy
from gateway.dataplane.snapshot import DeploymentInfo
from gateway.dataplane.upstream import UpstreamError
from gateway.tests.fake_upstream import Behaviour, FakeUpstream


class Stats:
    def __init__(self):
        self.results = []

    def provider_result(self, provider, kind, error):
        self.results.append((provider, kind, error))


def test_a_native_anthropic_401_is_seen_by_the_agent():
    fake = FakeUpstream().start()
    fake.behaviours["claude-x"] = Behaviour(status=401, error_message="invalid x-api-key")
    stats, stale = Stats(), []
    ups = AgentUpstreams(
        passthrough=True,
        network=NetworkPolicy(["127.0.0.0/8"]),
        stats=stats,
        on_auth_failure=lambda: stale.append(True),
    )
    dep = DeploymentInfo(
        id=1, model="claude", provider="anth", kind="anthropic", upstream_model="claude-x",
        api_base=fake.url.removesuffix("/v1"), credentials={"api_key": "sk-ant-rotated-away"},
    )  # fmt: skip
    body = {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    call = anthropic_api.attempt(ups, body, {}, [], {}, stream=False)

    async def go():
        try:
            await call(dep, 5)
        except UpstreamError as exc:
            assert exc.status == 401
        finally:
            await ups.http.close_loop_session()

    asyncio.run(go())
    assert fake.requests, "the call was made"
    assert stats.results == [("anth", "anthropic", "UpstreamError 401")]
    assert stale == [True]
