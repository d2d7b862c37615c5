"""A deployment whose credentials a VPC agent withheld (DeploymentInfo.withheld: its endpoint
is not one the VPC pinned) is refused on every path, never called without them: the
prompt would still go to that host. The agent's side is agents/tests/test_agent_e2e.py."""

import asyncio

import pytest

from gateway.dataplane import anthropic_api
from gateway.dataplane.media import MediaCall
from gateway.dataplane.netpolicy import NetworkPolicy
from gateway.dataplane.snapshot import DeploymentInfo
from gateway.dataplane.upstream import UpstreamError, Upstreams
from gateway.tests.fake_upstream import FakeUpstream

WHY = "provider p's credentials are withheld: its endpoint (evil.example) is elsewhere"
CHAT = {"messages": [{"role": "user", "content": "PROMPT"}], "max_tokens": 5}


@pytest.fixture
def fake():
    return FakeUpstream().start()


def _upstreams() -> Upstreams:
    return Upstreams(network=NetworkPolicy(["127.0.0.0/8"]))


def _dep(kind: str, api_base: str, withheld: str = WHY) -> DeploymentInfo:
    return DeploymentInfo(
        id=1, model="m", provider="p", kind=kind, upstream_model="m", api_base=api_base,
        withheld=withheld,
    )  # fmt: skip


async def _drain(stream):
    return [part async for part in stream]


async def _refused(call) -> None:
    with pytest.raises(UpstreamError) as refused:
        await call
    error = refused.value
    assert error.status == 502, error
    assert "withheld its credentials" in str(error) and "evil.example" not in str(error)


@pytest.mark.parametrize(
    "kind", ["openai_compatible", "openai", "anthropic", "azure_openai", "bedrock"]
)
def test_every_adapter_refuses_it_and_sends_nothing(fake, kind):
    ups = _upstreams()
    dep = _dep(kind, fake.url)
    adapter = ups.for_deployment(dep)

    async def go():
        try:
            await _refused(adapter.call("chat", dep, dict(CHAT), 5))
            await _refused(_drain(adapter.stream("chat", dep, {**CHAT, "stream": True}, 5)))
            assert fake.requests == []
            # The same deployment without the mark is called (the refusal is the mark's).
            if kind in ("openai_compatible", "openai"):
                plain = _dep(kind, fake.url, withheld="")
                answer = await ups.for_deployment(plain).call("chat", plain, dict(CHAT), 5)
                assert answer["choices"] and len(fake.requests) == 1
        finally:
            await ups.http.close_loop_session()

    asyncio.run(go())


def test_media_and_the_native_anthropic_path_refuse_it(fake):
    ups = _upstreams()
    dep = _dep("openai_compatible", fake.url)
    call = MediaCall("images", {"prompt": "a cat"})
    native = anthropic_api._native(ups)
    claude = _dep("anthropic", fake.url.removesuffix("/v1"))
    body = ({"messages": CHAT["messages"], "max_tokens": 5}, "2023-06-01", "")

    async def go():
        try:
            await _refused(ups.for_deployment(dep).media("images", dep, call, 5))
            await _refused(native.call("messages", claude, body, 5))
        finally:
            await ups.http.close_loop_session()

    asyncio.run(go())
    assert fake.requests == []
