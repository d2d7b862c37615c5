"""The media endpoints (images, speech, transcriptions, moderations) through a real agent
process: the agent wraps each provider adapter to watch its health, and the wrapper must
pass every adapter call through. It passed chat and streams only, so every image, audio
and moderation request to an agent was a 500 (AttributeError: 'Watched' object has no
attribute 'speech') while the shared gateway served it."""

import base64
import gzip
import json
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from agents.tests.agent_harness import AgentProcess, LoopbackHttp, wait_for
from core import keys
from gateway.dataplane.snapshot import DeploymentInfo, KeyInfo, OrgInfo, Snapshot, snapshot_to_dict
from gateway.tests.fake_upstream import FakeUpstream

pytestmark = pytest.mark.slow

SECRET = b"hash-secret-for-the-agent-media-tests"
MODELS = ("gpt-image-1", "tts-1", "whisper-1", "omni-moderation-latest")


class FakeControlPlane(LoopbackHttp):
    """The agent API over real HTTP: one org's config, and the usage and heartbeats taken."""

    def __init__(self, upstream_url: str, key: str):
        deps = {
            name: (DeploymentInfo(n + 1, name, "vpc-llm", "openai_compatible", name, upstream_url),)
            for n, name in enumerate(MODELS)
        }
        digest = keys.digest(key, SECRET)
        snap = Snapshot(
            version=3,
            keys={digest: KeyInfo(id=10, org_id=1, name="app", hash=digest)},
            orgs={1: OrgInfo(id=1, slug="acme", tier="enterprise", deployments=deps)},
        )
        self.config = {
            "schema": 1,
            "org": {"id": 1, "slug": "acme"},
            "version": 3,
            "full": True,
            "snapshot": snapshot_to_dict(snap),
            "facts": {"spent_this_month": 0.0, "blocked": {}},
            "hash_secret": base64.b64encode(SECRET).decode(),
            "poll_s": 30,
            "heartbeat_s": 60,
            "ingest_batch_s": 10,
            "token": None,
        }
        self.records: list[dict] = []
        self.providers: list = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, doc):
                data = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(outer.config)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                doc = json.loads(body)
                if self.path.startswith("/api/agent/ingest"):
                    outer.records.extend(doc["records"])
                    n = len(doc["records"])
                    self._send({"batch_id": doc["batch_id"], "accepted": n, "duplicates": 0})
                else:
                    outer.providers = doc.get("providers", [])
                    self._send({"ok": True, "config_version": 3})

        self.serve(Handler)


@pytest.fixture
def agent(tmp_path):
    upstream = FakeUpstream().start()
    key = keys.generate("bn-")
    cp = FakeControlPlane(upstream.url, key)
    process = AgentProcess(tmp_path / "state", cp.url, keys.generate("bt-")).start()
    yield process, cp, key
    process.stop()
    cp.close()


def test_images_audio_and_moderations_are_served_and_recorded(agent):
    process, cp, key = agent
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=process.url + "/v1", headers=auth, timeout=30) as v1:
        image = v1.post("/images/generations", json={"model": "gpt-image-1", "prompt": "a tuna"})
        speech = v1.post(
            "/audio/speech", json={"model": "tts-1", "input": "hello", "voice": "alloy"}
        )
        heard = v1.post(
            "/audio/transcriptions",
            data={"model": "whisper-1"},
            files={"file": ("a.wav", b"RIFF....WAVEfmt " + bytes(64), "audio/wav")},
        )
        moderated = v1.post("/moderations", json={"model": MODELS[3], "input": "hello"})
    for response in (image, speech, heard, moderated):
        assert response.status_code == 200, (response.request.url, response.text)
    assert speech.content  # the audio bytes
    assert wait_for(lambda: len(cp.records) >= 4, 15), process.log()
    assert {r["endpoint"] for r in cp.records} >= {"images", "speech", "transcriptions",
                                                   "moderations"}  # fmt: skip
    assert all(r["status"] == "success" for r in cp.records)
    assert "AttributeError" not in process.log(whole=True)
