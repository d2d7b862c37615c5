"""Real processes for the agent's end-to-end tests: a control plane (uvicorn, its own
SQLite or PostgreSQL database), the agent (``python -m agents.runtime``) reaching it only
through a link the test cuts and restores (a TCP forwarder that also records every byte the
agent sends), and a fake OpenAI-compatible upstream inside the "VPC"."""

import asyncio
import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from gateway.tests.conftest import free_port
from gateway.tests.external import ROOT, ExternalBonito, TcpProxy

HASH_SECRET = "agent-e2e-key-hash-secret-0123456789abcdef"


class RecordingLink(TcpProxy):
    """The agent's only way to the control plane: cut with ``stop()``, restored with
    ``start()``; ``sent`` holds, per connection, the bytes the agent sent."""

    def __init__(self, target_host: str, target_port: int):
        super().__init__(target_host, target_port)
        self.sent: list[bytearray] = []
        self.dark = False
        self.held: list = []

    def black_hole(self) -> None:
        """The link goes dark, as when a route or a firewall drops packets: connections open
        but nothing comes back, so every call waits for its timeout (``stop()`` refuses them
        at once instead)."""

        async def go():
            self.dark = True
            for w in list(self.writers):
                w.close()
            self.writers.clear()

        asyncio.run_coroutine_threadsafe(go(), self.loop).result(5)

    def light(self) -> None:
        async def go():
            self.dark = False
            for w in self.held:
                w.close()
            self.held.clear()

        asyncio.run_coroutine_threadsafe(go(), self.loop).result(5)

    async def _handle(self, reader, writer):
        if self.dark:
            self.held.append(writer)  # accepted, never answered
            return
        captured = bytearray()
        self.sent.append(captured)

        class Tap:
            async def read(self, n):
                data = await reader.read(n)
                captured.extend(data)
                return data

        await super()._handle(Tap(), writer)

    def requests(self) -> list[tuple[str, dict, bytes]]:
        """(request line, headers, decoded body) of every HTTP request the agent sent."""
        out = []
        for stream in self.sent:
            data = bytes(stream)
            while data:
                head, sep, rest = data.partition(b"\r\n\r\n")
                if not sep:
                    break
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (x.partition(":") for x in lines[1:])
                }
                length = int(headers.get("content-length", "0"))
                body, data = rest[:length], rest[length:]
                if headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                out.append((lines[0], headers, body))
        return out


class ControlPlane:
    def __init__(self, tmp: Path, upstream_url: str):
        tmp.mkdir(parents=True, exist_ok=True)
        self.ext = ExternalBonito(
            tmp,
            redis_url="",
            env={"KEY_HASH_SECRET": HASH_SECRET, "AGENT_TOKEN_GRACE_HOURS": "1"},
        )
        self.ext.migrate()
        # The config, a key and the VPC switch in one Django process (each start costs ~2.5 s
        # of CPU): the same commands and services, called in turn.
        path = self._write_config(upstream_url)
        self.key, self.token = self.shell(
            "import io; from django.core.management import call_command;"
            f"call_command('apply_config', {str(path)!r}, stdout=io.StringIO());"
            "out = io.StringIO();"
            "call_command('create_api_key', '--org', 'acme', '--name', 'app', stdout=out);"
            "from orgs.models import Organization; from agents.services import vpc_enable;"
            "from orgs.audit import Actor;"
            "token = vpc_enable(actor=Actor(via='test'), org=Organization.objects.get(slug='acme'));"
            "print(out.getvalue().strip().splitlines()[-1], token)"
        ).split()
        self.port = free_port()
        self.url = self.ext.serve(self.port)

    def apply(self, upstream_url: str, allowed=("chat-small",), spend_cap: str = "") -> None:
        self.ext.manage("apply_config", str(self._write_config(upstream_url, allowed, spend_cap)))

    def _write_config(self, upstream_url: str, allowed=("chat-small",), spend_cap="") -> Path:
        cap = f"\n      monthly_spend_cap_usd: {spend_cap}" if spend_cap else ""
        yaml = f"""
orgs:
  - slug: acme
    name: Acme Corp
    tier: enterprise
    providers:
      - name: vpc-llm
        kind: openai_compatible
        api_base: {upstream_url}
    deployments:
      - {{model: chat-small, provider: vpc-llm, upstream_model: gpt-4o-mini, input_price_per_mtok: 2.5, output_price_per_mtok: 10}}
      - {{model: chat-large, provider: vpc-llm, upstream_model: gpt-4o, input_price_per_mtok: 5, output_price_per_mtok: 20}}
    policy:
      allowed_models: [{", ".join(allowed)}]{cap}
"""
        path = self.ext.tmp / "bonito.yaml"
        path.write_text(yaml)
        return path

    def manage_last(self, *args) -> str:
        return self.ext.manage(*args).strip().splitlines()[-1]

    def shell(self, code: str) -> str:
        return self.manage_last("shell", "-c", code)

    def rotate(self) -> str:
        return self.shell(
            "from orgs.models import Organization; from agents.services import org_token_rotate;"
            "from orgs.audit import Actor;"
            "print(org_token_rotate(actor=Actor(via='test'), org=Organization.objects.get(slug='acme'))[1])"
        )

    def revoke_tokens(self) -> None:
        self.shell(
            "from orgs.models import Organization; from agents.services import org_token_revoke;"
            "from orgs.audit import Actor;"
            "print(org_token_revoke(actor=Actor(via='test'), org=Organization.objects.get(slug='acme')))"
        )

    def revoke_key(self) -> None:
        self.shell(
            "from gateway.models import ApiKey; from gateway.services import api_key_revoke;"
            "from orgs.audit import Actor;"
            "api_key_revoke(actor=Actor(via='test'), key=ApiKey.objects.get(name='app')); print('ok')"
        )

    def status_check(self, minutes_ahead: float = 0) -> tuple[str, dict]:
        """The org's indicator colour and what the minute's missed-heartbeat check sent,
        as seen ``minutes_ahead`` from now (the beat task takes its clock as an argument)."""
        out = self.shell(
            "import json; from datetime import timedelta; from django.utils import timezone;"
            "from agents.alerts import agent_heartbeats_check; from agents.selectors import org_agent_status;"
            "from orgs.models import Organization; org = Organization.objects.get(slug='acme');"
            f"now = timezone.now() + timedelta(minutes={minutes_ahead});"
            "print(json.dumps([org_agent_status(org, now), agent_heartbeats_check(now=now)]))"
        )
        status, sent = json.loads(out)
        return status, sent

    def usage(self) -> list[dict]:
        out = self.shell(
            "import json; from billing.models import UsageRecord;"
            "print(json.dumps([{'id': str(r.id), 'source': r.source, 'cost': str(r.cost),"
            " 'input_tokens': r.input_tokens, 'output_tokens': r.output_tokens,"
            " 'model_used': r.model_used, 'status': r.status, 'org': r.org.slug}"
            " for r in UsageRecord.objects.all()]))"
        )
        return json.loads(out)

    def usage_count(self) -> int:
        return self.ext.count_usage()

    def agents(self) -> list[dict]:
        """The agents the control plane knows, read from its database (tests poll this; the
        agent id as stored: hex on SQLite)."""
        fields = ("agent_id", "version", "config_version", "requests")
        rows = self.ext.query(f"SELECT {', '.join(fields)} FROM agents_agent")  # noqa: S608
        return [dict(zip(fields, row, strict=True)) for row in rows]

    def close(self) -> None:
        self.ext.close()


class AgentProcess:
    def __init__(self, state_dir: Path, control_plane_url: str, token: str, env=None):
        self.state_dir = state_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("BONITO_", "DATABASE_"))},
            "BONITO_CONTROL_PLANE": control_plane_url,
            "BONITO_ORG_TOKEN": token,
            "BONITO_STATE_DIR": str(state_dir),
            "BONITO_AGENT_HOST": "127.0.0.1",
            "BONITO_AGENT_PORT": str(self.port),
            "BONITO_SYNC_INTERVAL_S": "1",
            "BONITO_INGEST_INTERVAL_S": "0.5",
            "BONITO_HEARTBEAT_INTERVAL_S": "1",
            "BONITO_CONTROL_PLANE_TIMEOUT_S": "3",
            "BONITO_PROVIDER_ALLOWED_NETWORKS": "127.0.0.1/32",
            "BONITO_PROVIDER_VPC_LLM_API_KEY": "sk-only-in-the-vpc",
            **(env or {}),
        }
        self.proc = None

    def start(self, wait_ready: bool = True) -> "AgentProcess":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.state_dir.parent / f"agent-{self.port}.log", "a")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agents.runtime"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        # Each worker loads its own config: with several, one ready answer may be one
        # worker's, so as many answers in a row (each a new connection, any worker's) as
        # make it all but certain that every worker has answered ready.
        workers = int(self.env.get("BONITO_AGENT_WORKERS") or 1)
        needed, in_a_row = (1 if workers == 1 else 10 * workers), 0
        deadline = time.time() + 60
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log()
            try:
                r = httpx.get(self.url + ("/ready" if wait_ready else "/health"), timeout=1)
                in_a_row = in_a_row + 1 if r.status_code == 200 else 0
                if in_a_row >= needed:
                    return self
            except httpx.HTTPError:
                in_a_row = 0
            time.sleep(0.1 if in_a_row == 0 else 0.02)
        raise AssertionError(self.log())

    def log(self, whole: bool = False) -> str:
        """The agent's log: its last 4,000 characters (for a failure message), or ``whole``
        (to look for a line: a line logged once scrolls out of the tail within seconds)."""
        path = self.state_dir.parent / f"agent-{self.port}.log"
        text = path.read_text() if path.exists() else ""
        return text if whole else text[-4000:]

    def chat(self, key: str, model: str = "chat-small", content: str = "hi") -> httpx.Response:
        return httpx.post(
            self.url + "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": content}]},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to write anything more."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            self.proc = None


def wait_for(predicate, timeout: float, interval: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


class LoopbackHttp:
    """A threaded HTTP server on a free loopback port for a test's fake (``serve`` it a
    BaseHTTPRequestHandler class); ``close`` stops it."""

    def serve(self, handler) -> None:
        import threading
        from http.server import ThreadingHTTPServer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
