"""A WebSocket handshake to the VPC agent, which serves none, is refused cleanly (the
handshake closed: uvicorn answers a 403), never the plain-text 500 and the logged error
uvicorn gave when the app returned without answering it. On /v1 it stays the HTTP request
it also is, answered by the gateway."""

import orjson
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from agents.tests.agent_harness import AgentProcess
from core import keys
from gateway.tests.conftest import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    # No control plane (nothing listens on its port): the agent serves /health, answers
    # /ready 503 and /v1 503 (no config yet), which is all these handshakes need.
    tmp = tmp_path_factory.mktemp("ws-agent")
    proc = AgentProcess(tmp / "state", f"http://127.0.0.1:{free_port()}", keys.generate("bt-"))
    proc.start(wait_ready=False)
    yield proc
    proc.stop()


def handshake(url: str, path: str):
    """The HTTP answer to a real client's handshake: (status, headers, body)."""
    with (
        pytest.raises(InvalidStatus) as refused,
        connect(url.replace("http://", "ws://") + path, open_timeout=10),
    ):
        pass  # an opened socket fails the test: nothing here is a WebSocket
    response = refused.value.response
    return response.status_code, response.headers, bytes(response.body)


@pytest.mark.parametrize(
    "path",
    ["/health", "/ready", "/", "/ws", "/ws/o/acme/logs/", "/metrics", "/%ff", "/health?x=1"],
)
def test_a_handshake_anywhere_but_v1_is_refused_without_an_error(agent, path):
    status, _headers, body = handshake(agent.url, path)
    assert status == 403, body[:300]
    log = agent.log(whole=True)
    assert "returned without completing handshake" not in log
    assert "Traceback" not in log and "ERROR" not in log


def test_a_handshake_on_v1_is_answered_as_the_http_request_it_also_is(agent):
    status, _headers, body = handshake(agent.url, "/v1/models")
    assert status == 503, body[:300]  # no config yet: the gateway's own answer, not a 404
    assert orjson.loads(body)["error"]["code"] == "gateway_not_ready"
    status, _headers, body = handshake(agent.url, "/v1/realtime")
    assert status == 503, body[:300]
    log = agent.log(whole=True)
    assert "Traceback" not in log and "ERROR" not in log
