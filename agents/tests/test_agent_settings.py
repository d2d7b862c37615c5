"""The agent's settings and the token it keeps: wrong settings stop it with a clear message;
a rotated token survives a restart, but never outranks a new token the operator sets."""

import json
import multiprocessing
import os
import time

import pytest

from agents.runtime import settings as agent_settings
from agents.runtime.settings import SettingsError
from agents.runtime.state import Token, agent_id
from core import keys


def _env(**extra):
    return {
        "BONITO_CONTROL_PLANE": "https://bonito.example.com",
        "BONITO_ORG_TOKEN": keys.generate("bt-"),
        **extra,
    }


def test_the_defaults_are_the_documented_ones():
    s = agent_settings.load(_env())
    assert (s.port, s.host, s.workers) == (8000, "0.0.0.0", 1)  # noqa: S104
    assert str(s.state_dir) == "/var/lib/bonito-agent"
    assert s.spool_max_bytes == 1024**3
    assert s.sync_interval_s is None and s.heartbeat_interval_s is None  # the server's suggestion


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BONITO_CONTROL_PLANE": ""}, "BONITO_CONTROL_PLANE is required"),
        ({"BONITO_CONTROL_PLANE": "ftp://x"}, "must be an http(s) URL"),
        ({"BONITO_ORG_TOKEN": ""}, "BONITO_ORG_TOKEN (or BONITO_ORG_TOKEN_FILE) is required"),
        ({"BONITO_ORG_TOKEN": "bn-" + "a" * 38}, "must be a bt- token"),
        ({"BONITO_ORG_TOKEN": "bt-garbage"}, "must be a bt- token"),
        ({"BONITO_AGENT_PORT": "http"}, "BONITO_AGENT_PORT must be a whole number"),
        ({"BONITO_AGENT_WORKERS": "0"}, "BONITO_AGENT_WORKERS must be at least 1"),
        ({"BONITO_SYNC_INTERVAL_S": "nan"}, "BONITO_SYNC_INTERVAL_S must be at least"),
        ({"BONITO_SPOOL_MAX_BYTES": "10"}, "BONITO_SPOOL_MAX_BYTES must be at least"),
        ({"BONITO_CA_BUNDLE": "/nonexistent.pem"}, "BONITO_CA_BUNDLE"),
        ({"BONITO_ORG_TOKEN_FILE": "/nonexistent-token"}, "BONITO_ORG_TOKEN_FILE"),
        ({"BONITO_PROVIDER_ALLOWED_NETWORKS": "10.0.0.0/33"}, "not a network"),
    ],
)
def test_a_wrong_setting_is_named_and_its_secret_never_echoed(env, message):
    with pytest.raises(SettingsError) as info:
        agent_settings.load(_env(**env))
    assert message in str(info.value)
    assert "bt-garbage" not in str(info.value)


def test_the_token_file_wins_over_the_variable(tmp_path):
    token = keys.generate("bt-")
    (tmp_path / "token").write_text(token + "\n")
    s = agent_settings.load(_env(BONITO_ORG_TOKEN_FILE=str(tmp_path / "token")))
    assert s.token == token


def test_a_rotated_token_is_kept_0600_and_preferred_over_the_one_it_replaced(tmp_path):
    old, new, newer, operators = (keys.generate("bt-") for _ in range(4))
    token = Token(old, tmp_path)
    token.rotate(new)
    assert token.current == new
    assert oct((tmp_path / "token.json").stat().st_mode & 0o777) == "0o600"
    assert old not in (tmp_path / "token.json").read_text()  # only a fingerprint of it
    assert Token(old, tmp_path).current == new  # after a restart with the same setting
    Token(old, tmp_path).rotate(newer)
    assert Token(old, tmp_path).current == newer  # two rotations on
    assert Token(operators, tmp_path).current == operators  # an operator's new token wins


def test_a_new_token_in_the_file_is_picked_up_after_a_401(tmp_path):
    first, second = keys.generate("bt-"), keys.generate("bt-")
    path = tmp_path / "token"
    path.write_text(first)
    token = Token(first, tmp_path, path)
    assert token.reread() is False
    path.write_text(second)
    assert token.reread() is True and token.current == second


def test_garbage_in_the_state_is_ignored(tmp_path):
    configured = keys.generate("bt-")
    (tmp_path / "token.json").write_text(json.dumps({"token": "nope", "replaces": []}))
    assert Token(configured, tmp_path).current == configured
    (tmp_path / "agent-id").write_text("not a uuid")
    first = agent_id(tmp_path)
    assert first != "not a uuid" and agent_id(tmp_path) == first


def _start_together(state_dir, barrier_dir, n):
    # Runs in a child process: wait until all n are ready, then ask for the id at once.
    (barrier_dir / str(os.getpid())).touch()
    while len(list(barrier_dir.iterdir())) < n:
        time.sleep(0.001)
    return agent_id(state_dir)


def test_workers_starting_together_agree_on_one_id(tmp_path):
    # The agent's workers are processes started at the same moment: each asks for the id.
    ctx = multiprocessing.get_context("spawn")
    for round_ in range(5):
        state, barrier = tmp_path / f"state{round_}", tmp_path / f"barrier{round_}"
        state.mkdir(), barrier.mkdir()
        with ctx.Pool(4) as pool:
            ids = pool.starmap(_start_together, [(state, barrier, 4)] * 4, chunksize=1)
        assert len(set(ids)) == 1, ids
        assert (state / "agent-id").read_text() == ids[0]
