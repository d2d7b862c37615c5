"""Separate worker processes: config changes propagate, and a dead database loses nothing."""

import time

import httpx
import pytest
from django.conf import settings

from gateway.tests.conftest import free_port
from gateway.tests.external import ExternalBonito
from gateway.tests.fake_upstream import FakeUpstream

pytestmark = pytest.mark.slow

# The example from the gateway issue, applied exactly as written.
ISSUE_EXAMPLE = """
orgs:
  - slug: acme
    name: Acme Corp
    tier: pro                        # free | pro | enterprise
    providers:
      - name: fake
        kind: openai_compatible      # openai | azure_openai | bedrock | vertex | anthropic | openai_compatible | mock
        api_base: http://127.0.0.1:18081/v1
        api_key: env:FAKE_API_KEY    # a literal, or env:NAME read from the environment at apply time
    deployments:
      - {model: chat-small, provider: fake, upstream_model: gpt-4o-mini}
      - {model: embed-small, provider: fake, upstream_model: text-embedding-3-small}
      - {model: ha-chat, provider: fake, upstream_model: gpt-4o-mini}
    policy:
      allowed_models: [chat-small, embed-small, ha-chat]
      monthly_spend_cap_usd: 50
    routing_policies:
      - {name: ha, strategy: failover, models: [ha-chat]}
"""
CHAT = {"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def upstream_18081():
    try:
        return FakeUpstream().start(18081)
    except OSError:
        pytest.fail(
            "port 18081 is taken; the issue's example config points the fake upstream there"
        )


@pytest.fixture
def bonito(tmp_path, upstream_18081):
    ext = ExternalBonito(tmp_path, redis_url=settings.REDIS_URL)
    ext.migrate()
    (tmp_path / "bonito.yaml").write_text(ISSUE_EXAMPLE)
    ext.manage(
        "apply_config", str(tmp_path / "bonito.yaml"), input_env={"FAKE_API_KEY": "sk-from-env-123"}
    )
    yield ext
    ext.close()


def _chat(url, key):
    return httpx.post(
        url + "/v1/chat/completions",
        json=CHAT,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


@pytest.mark.alone  # refused everywhere within 2 s
def test_a_revoked_key_is_refused_by_every_worker_within_2_seconds(bonito):
    key = bonito.manage("create_api_key", "--org", "acme", "--name", "app").strip().splitlines()[-1]
    workers = [bonito.serve(free_port()), bonito.serve(free_port())]
    assert [_chat(url, key).status_code for url in workers] == [200, 200]
    bonito.manage(
        "shell",
        "-c",
        "from gateway.models import ApiKey; from gateway.services import api_key_revoke;"
        "from orgs.audit import Actor; api_key_revoke(actor=Actor(via='test'), key=ApiKey.objects.get())",
    )
    revoked_at = time.monotonic()
    pending = set(workers)
    while pending and time.monotonic() - revoked_at < 2.0:
        pending = {url for url in pending if _chat(url, key).status_code != 401}
        time.sleep(0.05)
    assert not pending, f"still accepted by {pending} after 2 s"


def test_requests_succeed_while_the_database_is_down_and_usage_arrives_later(
    bonito, upstream_18081
):
    key = bonito.manage("create_api_key", "--org", "acme", "--name", "app").strip().splitlines()[-1]
    url = bonito.serve(free_port())
    for _ in range(3):  # warm-up: snapshot built, usage writer working
        assert _chat(url, key).status_code == 200
    deadline = time.time() + 10
    while bonito.count_usage() < 3 and time.time() < deadline:
        time.sleep(0.1)
    assert bonito.count_usage() == 3
    assert upstream_18081.requests[-1]["headers"]["Authorization"] == "Bearer sk-from-env-123"

    time.sleep(
        0.5
    )  # traffic paused: the writer let go of its connection (a SQLite file stays open otherwise)
    bonito.db_down()
    statuses = [_chat(url, key).status_code for _ in range(20)]
    assert statuses == [200] * 20
    time.sleep(1.0)
    spool = bonito.tmp / "spool"
    assert any(spool.glob("*.jsonl")), "usage was not spooled while the database was down"

    bonito.db_up()
    deadline = time.time() + 15
    while bonito.count_usage() < 23 and time.time() < deadline:
        time.sleep(0.2)
    assert bonito.count_usage() == 23  # every request, exactly once
    assert not any(spool.glob("*.jsonl"))
