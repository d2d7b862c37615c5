"""Config answers that cannot apply (a delta from an unexpected version, or another org's
after the operator changed the token) make the agent ask for the whole config at once;
facts and credentials are merged into what it serves; the disk cache has no credentials."""

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agents.runtime import settings as agent_settings
from agents.runtime.app import Agent
from agents.runtime.state import fingerprint
from core import keys
from gateway.dataplane.snapshot import (
    Delta,
    DeploymentInfo,
    KeyInfo,
    OrgInfo,
    Snapshot,
    delta_to_dict,
    snapshot_to_dict,
)

SECRET = b"hash-secret-for-the-config-sync-tests"


def _org(org_id: int, slug: str) -> OrgInfo:
    dep = DeploymentInfo(
        1, "chat-small", "vpc-llm", "openai_compatible", "gpt-4o-mini", "http://10.0.0.5/v1"
    )
    return OrgInfo(id=org_id, slug=slug, deployments={"chat-small": (dep,)})


def _full(org_id: int, version: int, key_hash: str) -> dict:
    snap = Snapshot(
        version=version,
        keys={key_hash: KeyInfo(id=org_id * 10, org_id=org_id, name="k", hash=key_hash)},
        orgs={org_id: _org(org_id, f"org{org_id}")},
    )
    return {
        "schema": 1,
        "org": {"id": org_id, "slug": f"org{org_id}"},
        "version": version,
        "full": True,
        "snapshot": snapshot_to_dict(snap),
        "facts": {"spent_this_month": 12.5, "blocked": {"org": {"reason": "cap", "until": 4e9}}},
        "hash_secret": base64.b64encode(SECRET).decode(),
        "poll_s": 30,
        "heartbeat_s": 60,
        "ingest_batch_s": 10,
        "token": None,
    }


def _delta(org_id: int, since: int, until: int) -> dict:
    doc = _full(org_id, until, "unused")
    del doc["snapshot"]
    doc["full"] = False
    doc["delta"] = delta_to_dict(Delta(since=since, until=until))
    return doc


class FakeConfig:
    def __init__(self):
        self.answers: list = []  # (since or None) -> doc, popped in order
        self.asked: list = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                since = self.path.partition("since=")[2] or None
                outer.asked.append(since)
                doc = outer.answers.pop(0)(since)
                data = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", f'"{len(outer.asked)}"')
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def setup(tmp_path):
    fake = FakeConfig()
    s = agent_settings.load(
        {
            "BONITO_CONTROL_PLANE": f"http://127.0.0.1:{fake.server.server_address[1]}",
            "BONITO_ORG_TOKEN": keys.generate("bt-"),
            "BONITO_STATE_DIR": str(tmp_path),
            "BONITO_PROVIDER_VPC_LLM_API_KEY": "sk-vpc",
            # the vLLM's network (10.0.0.5): its credentials go there, as its calls may
            "BONITO_PROVIDER_ALLOWED_NETWORKS": "10.0.0.0/8",
        }
    )
    agent = Agent(s)
    agent.credentials.load()
    yield fake, agent
    fake.server.shutdown()
    fake.server.server_close()


def test_it_serves_the_pulled_config_with_facts_and_local_credentials(setup, tmp_path):
    fake, agent = setup
    fake.answers = [lambda since: _full(1, 5, "h1")]
    assert agent.sync.pull() == "updated"
    snap = agent.gateway.snapshots.current
    org = snap.orgs[1]
    assert org.spent_this_month == 12.5 and org.blocked["org"].reason == "cap"
    assert org.deployments["chat-small"][0].credentials == {"api_key": "sk-vpc"}
    assert snap.hash_secret == SECRET and "h1" in snap.keys
    cache = (tmp_path / "config.json").read_text()
    assert "sk-vpc" not in cache
    assert oct((tmp_path / "config.json").stat().st_mode & 0o777) == "0o600"


def test_a_delta_that_does_not_fit_brings_a_full_config_at_once(setup):
    fake, agent = setup
    fake.answers = [
        lambda since: _full(1, 5, "h1"),
        lambda since: _delta(1, 3, 7),  # from a version the agent is not at
        lambda since: _full(1, 7, "h1b"),
    ]
    agent.sync.pull()
    assert agent.sync.pull() == "retry"
    assert agent.gateway.snapshots.current.version == 5  # still serving what it had
    assert agent.sync.pull() == "updated"
    assert fake.asked == [None, "5", None]
    assert agent.gateway.snapshots.current.version == 7


def test_a_delta_of_another_org_never_lands_on_this_orgs_config(setup):
    fake, agent = setup
    fake.answers = [
        lambda since: _full(1, 5, "h1"),
        lambda since: _delta(2, 5, 6),  # the token now belongs to org 2
        lambda since: _full(2, 6, "h2"),
    ]
    agent.sync.pull()
    assert agent.sync.pull() == "retry"
    assert agent.sync.pull() == "updated"
    snap = agent.gateway.snapshots.current
    assert set(snap.orgs) == {2} and set(snap.keys) == {"h2"}


@pytest.mark.parametrize("answer", [[1, 2, 3], "a string", 42, None, {"schema": 1}])
def test_an_answer_that_is_not_a_config_document_is_a_retry_not_a_crash(setup, answer):
    fake, agent = setup
    fake.answers = [lambda since: _full(1, 5, "h1"), lambda since: answer]
    assert agent.sync.pull() == "updated"
    assert agent.sync.pull() == "retry"  # logged; the next pull asks for the full config
    assert agent.gateway.snapshots.current.version == 5  # still serving what it had


def test_a_rotation_it_cannot_keep_on_disk_still_applies_the_config(setup):
    """The state folder cannot take token.json (its disk full; here a folder in its place):
    the new token is used from memory and the config still applies. The failed write ended
    the pull, so during the whole rotation no config change (a revoked key) reached it."""
    fake, agent = setup
    (agent.settings.state_dir / "token.json").mkdir()
    new = keys.generate("bt-")
    fake.answers.append(lambda since: {**_full(7, 5, "h1"), "token": {"rotate_to": new}})
    assert agent.sync.pull() == "updated"
    assert agent.gateway.snapshots.current.version == 5
    assert agent.control.token.current == new
    # and the write that failed left no half-written file in the state folder
    assert not list(agent.settings.state_dir.glob(".token.json.*.tmp"))


@pytest.mark.parametrize(
    "suggested",
    [
        {"poll_s": "30", "heartbeat_s": "60", "ingest_batch_s": "10"},  # not numbers
        {"poll_s": -5, "heartbeat_s": -1, "ingest_batch_s": -3},  # below zero: a tight loop
        {"poll_s": 1e300, "heartbeat_s": 1e300, "ingest_batch_s": 1e300},  # never again
        {"poll_s": True, "heartbeat_s": [1], "ingest_batch_s": {"s": 1}},
    ],
)
def test_the_control_planes_suggested_intervals_are_used_only_within_bounds(
    setup, tmp_path, suggested
):
    """poll_s, heartbeat_s and ingest_batch_s come from the control plane's answer (and are
    kept in the disk cache): a string killed the sync thread (TypeError in its own error
    handler), so no config change reached the agent again; a negative one pulled in a
    tight loop; a huge one never pulled again."""
    fake, agent = setup
    fake.answers = [lambda since: {**_full(1, 5, "h1"), **suggested}] + [
        lambda since: _full(1, 5, "h1")
    ] * 50
    agent.sync.start()
    try:
        deadline = time.monotonic() + 5
        while agent.sync.base is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)
        assert agent.sync._thread.is_alive()
        for name in ("poll_s", "heartbeat_s", "ingest_s"):
            value = getattr(agent.sync, name)
            assert type(value) in (int, float) and 1 <= value <= 3600, (name, value)
        assert 1 <= agent.gateway.sink.min_batch_interval <= 3600
        assert len(fake.asked) == 1  # one pull, not one every 50 ms
    finally:
        agent.sync.stop()
    # and a restart from the disk cache that kept them is just as sane
    again = Agent(agent.settings)
    assert again.sync.load_cache()
    assert 1 <= again.sync.poll_s <= 3600 and 1 <= again.sync.heartbeat_s <= 3600


DAMAGED = [
    {"org": "org1"},  # not an object: the agent's start failed ('agent startup failed')
    {"org": {"id": "1"}},
    {"facts": [1]},
    {"facts": {"blocked": [1]}},
    {"facts": {"blocked": {"org": "cap"}}},
    {"facts": {"spent_this_month": "lots"}},
]


@pytest.mark.parametrize("damage", DAMAGED)
def test_a_damaged_cache_is_not_served_and_stops_nothing(setup, tmp_path, damage):
    """A config.json whose org or facts are not what they must be (a disk fault, a hand
    edit) crashed the agent's start; it now waits for the control plane."""
    _fake, agent = setup
    doc = {**_full(1, 5, "h1"), **damage}
    doc["token_fingerprints"] = [fingerprint(agent.control.token.current)]
    (tmp_path / "config.json").write_text(json.dumps(doc))
    assert agent.sync.load_cache() is False
    assert agent.gateway.snapshots.current is None and agent.sync.base is None


@pytest.mark.parametrize("damage", DAMAGED)
def test_a_document_it_cannot_serve_changes_nothing(setup, damage):
    fake, agent = setup
    fake.answers = [lambda since: _full(1, 5, "h1"), lambda since: {**_full(1, 6, "h2"), **damage}]
    assert agent.sync.pull() == "updated"
    assert agent.sync.pull() == "retry"
    assert agent.sync.base.version == 5 and agent.sync.facts["spent_this_month"] == 12.5
    agent.sync.publish()  # what it keeps can still be published (a credentials reload)
    assert agent.gateway.snapshots.current.orgs[1].spent_this_month == 12.5


@pytest.mark.parametrize(
    ("bound", "served", "logged"),
    [
        ("own", True, "serving config version 5 from the disk cache"),
        ("other", False, "the config cache was pulled with another org token"),
        (None, False, "the config cache names no org token (written by an older agent)"),
    ],
)
def test_the_disk_cache_serves_only_the_token_it_was_pulled_with(
    setup, tmp_path, caplog, bound, served, logged
):
    _fake, agent = setup
    doc = _full(1, 5, "h1")
    if bound is not None:
        token = agent.control.token.current if bound == "own" else keys.generate("bt-")
        doc["token_fingerprints"] = [fingerprint(token)]
    (tmp_path / "config.json").write_text(json.dumps(doc))
    with caplog.at_level("WARNING", logger="bonito.agent"):
        assert agent.sync.load_cache() is served
    assert (agent.gateway.snapshots.current is not None) is served
    assert logged in caplog.text


def test_a_state_folder_it_cannot_write_is_one_clear_log_line(tmp_path, caplog):
    """The sync loop's expected failures (a full or read-only disk under the state folder;
    here a file where the workers' folder should be) are one line naming the cause, logged
    once while it lasts, not a traceback every second, and one line when it passes again."""
    fake = FakeConfig()
    fake.answers = [lambda since: _full(1, 5, "h1")] * 50
    s = agent_settings.load(
        {
            "BONITO_CONTROL_PLANE": f"http://127.0.0.1:{fake.server.server_address[1]}",
            "BONITO_ORG_TOKEN": keys.generate("bt-"),
            "BONITO_STATE_DIR": str(tmp_path),
            "BONITO_AGENT_WORKERS": "2",
        }
    )
    agent = Agent(s)
    (tmp_path / "workers").write_text("")  # every worker's counts go in this folder
    with caplog.at_level("WARNING"):
        agent.sync.start()
        try:
            time.sleep(2.5)
            failed = [r for r in caplog.records if "sync step failed" in r.getMessage()]
            assert len(failed) == 1 and not failed[0].exc_info, caplog.text
            assert str(tmp_path / "workers") in failed[0].getMessage()
            (tmp_path / "workers").unlink()  # fixed: the next step passes, said once
            deadline = time.monotonic() + 10
            while "agent sync back after" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)
        finally:
            agent.sync.stop()
            fake.server.shutdown()
            fake.server.server_close()
    assert caplog.text.count("agent sync back after") == 1, caplog.text
    assert len([r for r in caplog.records if "sync step failed" in r.getMessage()]) == 1
