"""An agent that cannot start for a reason the operator can fix — its state folder or a
file in it that it cannot read or write, a credentials file it cannot read, its port in
use — says so in one line naming the setting and the path (or the address), and exits with
code 2, as for a wrong setting: no traceback (`python -m agents.runtime`, real processes).

Files are made unreadable with their mode. Root reads and writes whatever the mode says,
so as root the agent runs without the capabilities that let it (as a non-root user does)."""

import ctypes
import os
import shutil
import socket
import subprocess
import sys

import pytest

from agents.tests.agent_start import run_agent, start_env
from gateway.tests.external import ROOT

pytestmark = pytest.mark.slow

NOBODY = 65534
# Linux capabilities that let root ignore a file's mode and owner.
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER = 1, 2, 3
PR_CAPBSET_DROP = 24


def _as_a_plain_user():
    """preexec_fn: root's say over others' files goes (for this process and what it runs)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _not_ours(path):
    """Someone else's (when we are root): the agent may not change its mode either."""
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)


def _start(tmp_path, **env):
    env = {"BONITO_AGENT_PORT": str(_free_port()), **env}
    try:
        # one that started serves until the timeout: a failure below
        return run_agent(tmp_path, timeout=30, preexec_fn=_as_a_plain_user, **env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"it started: {exc.stderr}")


def _one_line(result, start: str, *words):
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(start), result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)


@pytest.fixture
def state(tmp_path):
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    yield folder
    for path in [folder, *folder.rglob("*")]:  # pytest removes it afterwards
        if not path.is_symlink():
            os.chmod(path, 0o700)


def test_a_read_only_state_folder(tmp_path, state):
    state.chmod(0o555)
    _not_ours(state)
    _one_line(
        _start(tmp_path), f"bonito-agent: BONITO_STATE_DIR {state} is not writable", "Permission"
    )


def _a_folder(path):
    path.mkdir()


def _unreadable(path):
    path.write_text("")
    path.chmod(0)
    _not_ours(path)


# (An agent-id it cannot read is replaced with a new one: that is not a failure.)
@pytest.mark.parametrize(
    ("name", "make"), [("agent-id", _a_folder), (".agent-id.lock", _unreadable)]
)
def test_a_file_of_the_state_folder_it_cannot_read_or_write(tmp_path, state, name, make):
    """The agent's id (and the lock its workers take to make it once): made by each worker
    as it loaded the app, a traceback from uvicorn's app factory."""
    make(state / name)
    _one_line(
        _start(tmp_path),
        f"bonito-agent: BONITO_STATE_DIR {state}: {state / name} cannot be read or written",
    )


@pytest.mark.parametrize("sub", ["journal", "spool", "dead"])
def test_a_state_sub_folder_that_is_a_file(tmp_path, state, sub):
    """It started, and failed at the first request's journal or the first spooled batch."""
    (state / sub).write_text("")
    _one_line(
        _start(tmp_path), f"bonito-agent: BONITO_STATE_DIR {state}: its {sub} is not a folder"
    )


@pytest.mark.parametrize(
    ("content", "mode", "why"),
    [
        ('{"openai": {"api_key": "sk-x"}}', 0, "Permission denied"),
        ("{not json", 0o600, "is not a JSON document"),
        ('["a list"]', 0o600, "must be a JSON object of providers"),
    ],
)
def test_a_credentials_file_it_cannot_read(tmp_path, content, mode, why):
    """It started, served without the credentials (every provider call refused) and said
    so only in a log line among the others."""
    creds = tmp_path / "credentials.json"
    creds.write_text(content)
    creds.chmod(mode)
    if not mode:
        _not_ours(creds)
    result = _start(tmp_path, BONITO_CREDENTIALS_FILE=str(creds))
    _one_line(result, f"bonito-agent: BONITO_CREDENTIALS_FILE {creds}", why)
    assert "sk-x" not in result.stderr


def test_a_port_in_use_names_the_address(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        _one_line(
            _start(tmp_path, BONITO_AGENT_PORT=str(port)),
            f"bonito-agent: BONITO_AGENT_PORT {port} is in use on 127.0.0.1",
            f"127.0.0.1:{port}",
        )


def test_the_agent_still_starts_when_all_is_well(tmp_path, state):
    """The checks above stop nothing that works: it starts (and is stopped here)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents.runtime"],
        cwd=ROOT,
        env=start_env(tmp_path, BONITO_STATE_DIR=str(state), BONITO_AGENT_PORT=str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_a_plain_user,  # noqa: PLW1509 - a prctl only, no threads
    )
    try:
        import httpx

        from agents.tests.agent_harness import wait_for

        def health():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return proc.poll() is not None

        assert wait_for(health, 30) and proc.poll() is None
        assert (state / "agent-id").is_file()
    finally:
        proc.terminate()
        err = proc.communicate(timeout=30)[1]
    assert "Traceback" not in err, err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_helpers_make_files_unreadable_here(tmp_path):
    """The premise of the tests above, on this machine: a mode-000 file of someone else's
    cannot be read by the agent's process."""
    secret = tmp_path / "secret"
    secret.write_text("x")
    secret.chmod(0)
    _not_ours(secret)
    cat = shutil.which("cat")
    result = subprocess.run(
        [cat, str(secret)],
        capture_output=True,
        text=True,
        preexec_fn=_as_a_plain_user,  # noqa: PLW1509 - a prctl only, no threads
    )
    assert result.returncode != 0 and "Permission denied" in result.stderr
