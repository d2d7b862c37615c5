"""Start-up: a fresh uvicorn process answers /v1 as soon as it accepts connections, on the
LiteLLM path too (litellm's import runs in a thread; a request that needs it waits for it
instead of a `503 gateway_not_ready`).

The server runs as on a busy machine, where importing litellm takes longer than the
gateway's 30 s wait for its first snapshot: a sitecustomize in the process delays the
import (the slowness is the environment's, not the gateway's code).
"""

import subprocess
import sys
import time

import httpx
import pytest

from gateway.tests.conftest import free_port
from gateway.tests.external import ROOT, ExternalBonito
from gateway.tests.fake_upstream import FakeUpstream

pytestmark = pytest.mark.slow

CONFIG = """
orgs:
  - slug: acme
    name: Acme Corp
    providers:
      - {{name: fake, kind: openai_compatible, api_base: "{url}", api_key: sk-fake}}
      - {{name: claude, kind: anthropic, api_key: sk-ant-never-called}}
    deployments:
      - {{model: chat-small, provider: fake, upstream_model: gpt-4o-mini}}
      # a LiteLLM-only kind: its presence starts litellm's import in either mode
      - {{model: claude, provider: claude, upstream_model: claude-3-5-haiku}}
"""
SLOW_IMPORT = """
import importlib.machinery, os, sys, time

class SlowLoader:
    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):  # resources, get_code, ...: the real loader's
        return getattr(self.inner, name)

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        time.sleep(float(os.environ["SLOW_LITELLM_IMPORT_S"]))
        self.inner.exec_module(module)

class SlowLitellm:
    def find_spec(self, name, path=None, target=None):
        if name != "litellm":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None:
            spec.loader = SlowLoader(spec.loader)
        return spec

sys.meta_path.insert(0, SlowLitellm())
"""
CHAT = {"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]}
ENOUGH = 5  # answers in a row that end the loop


@pytest.fixture(scope="module")
def upstream():
    return FakeUpstream().start()


@pytest.mark.parametrize("passthrough", ["0", "1"], ids=["litellm", "passthrough"])
def test_a_starting_server_never_answers_gateway_not_ready(tmp_path, upstream, passthrough):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SLOW_IMPORT)
    ext = ExternalBonito(tmp_path, env={"GATEWAY_PASSTHROUGH": passthrough})
    try:
        ext.migrate()
        (tmp_path / "bonito.yaml").write_text(CONFIG.format(url=upstream.url))
        ext.manage("apply_config", str(tmp_path / "bonito.yaml"))
        out = ext.manage("create_api_key", "--org", "acme", "--name", "app")
        key = out.strip().splitlines()[-1]
        port = free_port()
        log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - the process writes it
        slow = {"PYTHONPATH": str(tmp_path / "site"), "SLOW_LITELLM_IMPORT_S": "35"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bonito.asgi:application", "--port", str(port)]
            + ["--log-level", "warning", "--lifespan", "on"],
            cwd=ROOT,
            env={**ext.env, **slow},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        ext.procs.append(proc)
        statuses, started = [], time.monotonic()
        with httpx.Client(timeout=120) as client:
            while statuses[-ENOUGH:] != [200] * ENOUGH:
                assert time.monotonic() - started < 240, statuses[-20:]
                assert proc.poll() is None, (tmp_path / "server.log").read_text()
                try:
                    response = client.post(
                        f"http://127.0.0.1:{port}/v1/chat/completions",
                        json=CHAT,
                        headers={"Authorization": f"Bearer {key}"},
                    )
                except httpx.TransportError:  # not accepting connections yet
                    time.sleep(0.05)
                    continue
                statuses.append(response.status_code)
                assert response.status_code == 200, response.text
        # Every request once connections were accepted was answered, and recorded.
        deadline = time.time() + 15
        while ext.count_usage() < len(statuses) and time.time() < deadline:
            time.sleep(0.2)
        assert ext.count_usage() == len(statuses)
    finally:
        ext.close()


LEARNED_CONFIG = """
orgs:
  - slug: acme
    name: Acme Corp
    tier: pro
    providers:
      - {{name: fake, kind: openai_compatible, api_base: "{url}", api_key: sk-fake}}
    deployments:
      - {{model: chat-small, provider: fake, upstream_model: gpt-4o-mini}}
      - {{model: chat-big, provider: fake, upstream_model: gpt-4o}}
    gateway:
      smart_tiers: [chat-small, chat-big]
      smart: {{classifier: learned}}
"""


def test_a_new_worker_loads_the_learned_classifier_before_its_first_request(tmp_path, upstream):
    """The snapshot refresher starts with the server (ASGI lifespan), not on the first
    /v1 request: that request waited for the first snapshot and the model's load (about a
    second). Here the model is loaded with no request sent, and the first one is scored
    by it."""
    from gateway.tests.test_smart_routing import _learned_installed

    if not _learned_installed():
        pytest.skip("the smart extra (requirements-smart.txt) is not installed")
    ext = ExternalBonito(tmp_path)
    try:
        ext.migrate()
        (tmp_path / "bonito.yaml").write_text(LEARNED_CONFIG.format(url=upstream.url))
        ext.manage("apply_config", str(tmp_path / "bonito.yaml"))
        key = (
            ext.manage("create_api_key", "--org", "acme", "--name", "app").strip().splitlines()[-1]
        )
        port = free_port()
        url = ext.serve(port)  # waits for /api/health only
        log = tmp_path / f"server-{port}.log"
        deadline = time.time() + 60
        while "learned classifier loaded" not in log.read_text():
            assert time.time() < deadline, log.read_text()
            time.sleep(0.1)
        response = httpx.post(
            url + "/v1/chat/completions",
            json={**CHAT, "model": "auto"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-bonito-route-classifier"] == "learned"
        assert log.read_text().count("learned classifier loaded") == 1
    finally:
        ext.close()
