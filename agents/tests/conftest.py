"""Agents' cast: Acme in VPC mode with its bt- token, and a client speaking the protocol."""

import gzip
import json
import uuid

import pytest
from django.test import Client

from agents import services
from conftest import SETUP


@pytest.fixture(autouse=True)
def _own_hash_secret(settings):
    # Agents are handed the key-hash secret: the control plane must have its own, never SECRET_KEY.
    settings.KEY_HASH_SECRET = "agent-tests-key-hash-secret-0123456789"


class AgentClient:
    """Speaks /api/agent/ as an agent does: bearer token, agent id and version headers."""

    def __init__(self, token: str, agent_id: uuid.UUID | None = None, version: str = "1.0.0"):
        self.http = Client()
        self.token, self.agent_id, self.version = token, agent_id or uuid.uuid4(), version

    def headers(self, **extra):
        return {
            "Authorization": f"Bearer {self.token}",
            "X-Bonito-Agent-Id": str(self.agent_id),
            "X-Bonito-Agent-Version": self.version,
            **extra,
        }

    def config(self, since=None, **headers):
        path = "/api/agent/config" + (f"?since={since}" if since is not None else "")
        return self.http.get(path, headers=self.headers(**headers))

    def keys(self):
        return self.http.get("/api/agent/keys", headers=self.headers())

    def ingest_raw(self, body: bytes, encoding="gzip", **headers):
        return self.http.post(
            "/api/agent/ingest",
            data=body,
            content_type="application/json",
            headers=self.headers(**({"Content-Encoding": encoding} if encoding else {}), **headers),
        )

    def ingest(self, records, batch_id=None):
        doc = {"batch_id": str(batch_id or uuid.uuid4()), "records": records}
        return self.ingest_raw(gzip.compress(json.dumps(doc).encode()))

    def heartbeat(self, **fields):
        beat = {
            "agent_id": str(self.agent_id),
            "hostname": "agent-1",
            "version": self.version,
            "started_at": "2026-11-30T00:00:00+00:00",
            "uptime_s": 60.0,
            "config_version": None,
            "requests": 0,
            "errors": 0,
            "error_rate": 0.0,
            "providers": [],
            "spool": {"records": 0, "bytes": 0, "dropped": 0},
            "warnings": [],
            **fields,
        }
        return self.http.post(
            "/api/agent/heartbeat",
            data=json.dumps(beat),
            content_type="application/json",
            headers=self.headers(),
        )


@pytest.fixture
def token_a(org_a, alice):
    """Acme switched to VPC mode by its admin: the raw bt- token, as shown once."""
    return services.vpc_enable(actor=SETUP, org=org_a)


@pytest.fixture
def token_b(org_b, charlie):
    return services.vpc_enable(actor=SETUP, org=org_b)


@pytest.fixture
def agent_a(token_a):
    return AgentClient(token_a)


@pytest.fixture
def agent_b(token_b):
    return AgentClient(token_b)


from gateway.tests.conftest import fake_upstream_server, loopback_allowed  # noqa: E402, F401


@pytest.fixture
def hook(fake_upstream_server, loopback_allowed):  # noqa: F811
    """A real HTTP endpoint that records what webhooks post to it."""
    fake_upstream_server.reset()
    yield fake_upstream_server
    fake_upstream_server.reset()
