"""The agent's ASGI app: /v1 (the shared gateway's V1App over the agent's Gateway),
/health, /ready, and the lifespan that starts and stops the background work."""

import asyncio
import logging
import os

import orjson

from gateway.asgi_v1 import V1App
from gateway.dataplane.limits import Limiter
from gateway.dataplane.netpolicy import NetworkPolicy
from gateway.dataplane.proxy import Gateway
from gateway.dataplane.state import SnapshotSource
from gateway.dataplane.usage import UsageSink

from . import settings as agent_settings
from . import state
from .control import ControlPlane, IngestWriter, is_refusal
from .credentials import Credentials
from .sync import ConfigSync, Stats
from .upstreams import AgentUpstreams
from .workers import WorkerShare

log = logging.getLogger("bonito.agent")

SOURCE_HEADER = (b"x-bonito-source", b"vpc_agent")
MAX_INGEST_RECORDS = 5000  # the control plane's AGENT_INGEST_MAX_RECORDS default


class Agent:
    """Everything one agent process runs: its Gateway, config sync and usage reporter."""

    def __init__(self, s):
        self.settings = s
        agent_settings.prepare_state_dir(s.state_dir)
        self.token = state.Token(s.token, s.state_dir, s.token_file)
        self.control = ControlPlane(s, self.token, state.agent_id(s.state_dir))
        self.credentials = Credentials.from_settings(s)
        self.stats = Stats(WorkerShare(s.state_dir, s.workers))
        self.writer = IngestWriter(self.control)
        self.gateway = Gateway(
            snapshots=SnapshotSource(),
            limiter=Limiter(s.redis_url, fallback_share=1 / s.workers, lease_s=s.spend_lease_s),
            sink=UsageSink(
                self.writer,
                s.spool_dir,
                batch_size=MAX_INGEST_RECORDS,
                on_stop=self.writer.close,
                journal_dir=s.journal_dir,
                dead_letter_dir=s.dead_letter_dir,
                is_refusal=is_refusal,
                min_batch_interval=s.ingest_interval_s or 10.0,
                retry_backoff_max=60.0,
                spool_max_bytes=s.spool_max_bytes,
            ),
            upstreams=AgentUpstreams(
                passthrough=True,
                network=NetworkPolicy(s.provider_networks),
                ambient_credentials=s.ambient_credentials,
                stats=self.stats,
                on_auth_failure=lambda: self.sync.credentials_stale(),
            ),
            max_body_bytes=s.max_body_bytes,
            source="vpc_agent",
        )
        self.sync = ConfigSync(s, self.control, self.credentials, self.gateway, self.stats)

    def start(self) -> None:
        """Blocking (the credential sources' SDK calls): run it off the event loop."""
        self.credentials.load()
        self.sync.load_cache()
        self.sync.start()
        self.gateway.sink.start()

    def stop(self) -> None:
        self.sync.stop()
        self.gateway.sink.stop()


def _json(status: int, body: dict) -> tuple[dict, dict]:
    data = orjson.dumps(body)
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
            (b"cache-control", b"no-store"),
            SOURCE_HEADER,
        ],
    }
    return start, {"type": "http.response.body", "body": data}


class AgentApp:
    def __init__(self, agent: Agent):
        self.agent = agent
        # No Host check: the agent answers on a private address under whatever name the
        # VPC gives it; callers authenticate with their bn-/rt- key.
        self.v1 = V1App(
            self._not_found, agent.settings.max_body_bytes, lambda host: True, lambda: agent.gateway
        )

    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind == "lifespan":
            return await self._lifespan(receive, send)
        if kind == "websocket":
            # Nothing here is a WebSocket: the handshake is refused (uvicorn answers a 403).
            # Returning without answering it made uvicorn answer a 500 and log an error.
            # (/v1 never gets here: the HTTP protocol answers a handshake there as the HTTP
            # request it also is.)
            await receive()  # websocket.connect
            return await send({"type": "websocket.close"})
        if kind != "http":
            return None
        path = scope["path"]
        if path == "/health":
            return await self._send(send, *_json(200, {"status": "ok"}))
        if path == "/ready":
            sync = self.agent.sync
            if sync.ready:
                body = {
                    "status": "ready",
                    "config_version": sync.base.version,
                    "config_from": sync.loaded_from,
                }
                return await self._send(send, *_json(200, body))
            body = {
                "status": "starting",
                "detail": "no config loaded yet",
                # why: the last config pull's problem (the control plane's error code and
                # words, a wrong URL, a connection refused), None before the first answer
                "reason": sync.problem,
            }
            return await self._send(send, *_json(503, body))
        stats = self.agent.stats

        async def tagged(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), SOURCE_HEADER]}
                stats.response(message["status"])
            await send(message)

        await self.v1(scope, receive, tagged)

    @staticmethod
    async def _send(send, start, body):
        await send(start)
        await send(body)

    async def _not_found(self, scope, receive, send):
        if scope["type"] != "http":
            return
        error = {
            "error": {
                "message": f"Unknown path {scope['path'][:200]}: this agent serves /v1, /health and /ready.",
                "type": "invalid_request_error",
                "param": None,
                "code": "unknown_url",
            }
        }
        await self._send(send, *_json(404, error))

    async def _lifespan(self, receive, send):
        while True:
            message = await receive()
            step = message["type"].removeprefix("lifespan.")
            try:
                if step == "startup":
                    await asyncio.to_thread(self.agent.start)
                else:
                    await asyncio.to_thread(self.agent.stop)
            except Exception as exc:
                log.exception("agent %s failed", step)
                await send({"type": f"lifespan.{step}.failed", "message": str(exc)})
                return
            await send({"type": f"lifespan.{step}.complete"})
            if step == "shutdown":
                return


def create_app() -> AgentApp:
    """uvicorn's factory: each worker process builds its own agent from the environment
    (and sets up its logging: with several workers, each is a new process)."""
    agent_settings.configure_logging(os.environ)
    return AgentApp(Agent(agent_settings.load()))
