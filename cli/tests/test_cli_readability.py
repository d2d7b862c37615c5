"""What a new user reads: `agent status` fits an 80-column terminal, every option says what
it takes, a date the server would refuse is a usage error naming the formats, and an
http/https mix-up is named as such. Against the live server of test_cli.py."""

import json
import re
import socket
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cli.tests import test_cli as base
from cli.tests.test_cli import bonito, run_script

server, home, logged_in = base.server, base.home, base.logged_in
pytestmark = pytest.mark.slow

HOSTNAME = "ip-10-0-3-17.ec2.internal"  # EC2's private DNS name
RATE = 0.2277016294133428


def _an_agent_reported(server):
    server["bonito"].manage(
        "shell",
        "-c",
        "import uuid; from django.utils import timezone; "
        "from orgs.models import Organization; from orgs import services; "
        "from orgs.audit import Actor; from agents.models import Agent; "
        "o = Organization.objects.get(slug='demo'); "
        "services.org_update(actor=Actor(via='test'), org=o, deployment_mode='vpc'); "
        "now = timezone.now(); "
        "Agent.objects.update_or_create(org=o, agent_id=uuid.UUID(int=7), defaults=dict("
        f"hostname='{HOSTNAME}', version='0.1.0', started_at=now, uptime_s=93784.5, "
        "last_heartbeat_at=now, last_seen_at=now, config_version=1, requests=820, errors=3, "
        f"error_rate=0.0036585365853658536, request_rate={RATE}, "
        "providers=[{'name': 'openai', 'ok': True}], spool={'pending': 2}, warnings=[]))",
    )


# ------------------------------------------------------------------------------ agent status
def test_agent_status_fits_80_columns_and_json_has_everything(server, logged_in):
    _an_agent_reported(server)
    out = bonito(logged_in, "agent", "status", env={"COLUMNS": "80"}, check=0).stdout
    assert max(map(len, out.splitlines())) <= 80, out
    assert HOSTNAME in out and "0.23" in out and str(RATE) not in out, out
    assert "0.37%" in out and re.search(r"\b[0-9]+s ago\b", out), out  # as people read them
    data = json.loads(bonito(logged_in, "agent", "status", "--json", check=0).stdout)
    [agent] = [a for a in data["agents"] if a["hostname"] == HOSTNAME]
    assert agent["request_rate"] == RATE and agent["spool"] == {"pending": 2}


# ------------------------------------------------------------------------------ options
WALK = """
import click
from bonito_cli.main import cli

def walk(command, path):
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden and not param.help:
            print(" ".join(path), param.opts[0])
    for name, sub in getattr(command, "commands", {}).items():
        walk(sub, path + [name])

walk(cli, ["bonito"])
"""


def test_every_option_says_what_it_takes(tmp_path):
    missing = run_script(WALK, tmp_path)
    assert missing == ""


DEAD = {"BONITO_URL": "http://127.0.0.1:9", "BONITO_TOKEN": "pat-x"}


@pytest.mark.parametrize("command", ["usage", "analytics", "logs"])
@pytest.mark.parametrize(
    "option, value",
    [("--since", "yesterday"), ("--until", "2026-02-30"), ("--since", "11/01/2026")],
)
def test_a_date_the_server_would_refuse_is_a_usage_error(home, command, option, value):
    result = bonito(home, command, option, value, env=DEAD, check=2)  # before any request
    assert value in result.stderr and "2026-11-01T08:00Z" in result.stderr, result.stderr
    assert option in bonito(home, command, "--help", check=0).stdout


def test_dates_the_server_takes_are_sent(server, logged_in):
    for since, until in [
        ("2026-01-01", "2026-01-02"),
        ("2026-01-01T08:00Z", "2026-01-01 09:30:15"),
        ("2026-01-01T08:00:00+05:30", "2026-01-01T09:00:00.5-01:00"),
    ]:
        out = bonito(logged_in, "usage", "--since", since, "--until", until, "--json", check=0)
        assert json.loads(out.stdout)["requests"] == 0
    reversed_ = bonito(
        logged_in, "usage", "--since", "2026-01-02", "--until", "2026-01-01", check=2
    )
    assert "before" in reversed_.stderr


# ------------------------------------------------------------------------------ http/https
def test_https_to_a_plain_http_server_says_to_try_http(server, home):
    plain = server["url"]
    tls = plain.replace("http://", "https://")
    env = {"BONITO_URL": tls, "BONITO_TOKEN": "pat-x"}
    said = bonito(home, "keys", "list", env=env, check=1).stderr
    assert f"{plain}" in said and "plain HTTP" in said, said
    report = bonito(home, "doctor", env=env, check=1).stdout
    assert "plain HTTP" in report and "not trusted" not in report, report
    chat = bonito(home, "chat", "hi", "-m", "m", "--api-key", "bn-x", env=env, check=1).stderr
    assert "plain HTTP" in chat, chat


@pytest.fixture
def tls_server(tmp_path):
    """An HTTPS server (a self-signed certificate), as a TLS-terminating proxy would be."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        capture_output=True,
    )  # fmt: skip
    if made.returncode:
        pytest.skip("no openssl to make a certificate")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    httpd.handle_error = lambda *a: None  # the plain-HTTP client's failed handshake
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_http_to_an_https_server_says_to_try_https(home, tls_server):
    env = {"BONITO_URL": f"http://{tls_server}", "BONITO_TOKEN": "pat-x"}
    said = bonito(home, "keys", "list", env=env, check=1).stderr
    assert f"https://{tls_server}" in said, said
    report = bonito(home, "doctor", env=env, check=1).stdout
    assert f"https://{tls_server}" in report, report


def test_a_dead_port_still_asks_whether_the_server_runs(home):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"BONITO_URL": f"https://127.0.0.1:{port}", "BONITO_TOKEN": "pat-x"}
    said = bonito(home, "keys", "list", env=env, check=1).stderr
    assert "Is the server running?" in said and "plain HTTP" not in said, said


# ------------------------------------------------------------------------------ a new user
def test_an_empty_list_says_so_rather_than_print_bare_headers(server, logged_in):
    said = bonito(logged_in, "audit", "list", "--action", "no.such.action", check=0).stdout
    assert said.strip() == "No audit entries match."
    logs = bonito(logged_in, "logs", "--model", "no-such-model", check=0).stdout
    assert logs.startswith("No requests match")
    assert json.loads(bonito(logged_in, "logs", "--model", "x", "--json", check=0).stdout) == []


def test_login_without_a_url_names_the_default_it_tried(home):
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 8000)) == 0:
            pytest.skip("something listens on the default URL's port here")
    said = bonito(home, "auth", "login", "--token", "pat-x", check=1).stderr
    assert "No --url was given" in said and "--url" in said


def test_config_apply_switches_the_mode_with_the_dashboards_rules(server, logged_in):
    """deployment_mode in a file sent with `bonito config apply`: back to the shared
    gateway revokes the org token (the diff shows its masked id as it is, not \\u2026),
    and agent status then has no agent table to show."""
    _an_agent_reported(server)  # VPC mode
    token = bonito(logged_in, "agent", "token", "rotate", "-q", check=0).stdout.strip()
    diff = bonito(
        logged_in, "config", "apply", "-", input="deployment_mode: shared\n", check=0
    ).stdout
    assert "agent_token.revoke" in diff and "org.update" in diff, diff
    assert f"{token[:7]}…" in diff and "\\u2026" not in diff, diff
    out = bonito(logged_in, "agent", "status", check=0).stdout
    assert "Shared gateway: no agents" in out and "status" not in out, out
    exported = bonito(logged_in, "config", "export", check=0).stdout
    assert "deployment_mode: shared" in exported and "vpc_only: false" in exported
