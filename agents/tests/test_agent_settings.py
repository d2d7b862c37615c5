"""The agent's settings and the token it keeps: wrong settings stop it with a clear message;
a rotated token survives a restart, but never outranks a new token the operator sets."""

import json
import multiprocessing
import os
import socket
import time

import pytest

from agents.runtime import settings as agent_settings
from agents.runtime.settings import SettingsError
from agents.runtime.state import Token, agent_id
from agents.tests.agent_start import run_agent
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
    assert s.spend_lease_s == 60.0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BONITO_CONTROL_PLANE": ""}, "BONITO_CONTROL_PLANE is required"),
        ({"BONITO_CONTROL_PLANE": "ftp://x"}, "must be an http(s) URL"),
        ({"BONITO_ORG_TOKEN": ""}, "BONITO_ORG_TOKEN (or BONITO_ORG_TOKEN_FILE) is required"),
        ({"BONITO_ORG_TOKEN": "bn-" + "a" * 38}, "must be a bt- token"),
        ({"BONITO_ORG_TOKEN": "bt-garbage"}, "BONITO_ORG_TOKEN: the org token is malformed"),
        ({"BONITO_LOG_LEVEL": "LOUD"}, "BONITO_LOG_LEVEL must be one of DEBUG, INFO, WARNING"),
        ({"BONITO_AGENT_PORT": "http"}, "BONITO_AGENT_PORT must be a whole number"),
        ({"BONITO_AGENT_WORKERS": "0"}, "BONITO_AGENT_WORKERS must be at least 1"),
        ({"BONITO_SYNC_INTERVAL_S": "nan"}, "BONITO_SYNC_INTERVAL_S must be at least"),
        ({"BONITO_SPOOL_MAX_BYTES": "10"}, "BONITO_SPOOL_MAX_BYTES must be at least"),
        # a lease shorter than a few heartbeats lets a live agent's reservations be swept
        ({"BONITO_SPEND_LEASE_S": "1"}, "BONITO_SPEND_LEASE_S must be at least"),
        ({"BONITO_CA_BUNDLE": "/nonexistent.pem"}, "BONITO_CA_BUNDLE"),
        ({"BONITO_ORG_TOKEN_FILE": "/nonexistent-token"}, "BONITO_ORG_TOKEN_FILE"),
        ({"BONITO_PROVIDER_ALLOWED_NETWORKS": "10.0.0.0/33"}, "not a network"),
        # urlsplit's ValueError was a traceback (exit 1); a port past 65535 started an agent
        # that could never reach its control plane, or listen where it was told.
        ({"BONITO_CONTROL_PLANE": "http://[::1"}, "BONITO_CONTROL_PLANE must be an http(s) URL"),
        ({"BONITO_CONTROL_PLANE": "https://cp:99999"}, "BONITO_CONTROL_PLANE must be an http(s)"),
        ({"BONITO_AGENT_PORT": "70000"}, "BONITO_AGENT_PORT must be at most 65535"),
        # an infinite interval pulled the config once and never again (a revoked key served
        # for ever); an infinite timeout let one stalled call hold the sync thread
        ({"BONITO_SYNC_INTERVAL_S": "inf"}, "BONITO_SYNC_INTERVAL_S must be a finite number"),
        ({"BONITO_HEARTBEAT_INTERVAL_S": "1e309"}, "BONITO_HEARTBEAT_INTERVAL_S must be a finite"),
        ({"BONITO_CONTROL_PLANE_TIMEOUT_S": "inf"}, "BONITO_CONTROL_PLANE_TIMEOUT_S must be a"),
        # read by the HTTP protocol, which fell back to its default without a word
        ({"BONITO_HEADERS_TIMEOUT_S": "30s"}, "BONITO_HEADERS_TIMEOUT_S must be a number"),
        ({"BONITO_HEADERS_TIMEOUT_S": "0"}, "BONITO_HEADERS_TIMEOUT_S must be at least"),
        ({"BONITO_MAX_HEADER_BYTES": "64k"}, "BONITO_MAX_HEADER_BYTES must be a whole number"),
        ({"BONITO_MAX_HEADER_BYTES": "-1"}, "BONITO_MAX_HEADER_BYTES must be at least"),
        # a traceback (exit 1) from the limiter, after the settings were all taken
        ({"BONITO_REDIS_URL": "notaurl"}, "BONITO_REDIS_URL: a Redis URL starts with redis://"),
        ({"BONITO_REDIS_URL": "http://cache:6379"}, "BONITO_REDIS_URL: unknown Redis URL"),
        # read by httpx for each call: every config pull failed with a traceback
        ({"SSL_CERT_FILE": "/nonexistent.pem"}, "SSL_CERT_FILE /nonexistent.pem is not a"),
    ],
)
def test_a_wrong_setting_is_named_and_its_secret_never_echoed(env, message):
    with pytest.raises(SettingsError) as info:
        agent_settings.load(_env(**env))
    assert message in str(info.value)
    assert "bt-garbage" not in str(info.value)


def test_a_wrong_redis_url_never_echoes_its_password():
    with pytest.raises(SettingsError) as info:
        agent_settings.load(_env(BONITO_REDIS_URL="redis://:s3cret-pw@cache:99999/0"))
    assert str(info.value).startswith("BONITO_REDIS_URL: a redis:// URL is")
    assert "s3cret" not in str(info.value)


def _mistyped(token: str) -> str:
    """The token with one character of its body changed, as a copy by hand would."""
    i = 10
    return token[:i] + ("a" if token[i] != "a" else "b") + token[i + 1 :]


def test_a_mistyped_or_cut_token_is_called_malformed_not_something_else(tmp_path):
    token = keys.generate("bt-")
    for wrong, why in [
        (_mistyped(token), "wrong checksum: mistyped or cut short"),
        (token[:-1], "40 characters where a bt- token has 41"),
        (token[:-1] + "'", "only letters and digits"),
    ]:
        with pytest.raises(SettingsError) as info:
            agent_settings.load(_env(BONITO_ORG_TOKEN=wrong))
        message = str(info.value)
        assert message.startswith("BONITO_ORG_TOKEN: the org token is malformed"), message
        assert why in message and "must be a bt- token" not in message
        assert wrong not in message and wrong[3:20] not in message  # never echoed
    # From a file: the file is named.
    (tmp_path / "token").write_text(_mistyped(token) + "\n")
    with pytest.raises(SettingsError, match="wrong checksum") as info:
        agent_settings.load(_env(BONITO_ORG_TOKEN_FILE=str(tmp_path / "token")))
    assert str(info.value).startswith(f"BONITO_ORG_TOKEN_FILE {tmp_path / 'token'}: ")
    # An API key where the org token goes is still "not a bt- token".
    with pytest.raises(SettingsError, match="must be a bt- token, not an API key"):
        agent_settings.load(_env(BONITO_ORG_TOKEN=keys.generate("bn-")))


@pytest.mark.parametrize(
    ("url", "use"),
    [
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000"),
        ("https://bonito.example.com/v1/", "https://bonito.example.com"),
        ("https://bonito.example.com/api", "https://bonito.example.com"),
        ("https://corp.example.com/bonito/api/agent", "https://corp.example.com/bonito"),
    ],
)
def test_the_sdk_or_api_url_is_refused_with_the_url_to_use(url, use):
    with pytest.raises(SettingsError) as info:
        agent_settings.load(_env(BONITO_CONTROL_PLANE=url))
    message = str(info.value)
    assert message.startswith(f"BONITO_CONTROL_PLANE {url.rstrip('/')} ends in /"), message
    assert message.endswith(f"use {use}"), message


def test_a_control_plane_under_a_path_is_accepted():
    s = agent_settings.load(_env(BONITO_CONTROL_PLANE="https://corp.example.com/bonito/"))
    assert s.control_plane == "https://corp.example.com/bonito"


@pytest.mark.parametrize(("raw", "level"), [("", "INFO"), ("debug", "DEBUG"), ("warn", "WARNING")])
def test_the_log_level_is_a_setting(raw, level):
    assert agent_settings.load(_env(BONITO_LOG_LEVEL=raw)).log_level == level


@pytest.mark.slow
def test_a_state_folder_it_cannot_make_or_write_stops_it_at_start_naming_it(tmp_path):
    (tmp_path / "a-file").write_text("")
    for path, why in [
        ("/proc/nope", "cannot be created: No such file or directory"),  # even for root
        ("/proc", "is not writable"),
        (str(tmp_path / "a-file" / "state"), "cannot be created: Not a directory"),
        (str(tmp_path / "a-file"), "is not a folder"),
    ]:
        result = run_agent(tmp_path, BONITO_STATE_DIR=path)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"bonito-agent: BONITO_STATE_DIR {path} "), result.stderr
        assert why in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.mark.slow
def test_an_address_it_cannot_listen_on_stops_it_at_start_naming_it(tmp_path):
    """uvicorn said `ERROR: [Errno 98] … address already in use` (exit 3), naming no setting."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for env, start in [
            ({"BONITO_AGENT_PORT": port}, f"bonito-agent: BONITO_AGENT_PORT {port}"),
            ({"BONITO_AGENT_HOST": "999.1.1.1"}, "bonito-agent: BONITO_AGENT_HOST 999.1.1.1"),
        ]:
            result = run_agent(tmp_path, **env)
            assert result.returncode == 2, result.stderr
            assert result.stderr.startswith(start), result.stderr
            assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_ca_bundle_that_is_no_certificate_stops_it_at_start_naming_it(tmp_path):
    """A file that holds no CA certificate (a key, a DER file, the wrong mount): it started,
    was never ready (/ready's reason null) and logged a traceback at every config pull."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN PRIVATE KEY-----\nnot a certificate\n-----END PRIVATE KEY-----\n")
    result = run_agent(tmp_path, BONITO_CA_BUNDLE=str(bundle))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        f"bonito-agent: BONITO_CA_BUNDLE {bundle} holds no PEM CA certificate"
    ), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_wrong_log_level_stops_it_at_start_naming_it(tmp_path):
    result = run_agent(tmp_path, BONITO_LOG_LEVEL="LOUD")
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "bonito-agent: BONITO_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL,"
        " not 'LOUD'\n"
    )


def test_a_control_plane_url_that_cannot_be_parsed_stops_it_at_start_naming_it(tmp_path):
    result = run_agent(tmp_path, BONITO_CONTROL_PLANE="http://[::1")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("bonito-agent: BONITO_CONTROL_PLANE must be an http(s) URL")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_the_sdk_url_as_control_plane_stops_it_at_start_with_the_url_to_use(tmp_path):
    result = run_agent(tmp_path, BONITO_CONTROL_PLANE="http://127.0.0.1:8000/v1")
    assert result.returncode == 2, result.stderr
    assert "BONITO_CONTROL_PLANE http://127.0.0.1:8000/v1 ends in /v1" in result.stderr
    assert result.stderr.rstrip().endswith("use http://127.0.0.1:8000")
    assert "Traceback" not in result.stderr


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


@pytest.mark.parametrize(
    "content", [b'{"token": ', b"[]", b'{"token": "nope"}', b'{"token": "TOKEN", "replaces": 7}']
)
def test_a_damaged_rotated_token_is_logged_not_silently_dropped(tmp_path, caplog, content):
    """A token.json that cannot be used left the agent on its configured token without a
    word: past the rotation's grace that one is refused, and nothing said why."""
    (tmp_path / "token.json").write_bytes(content.replace(b"TOKEN", keys.generate("bt-").encode()))
    configured = keys.generate("bt-")
    with caplog.at_level("WARNING", logger="bonito.agent"):
        assert Token(configured, tmp_path).current == configured
    assert f"{tmp_path / 'token.json'} cannot be used" in caplog.text
    assert configured not in caplog.text


def test_no_rotated_token_is_no_warning(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="bonito.agent"):
        Token(keys.generate("bt-"), tmp_path)
    assert caplog.text == ""


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
