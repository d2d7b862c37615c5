"""The agent end to end, in real processes: control plane + agent + fake upstream, the agent
reaching the control plane only through a link the test cuts (agents/tests/agent_harness.py)."""

import json
import threading
import time
import uuid
from decimal import Decimal

import httpx
import pytest

from agents.tests.agent_harness import AgentProcess, ControlPlane, RecordingLink, wait_for
from gateway.tests.fake_upstream import Behaviour, FakeUpstream

pytestmark = pytest.mark.slow

# The fake upstream's answer: 11 prompt tokens, 5 completion tokens ("word0 … word4").
PRICE_IN, PRICE_OUT = Decimal("2.5") / 10**6, Decimal("10") / 10**6
COST = 11 * PRICE_IN + 5 * PRICE_OUT


@pytest.fixture
def upstream():
    return FakeUpstream().start()


@pytest.fixture
def system(tmp_path, upstream):
    cp = ControlPlane(tmp_path / "cp", upstream.url)
    link = RecordingLink("127.0.0.1", cp.port).start()
    agent = AgentProcess(tmp_path / "agent-state", f"http://127.0.0.1:{link.port}", cp.token)
    yield cp, link, agent
    agent.stop()
    link.stop()
    cp.close()


def test_it_serves_through_a_link_outage_and_every_record_arrives_once(system, upstream):
    cp, link, agent = system
    agent.start()
    marker = f"PROMPT-{uuid.uuid4().hex}"
    for _ in range(5):
        r = agent.chat(cp.key, content=marker)
        assert r.status_code == 200, r.text
        assert r.headers["x-bonito-source"] == "vpc_agent"
    # Credentials come from the VPC (the agent's environment), never from the control plane.
    assert upstream.requests[-1]["headers"]["Authorization"] == "Bearer sk-only-in-the-vpc"
    answer = r.json()["choices"][0]["message"]["content"]
    assert wait_for(lambda: cp.usage_count() == 5, 20), agent.log()
    rows = cp.usage()
    assert {row["source"] for row in rows} == {"vpc_agent"}
    assert {row["org"] for row in rows} == {"acme"}
    assert all(Decimal(row["cost"]) == COST for row in rows), rows
    assert wait_for(lambda: cp.agents() and cp.agents()[0]["requests"] >= 5, 10)

    # The link goes dark under load (calls hang until their timeout): the agent keeps
    # serving on its config, usage spools.
    link.black_hole()
    answers = [agent.chat(cp.key, content=marker) for _ in range(30)]
    assert [r.status_code for r in answers] == [200] * 30
    # None waited on the control plane (its calls time out after 3 s here).
    assert max(r.elapsed.total_seconds() for r in answers) < 3.0
    assert httpx.get(agent.url + "/ready").status_code == 200
    assert wait_for(lambda: any((agent.state_dir / "spool").glob("*.jsonl")), 10), agent.log()
    assert cp.usage_count() == 5
    # Heartbeats stop arriving: yellow after 2 minutes, red after 5 with one alert.
    assert cp.status_check(3) == ("yellow", {"outages": 0, "recoveries": 0})
    assert cp.status_check(6) == ("red", {"outages": 1, "recoveries": 0})
    assert cp.status_check(7) == ("red", {"outages": 0, "recoveries": 0})  # once per outage

    # Restored: every record arrives, exactly once.
    link.light()
    assert wait_for(lambda: cp.usage_count() == 35, 60, interval=0.5), agent.log()
    ids = [row["id"] for row in cp.usage()]
    assert len(ids) == len(set(ids)) == 35
    assert wait_for(lambda: not any((agent.state_dir / "spool").glob("*.jsonl")), 10)
    assert cp.status_check(0) == ("green", {"outages": 0, "recoveries": 1})

    # A crash while the link is dark: the journal and spool bring the records back on the
    # next start, each counted once.
    link.black_hole()
    for _ in range(10):
        assert agent.chat(cp.key).status_code == 200
    agent.kill()
    link.light()
    before = len(agent.log(whole=True))
    agent.start()
    assert wait_for(lambda: cp.usage_count() >= 45, 30, interval=0.5), agent.log()
    # Brought back from the dead process's journal ("replayed …"), or from the spool it had
    # already moved them to when it was killed (told once, "N records spooled by an earlier
    # run sent", or "control plane back; N spooled records sent" when this run's first posts
    # failed too; the per-file lines being filtered as settings.py says).
    since_restart = agent.log(whole=True)[before:]
    assert any(
        told in since_restart
        for told in ("replayed", "spooled by an earlier run sent", "spooled records sent")
    ), agent.log()
    time.sleep(2)  # anything replayed twice would have landed by now
    assert cp.usage_count() == 45

    # Nothing the agent sent the control plane carries the prompt or the answer.
    sent = link.requests()
    assert any(line.startswith("POST /api/agent/ingest") for line, _h, _b in sent)
    assert any(line.startswith("POST /api/agent/heartbeat") for line, _h, _b in sent)
    for line, headers, body in sent:
        assert marker.encode() not in body, line
        assert answer.encode() not in body, line
        assert b"sk-only-in-the-vpc" not in body and "sk-only-in-the-vpc" not in str(headers)
        if line.startswith("POST /api/agent/ingest"):
            for record in json.loads(body)["records"]:
                assert not {"messages", "prompt", "content", "choices", "input"} & set(record)


@pytest.mark.alone  # no request slower than 3 s while changes land
def test_changes_reach_every_worker_within_one_sync_and_none_drops_a_request(
    system, upstream, tmp_path
):
    cp, _link, agent = system
    creds = tmp_path / "credentials.json"
    creds.write_text(json.dumps({"vpc-llm": {"api_key": "sk-before-rotation"}}))
    del agent.env["BONITO_PROVIDER_VPC_LLM_API_KEY"]
    agent.env.update({"BONITO_AGENT_WORKERS": "2", "BONITO_CREDENTIALS_FILE": str(creds)})
    agent.start()
    assert agent.chat(cp.key, model="chat-large").status_code == 403  # not allowed yet

    # Traffic flows while the config changes under it: no request fails.
    statuses, stop = [], threading.Event()

    def load():
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                r = client.post(
                    agent.url + "/v1/chat/completions",
                    json={"model": "chat-small", "messages": [{"role": "user", "content": "x"}]},
                    headers={"Authorization": f"Bearer {cp.key}"},
                )
                statuses.append(r.status_code)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        cp.apply(upstream.url, allowed=("chat-small", "chat-large"))
        # One sync is 1 s here: both workers have it within 3 s.
        assert wait_for(
            lambda: all(
                agent.chat(cp.key, model="chat-large").status_code == 200 for _ in range(6)
            ),
            3,
        )
    finally:
        stop.set()
        loader.join()
    assert statuses and set(statuses) == {200}, statuses

    # The provider starts refusing the key: the agent reads its credential file again.
    upstream.behaviours["gpt-4o-mini"] = Behaviour(status=401, fail_times=2)
    creds.write_text(json.dumps({"vpc-llm": {"api_key": "sk-after-rotation"}}))
    assert wait_for(
        lambda: (
            agent.chat(cp.key).status_code == 200
            and upstream.requests[-1]["headers"]["Authorization"] == "Bearer sk-after-rotation"
        ),
        25,
        interval=1,
    ), agent.log()

    # One agent, one heartbeat, every worker's requests counted.
    sent = len(statuses) + 7  # the load, the first 403 and the six chat-large checks at least
    assert wait_for(lambda: (a := cp.agents()) and a[0]["requests"] >= sent, 10), cp.agents()
    assert len(cp.agents()) == 1

    cp.revoke_key()
    # Six refusals in a row, each with the error code. (A request after the wait could meet
    # the other worker still inside its 1 s sync: the six may all have met the first one.)
    assert wait_for(lambda: all(_refused_as_invalid(agent.chat(cp.key)) for _ in range(6)), 3)


def _refused_as_invalid(response) -> bool:
    return response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_token_rotation_revocation_and_a_restart_while_the_control_plane_is_away(system, upstream):
    cp, link, agent = system
    agent.start()
    assert agent.chat(cp.key).status_code == 200
    new_token = cp.rotate()
    token_file = agent.state_dir / "token.json"
    assert wait_for(lambda: token_file.exists() and new_token in token_file.read_text(), 15)
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    # Still in sync on the new token, with no restart: a policy change arrives.
    cp.apply(upstream.url, allowed=("chat-small", "chat-large"))
    assert wait_for(lambda: agent.chat(cp.key, model="chat-large").status_code == 200, 15)
    sent = link.requests()
    assert any(h.get("authorization") == f"Bearer {new_token}" for _l, h, _b in sent)

    # Revoked: the agent keeps serving its last config; changes no longer reach it.
    cp.revoke_tokens()
    cp.apply(upstream.url, allowed=("chat-small",))
    for _ in range(3):
        assert agent.chat(cp.key, model="chat-large").status_code == 200
    # The next sync (each second) meets the refusal; a loaded machine can take a few seconds.
    assert wait_for(lambda: "refused the org token" in agent.log(whole=True), 20), agent.log()
    before = cp.usage_count()

    # Restart with the control plane unreachable: served from the disk cache.
    agent.stop()
    link.stop()
    cache = agent.state_dir / "config.json"
    assert oct(cache.stat().st_mode & 0o777) == "0o600"
    assert b"sk-only-in-the-vpc" not in cache.read_bytes()
    agent.start()
    ready = httpx.get(agent.url + "/ready").json()
    assert ready["config_from"] == "disk cache"
    assert agent.chat(cp.key, model="chat-large").status_code == 200
    assert cp.usage_count() == before


def test_an_endpoint_moved_on_the_control_plane_gets_no_local_credentials(
    system, upstream, tmp_path
):
    """An org admin points the provider at a host of their own (here the same fake upstream
    under a name, not an address of BONITO_PROVIDER_ALLOWED_NETWORKS): the agent withholds
    the VPC's key and refuses the call (a 502, nothing sent there: made without the key, the
    prompt would still have gone to that host), and its heartbeat says why; pinned there,
    the key goes."""
    cp, link, agent = system
    agent.start()
    assert agent.chat(cp.key).status_code == 200
    assert upstream.requests[-1]["headers"]["Authorization"] == "Bearer sk-only-in-the-vpc"
    moved = upstream.url.replace("127.0.0.1", "localhost")
    cp.apply(moved)
    assert wait_for(lambda: agent.chat(cp.key).status_code == 502, 10), agent.log()
    # (Calls before the agent had the change went to the old address, with the key.)
    upstream.reset()
    for _ in range(3):
        r = agent.chat(cp.key, content="PROMPT-for-the-moved-endpoint")
        assert r.status_code == 502, r.text
        error = r.json()["error"]
        assert "withheld its credentials" in error["message"], error
        assert "sk-only-in-the-vpc" not in r.text and "localhost" not in r.text
    assert upstream.requests == []  # neither the prompt nor the key went there
    assert wait_for(
        lambda: any(
            b"withheld" in body
            for line, _h, body in link.requests()
            if line.startswith("POST /api/agent/heartbeat")
        ),
        10,
    ), agent.log()
    agent.stop()
    agent.env["BONITO_PROVIDER_VPC_LLM_ENDPOINT"] = moved
    agent.start()
    assert wait_for(
        lambda: (
            agent.chat(cp.key).status_code == 200
            and upstream.requests[-1]["headers"]["Authorization"] == "Bearer sk-only-in-the-vpc"
        ),
        10,
    )
    sent = upstream.requests[-1]["headers"]
    assert sent.get("Host", sent.get("host", "")).startswith("localhost")


def test_another_spelling_of_a_pinned_providers_name_gets_no_key(upstream, tmp_path):
    """The key in BONITO_PROVIDER_VPC_LLM_API_KEY, the pin in the credentials file: a control
    plane that moves "vpc-llm" is refused by the pin; one that names a provider "vpc_llm"
    (the same variable's key) at a host of its own was sent the key, pin or no pin. Now
    the key is withheld there and the call refused: that host gets nothing."""
    attacker = FakeUpstream().start()
    cp = ControlPlane(tmp_path / "cp", upstream.url)
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps({"vpc-llm": {"endpoint": upstream.url}}))
    agent = AgentProcess(
        tmp_path / "agent-state", cp.url, cp.token, env={"BONITO_CREDENTIALS_FILE": str(creds)}
    )
    try:
        agent.start()
        assert agent.chat(cp.key).status_code == 200
        assert upstream.requests[-1]["headers"]["Authorization"] == "Bearer sk-only-in-the-vpc"
        path = cp.ext.tmp / "alias.yaml"
        path.write_text(
            "orgs:\n  - slug: acme\n    name: Acme Corp\n    tier: enterprise\n"
            f"    providers:\n      - {{name: vpc_llm, kind: openai_compatible, api_base: {attacker.url}}}\n"
            "    deployments:\n      - {model: chat-small, provider: vpc_llm, upstream_model: m,"
            " input_price_per_mtok: 2.5, output_price_per_mtok: 10}\n"
        )
        cp.ext.manage("apply_config", str(path))
        cp.shell(
            "from gateway.models import Deployment; from gateway.services import deployment_delete;"
            "from orgs.audit import Actor;"
            "[deployment_delete(actor=Actor(via='test'), deployment=d) for d in"
            " Deployment.objects.filter(model_name='chat-small', provider__name='vpc-llm')];"
            "print('ok')"
        )
        # Refused by the agent (its credentials withheld there), never sent without them.
        assert wait_for(lambda: agent.chat(cp.key).status_code == 502, 15), agent.log()
        for _ in range(3):
            assert agent.chat(cp.key).status_code == 502
        assert attacker.requests == []
    finally:
        agent.stop()
        cp.close()
