"""The bonito command, run as a subprocess against a live Bonito server (its own SQLite
database, the demo org, the mock provider) started once for this module."""

import csv
import io
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from gateway.tests.external import ExternalBonito

CLI = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli-server")
    bonito = ExternalBonito(tmp)
    bonito.migrate()
    demo = json.loads(bonito.manage("demo", "--json", "--force"))  # a throwaway database
    pat = bonito.manage(
        "shell",
        "-c",
        "from orgs.models import User, Organization; from orgs import services; "
        "from orgs.audit import Actor; "
        "u = User.objects.get(email='admin@demo.bonito.local'); "
        "o = Organization.objects.get(slug='demo'); "
        "print(services.pat_create(actor=Actor(via='test'), user=u, org=o, name='cli')[1])",
    ).split()[-1]
    url = bonito.serve(_free_port())
    yield {"url": url, "pat": pat, "api_key": demo["api_key"], "bonito": bonito}
    bonito.close()


@pytest.fixture
def home(tmp_path):
    return tmp_path


def cli_env(home, **extra) -> dict:
    """Only cli/ on the path, HOME and the config folder in a tmp dir."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "BONITO_CONFIG_DIR": str(home / "cfg"),
        "PYTHONPATH": str(CLI),
        "COLUMNS": "200",
        **extra,
    }


def run_script(script: str, cwd) -> str:
    """What a Python script prints, run with only cli/ on its path (one that walks the
    CLI's command tree, say)."""
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env={"PYTHONPATH": str(CLI), "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def ctrl_c_reaches_python():
    """preexec_fn for a CLI that a test interrupts: Ctrl-C's default action back. A process
    started in the background of a shell without job control (CI's, say) inherits SIGINT
    ignored, and Python then never raises KeyboardInterrupt in it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def bonito(home, *args, input=None, env=None, check=None):
    """The CLI in a process of its own, with only cli/ on its path and HOME in a tmp dir."""
    full_env = cli_env(home, **(env or {}))
    result = subprocess.run(
        [sys.executable, "-m", "bonito_cli", *args],
        cwd=home,
        env=full_env,
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    if check is not None:
        assert result.returncode == check, (result.stdout, result.stderr)
    return result


def eventually(home, *args, code: int, env=None):
    """The CLI run until it exits with ``code``: a new or revoked key reaches the gateways
    with the next config version, within seconds."""
    deadline = time.time() + 15
    while True:
        result = bonito(home, *args, env=env)
        if result.returncode == code or time.time() > deadline:
            assert result.returncode == code, (result.stdout, result.stderr)
            return result
        time.sleep(0.3)


@pytest.fixture
def logged_in(server, home):
    bonito(home, "--url", server["url"], "auth", "login", "--token", server["pat"], check=0)
    return home


def schema_fields(server, component: str) -> set:
    schema = httpx.get(server["url"] + "/api/schema/", params={"format": "json"}).json()
    return set(schema["components"]["schemas"][component]["properties"])


# ------------------------------------------------------------------------------ package
def test_it_imports_nothing_from_the_server(tmp_path):
    code = (
        "import sys, bonito_cli.main, bonito_cli.chat, bonito_cli.doctor, bonito_cli.completion\n"
        "server = {'django', 'bonito', 'orgs', 'gateway', 'governance', 'billing', 'agents', 'core'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & server))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(CLI), "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "[]"


def test_the_wheel_installs_a_bonito_command(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(CLI),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = (tmp_path / "dist").glob("bonito_cli-*.whl")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(tmp_path / "site"),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    env = {"PYTHONPATH": str(tmp_path / "site"), "PATH": os.environ["PATH"]}
    out = subprocess.run(
        [str(tmp_path / "site" / "bin" / "bonito"), "--version"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "bonito, version 0.1.0"


def test_every_command_has_help_with_examples(home):
    groups = {
        "auth": ["login", "status", "logout"],
        "keys": ["list", "create", "update", "rotate", "disable", "enable", "revoke"],
        "config": ["apply", "export"],
        "completion": ["install", "bash"],
        "agent": ["status"],
    }
    top = bonito(home, "--help", check=0).stdout
    listed = top.split("Commands:")[1].splitlines()  # a long summary goes on, indented
    commands = [line.split()[0] for line in listed if line.strip() and line[2] != " "]
    assert {
        "auth",
        "keys",
        "providers",
        "deployments",
        "models",
        "policies",
        "routing",
        "budgets",
        "teams",
        "members",
        "tokens",
        "usage",
        "analytics",
        "logs",
        "config",
        "agent",
        "chat",
        "doctor",
        "completion",
    } <= set(commands)
    for command in commands:
        assert "Examples:" in bonito(home, command, "--help", check=0).stdout, command
    for group, subs in groups.items():
        for sub in subs:
            assert "Examples:" in bonito(home, group, sub, "--help", check=0).stdout, (group, sub)
    # each row named in words: "one of the routing" was all the routing group's help said
    said = bonito(home, "routing", "update", "--help", check=0).stdout
    assert "Change fields of one of the routing policies." in said


# ------------------------------------------------------------------------------ auth
def test_login_saves_the_token_for_its_owner_only(server, home):
    out = bonito(home, "--url", server["url"], "auth", "login", "--token", server["pat"], check=0)
    assert "admin@demo.bonito.local" in out.stdout and server["pat"] not in out.stdout
    saved = home / "cfg" / "config.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE(saved.parent.stat().st_mode) == 0o700
    assert json.loads(saved.read_text())["profiles"]["default"]["org"] == "demo"
    status = json.loads(bonito(home, "auth", "status", "--json", check=0).stdout)
    assert status["org"]["slug"] == "demo" and status["source"] == "profile"
    assert status.keys() >= schema_fields(server, "Me")
    bonito(home, "auth", "logout", check=0)
    assert "Not logged in" in bonito(home, "keys", "list", check=3).stderr


def test_the_environment_wins_over_profiles(server, home):
    env = {"BONITO_URL": server["url"], "BONITO_TOKEN": server["pat"]}
    assert bonito(home, "auth", "status", "-q", env=env, check=0).stdout.strip() == "demo"
    assert not (home / "cfg").exists()  # nothing written


def test_profiles_pick_servers_and_orgs(server, home, logged_in):
    bonito(
        home,
        "--profile",
        "other",
        "--url",
        "http://127.0.0.1:9",
        "auth",
        "login",
        "--token",
        server["pat"],
        check=1,
    )  # nothing answers there: not saved
    refused = bonito(home, "--profile", "other", "keys", "list", check=3).stderr
    assert "Not logged in (profile 'other')" in refused and "--profile other auth login" in refused
    assert bonito(home, "--org", "demo", "auth", "status", "-q", check=0).stdout.strip() == "demo"
    assert (
        "no profile is for org" in bonito(home, "--org", "globex", "keys", "list", check=3).stderr
    )


def test_a_bad_token_is_exit_3_with_the_servers_message(server, home):
    for token in ("pat-wrong", "pat-" + "A" * 38, "bn-not-a-pat"):
        result = bonito(
            home, "--url", server["url"], "keys", "list", env={"BONITO_TOKEN": token}, check=3
        )
        assert "Invalid" in result.stderr and token not in result.stderr


def test_a_dead_server_is_exit_1_with_a_clear_message(home):
    port = _free_port()
    result = bonito(
        home,
        "keys",
        "list",
        env={"BONITO_URL": f"http://127.0.0.1:{port}", "BONITO_TOKEN": "pat-x"},
        check=1,
    )
    assert f"Cannot reach http://127.0.0.1:{port}" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["frobnicate"],
        ["keys", "create"],
        ["keys", "list", "--limit", "many"],
        ["analytics", "--group-by", "colour"],
        ["budgets", "create", "-s", "novalue"],
        ["completion", "install", "--shell", "tcsh"],
    ],
)
def test_bad_usage_is_exit_2(server, logged_in, args):
    result = bonito(logged_in, *args, check=2)
    assert result.stderr.strip()


# ------------------------------------------------------------------------------ keys and chat
def test_create_list_use_rotate_and_revoke_a_key(server, logged_in):
    home = logged_in
    created = json.loads(
        bonito(
            home, "keys", "create", "--name", "ci", "--model", "demo-chat", "--json", check=0
        ).stdout
    )
    assert created.keys() == schema_fields(server, "ApiKey") | {"api_key"}
    key = created["api_key"]
    listed = json.loads(bonito(home, "keys", "list", "--json", check=0).stdout)
    assert all(row.keys() == schema_fields(server, "ApiKey") for row in listed)
    assert created["id"] in {row["id"] for row in listed} and key not in json.dumps(listed)
    assert str(created["id"]) in bonito(home, "keys", "list", "-q", check=0).stdout.split()
    table = bonito(home, "keys", "list", check=0).stdout
    assert "ci" in table and key not in table

    answer = eventually(
        home, "chat", "hello there", "--model", "demo-chat", env={"BONITO_API_KEY": key}, code=0
    ).stdout
    assert "You said: hello there" in answer

    new_key = bonito(home, "keys", "rotate", str(created["id"]), "-q", check=0).stdout.strip()
    assert new_key.startswith("bn-") and new_key != key
    refused = eventually(home, "chat", "hi", "-m", "demo-chat", env={"BONITO_API_KEY": key}, code=3)
    # the key's replaced secret (no grace) is no key at all now
    assert "incorrect api key" in refused.stderr.lower()
    new_id = json.loads(bonito(home, "keys", "list", "--json", check=0).stdout)
    new_id = next(
        r["id"] for r in new_id if r["key"].endswith(new_key[-4:]) and r["status"] == "active"
    )
    # disabled: refused with its own message; enabled: works again, the same secret
    bonito(home, "keys", "disable", str(new_id), "-q", check=0)
    got = json.loads(bonito(home, "keys", "get", str(new_id), "--json", check=0).stdout)
    assert (got["status"], got["is_active"]) == ("disabled", False)
    env = {"BONITO_API_KEY": new_key}
    refused = eventually(home, "chat", "hi", "-m", "demo-chat", env=env, code=3)
    assert "disabled" in refused.stderr.lower()
    enabled = json.loads(bonito(home, "keys", "enable", str(new_id), "--json", check=0).stdout)
    assert enabled["is_active"] is True and enabled["status"] == "active"
    answer = eventually(home, "chat", "back", "-m", "demo-chat", env=env, code=0).stdout
    assert "You said: back" in answer
    assert "No key 999999 in this org." in bonito(home, "keys", "disable", "999999", check=1).stderr
    bonito(home, "keys", "revoke", str(new_id), "-q", check=0)
    # a revoked key stays revoked
    assert "revoked" in bonito(home, "keys", "enable", str(new_id), check=1).stderr.lower()
    assert (
        json.loads(bonito(home, "keys", "get", str(new_id), "--json", check=0).stdout)["status"]
        == "revoked"
    )
    assert "No key 999999 in this org." in bonito(home, "keys", "revoke", "999999", check=1).stderr


def test_chat_streams_reads_stdin_and_prints_json(server, logged_in):
    env = {"BONITO_API_KEY": server["api_key"]}
    streamed = bonito(logged_in, "chat", "one", "-m", "demo-chat", env=env, check=0).stdout
    whole = bonito(
        logged_in, "chat", "one", "-m", "demo-chat", "--no-stream", env=env, check=0
    ).stdout
    assert streamed == whole and "You said: one" in streamed
    piped = bonito(
        logged_in, "chat", "--system", "be brief", input="from stdin", env=env, check=0
    ).stdout  # no --model: the first the key may call
    assert "from stdin" in piped
    data = json.loads(
        bonito(logged_in, "chat", "x", "--json", "-m", "demo-chat", env=env, check=0).stdout
    )
    assert data["object"] == "chat.completion" and data["usage"]["total_tokens"] > 0
    missing = bonito(logged_in, "chat", "x", "-m", "no-such-model", env=env, check=1)
    assert "no-such-model" in missing.stderr
    assert "needs an API key" in bonito(logged_in, "chat", "x", check=3).stderr


def test_chat_interactive_keeps_the_conversation(server, logged_in):
    """On a terminal with no prompt: a conversation, /reset, /exit."""
    import pty

    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bonito_cli", "chat", "-m", "demo-chat", "--no-stream"],
        cwd=logged_in,
        stdin=secondary,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(logged_in, BONITO_API_KEY=server["api_key"]),
    )
    os.close(secondary)
    for line in ("first question", "/reset", "second question", "/exit"):
        os.write(primary, (line + "\n").encode())
        time.sleep(0.5)
    out, err = proc.communicate(timeout=30)
    os.close(primary)
    assert proc.returncode == 0, err
    assert "Chatting with demo-chat" in err
    assert "You said: first question" in out and "You said: second question" in out


# ------------------------------------------------------------------------------ resources
def test_resources_list_as_the_rest_schema_says(server, logged_in):
    for command, component in [
        ("providers", "Provider"),
        ("deployments", "Deployment"),
        ("routing", "RoutingPolicy"),
        ("teams", "Team"),
        ("members", "Member"),
        ("tokens", "Token"),
        ("budgets", "Budget"),
    ]:
        rows = json.loads(bonito(logged_in, command, "list", "--json", check=0).stdout)
        fields = schema_fields(server, component) - {"credentials", "webhook_url"}
        assert all(row.keys() == fields for row in rows), command
    found = json.loads(
        bonito(logged_in, "models", "search", "gpt-4o-mini", "--json", check=0).stdout
    )
    assert found and all("gpt-4o-mini" in m["name"] for m in found)
    assert "input_cost_per_token" in found[0]


def test_create_update_delete_through_set_fields(server, logged_in):
    team = json.loads(
        bonito(logged_in, "teams", "create", "-s", "name=research", "--json", check=0).stdout
    )
    budget_id = bonito(
        logged_in,
        "budgets",
        "create",
        "-s",
        "amount_usd=10.10",
        "-s",
        "hard=true",
        "-s",
        "scope=team",
        "-s",
        f"team={team['id']}",
        "-q",
        check=0,
    ).stdout.strip()
    budget = json.loads(bonito(logged_in, "budgets", "get", budget_id, "--json", check=0).stdout)
    assert (budget["amount_usd"], budget["hard"], budget["team"]) == ("10.10", True, team["id"])
    bonito(logged_in, "budgets", "update", budget_id, "-s", "amount_usd=12", check=0)
    assert "12.00" in bonito(logged_in, "budgets", "list", check=0).stdout
    bad = bonito(logged_in, "budgets", "update", budget_id, "-s", "amount_usd=-5", check=1)
    assert "negative" in bad.stderr
    bonito(logged_in, "budgets", "delete", budget_id, check=0)
    bonito(logged_in, "teams", "delete", str(team["id"]), check=0)
    policy = json.loads(
        bonito(
            logged_in, "policies", "set", "-s", "monthly_spend_cap_usd=500.5", "--json", check=0
        ).stdout
    )
    assert policy["monthly_spend_cap_usd"] == "500.50"
    routing = json.loads(
        bonito(
            logged_in,
            "routing",
            "create",
            "-s",
            "name=cheap",
            "-s",
            'models=["demo-chat"]',
            "--json",
            check=0,
        ).stdout
    )
    rt = bonito(
        logged_in, "keys", "create", "--name", "r", "--routing-policy", "cheap", "-q", check=0
    ).stdout.strip()
    assert rt.startswith("rt-")
    bonito(logged_in, "routing", "delete", str(routing["id"]), check=1)  # a key uses it
    # A text field typed as digits is sent as typed: the API refuses a number for text,
    # and -s name=2026 was read as the number 2026 (an outside check).
    digits = json.loads(
        bonito(
            logged_in,
            "routing",
            "create",
            "-s",
            "name=2026",
            "-s",
            'models=["demo-chat"]',
            "--json",
            check=0,
        ).stdout
    )
    assert digits["name"] == "2026"
    bonito(logged_in, "routing", "delete", str(digits["id"]), check=0)


# ------------------------------------------------------------------------------ config
def test_config_export_then_apply_with_a_dry_run_diff(server, logged_in, home):
    exported = bonito(logged_in, "config", "export", check=0).stdout
    assert "demo-chat" in exported and "api_key" not in exported
    path = home / "gateway.yaml"
    path.write_text(exported)
    assert (
        bonito(logged_in, "config", "apply", str(path), "--dry-run", check=0).stdout.strip()
        == "No changes."
    )
    path.write_text(exported.replace("weight: 1", "weight: 5", 1))
    dry = bonito(logged_in, "config", "apply", str(path), "--dry-run", check=0).stdout
    assert "deployment.update" in dry and "weight: 1 -> 5" in dry
    again = json.loads(
        bonito(logged_in, "config", "apply", str(path), "--dry-run", "--json", check=0).stdout
    )
    assert again["applied"] is False and len(again["changes"]) == 1  # the dry run kept nothing
    bonito(logged_in, "config", "apply", str(path), "-q", check=0)
    assert (
        "No changes."
        in bonito(logged_in, "config", "apply", str(path), "--dry-run", check=0).stdout
    )
    bad = bonito(logged_in, "config", "apply", "-", input="tier: enterprise\n", check=1)
    assert "not allowed over the API: tier" in bad.stderr


# ------------------------------------------------------------------------------ usage, logs
def test_usage_and_analytics_as_json_and_csv(server, logged_in):
    bonito(
        logged_in,
        "chat",
        "count me",
        "-m",
        "demo-chat",
        env={"BONITO_API_KEY": server["api_key"]},
        check=0,
    )
    deadline = time.time() + 20
    while time.time() < deadline:  # usage rows are batched into the database
        usage = json.loads(bonito(logged_in, "usage", "--range", "1h", "--json", check=0).stdout)
        if usage["requests"] >= 1:
            break
        time.sleep(0.5)
    assert usage["requests"] >= 1 and usage["by_model"][0]["name"] == "demo-chat"
    csv_out = bonito(logged_in, "usage", "--range", "1h", "--csv", check=0).stdout.splitlines()
    assert csv_out[0].startswith("name,requests") and csv_out[1].startswith("demo-chat,")
    series = bonito(logged_in, "analytics", "--group-by", "provider", "--csv", check=0).stdout
    assert series.splitlines()[1].startswith("mock,")
    data = json.loads(bonito(logged_in, "analytics", "--json", check=0).stdout)
    assert {"totals", "latency", "series", "by_model", "by_team"} <= data.keys()
    logs = json.loads(bonito(logged_in, "logs", "--limit", "3", "--json", check=0).stdout)
    assert logs and all(row.keys() == schema_fields(server, "UsageRecord") for row in logs)
    bad = bonito(logged_in, "usage", "--range", "forever", check=2)  # before any request
    assert "--range" in bad.stderr and "7d" in bad.stderr


def test_chat_shows_the_smart_route_and_savings_add_up(server, logged_in):
    """`chat --show-route` names the model, tier and score of a smart-routed answer (the
    demo routes `auto`); `savings` prints what smart routing saved, by policy and by tier,
    and its figures are the analytics API's."""
    key = {"BONITO_API_KEY": server["api_key"]}
    for stream in ((), ("--no-stream",)):
        out = bonito(logged_in, "chat", "hi there", "-m", "auto", "--show-route", *stream, env=key)
        assert out.returncode == 0, out.stderr
        route = out.stderr.strip().splitlines()[-1]
        assert route.startswith("[model demo-chat") and " · tier demo-chat" in route
        assert re.search(r"score 0\.\d+ \((rules|learned)\)\]$", route), route
        assert "[model" not in out.stdout
    quiet = bonito(logged_in, "chat", "hi there", "-m", "auto", env=key, check=0)
    assert "[model" not in quiet.stderr  # only when asked
    deadline = time.time() + 20
    while time.time() < deadline:  # usage rows are batched into the database
        data = json.loads(bonito(logged_in, "savings", "--range", "1h", "--json", check=0).stdout)
        if data.get("requests", 0) >= 3:
            break
        time.sleep(0.5)
    api = httpx.get(
        server["url"] + "/api/gateway/analytics",
        params={"range": "1h"},
        headers={"Authorization": f"Bearer {server['pat']}"},
    ).json()["smart_routing"]
    assert data == api and data["requests"] >= 3
    text = bonito(logged_in, "savings", "--range", "1h", check=0).stdout
    assert "saved_usd" in text and "By policy" in text and "(org default)" in text
    rows = bonito(logged_in, "savings", "--range", "1h", "--group-by", "tier", "--csv", check=0)
    lines = rows.stdout.splitlines()
    assert (
        lines[0]
        == "tier,requests,cost_usd,top_tier_cost_usd,saved_usd,saved_pct,rated,avg_feedback"
    )
    assert {line.split(",")[0] for line in lines[1:]} == {r["tier"] for r in api["by_tier"]}
    assert sum(int(line.split(",")[1]) for line in lines[1:]) == api["requests"]
    # The API's float amounts (the mini tier's are under $0.0001: str() said 4.571e-05) as
    # fixed decimals with 8 places, exactly the API's; the share with 2 decimals.
    by_tier = {r["tier"]: r for r in api["by_tier"]}
    for row in csv.DictReader(io.StringIO(rows.stdout)):
        for column in ("cost_usd", "top_tier_cost_usd", "saved_usd"):
            assert re.fullmatch(r"-?[0-9]+\.[0-9]{8}", row[column]), row
            assert Decimal(row[column]) == round(Decimal(repr(by_tier[row["tier"]][column])), 8)
        assert re.fullmatch(r"-?[0-9]+\.[0-9]{2}", row["saved_pct"]), row
    quiet_saved = bonito(logged_in, "savings", "--range", "1h", "--quiet", check=0).stdout
    assert Decimal(quiet_saved) == round(Decimal(repr(api["saved_usd"])), 8)
    assert "e-" not in text and "e-" not in quiet_saved, text
    none = bonito(logged_in, "savings", "--since", "2020-01-01", "--until", "2020-01-02", check=0)
    assert none.stdout.strip() == "No smart-routed requests in this range."
    # --policy, as the REST filter takes it: the org default's rows, and a bad id refused
    mine = bonito(logged_in, "savings", "--range", "1h", "--policy", "(org default)", "--json")
    assert json.loads(mine.stdout) == data
    logs = bonito(logged_in, "logs", "--range", "1h", "--policy", "(org default)", "--json")
    rows = json.loads(logs.stdout)
    assert rows and all(r["routing_policy"] == "" and r["route_tier"] for r in rows)
    assert len(rows) == data["requests"]
    unknown = bonito(logged_in, "savings", "--policy", "987654", check=1)
    assert "987654" in unknown.stderr and "policy" in unknown.stderr


def test_routing_policies_show_their_smart_settings(server, logged_in):
    made = bonito(
        logged_in,
        "routing",
        "create",
        "-s",
        "name=cli-smart",
        "-s",
        "strategy=smart",
        "-s",
        'models=["demo-chat-mini","demo-chat"]',
        "-s",
        'smart={"classifier":"rules","aggressiveness":0.7,"keywords":{"math":["Équation"]}}',
        "--json",
        check=0,
    )
    policy = json.loads(made.stdout)
    shown = bonito(logged_in, "routing", "get", str(policy["id"]), check=0).stdout
    assert re.search(r"^smart\s+\{.*\"aggressiveness\":0\.7", shown, re.M), shown
    assert '"Équation"' in shown and "\\u00c9" not in shown  # as typed, not escaped
    listed = bonito(logged_in, "routing", "list", "--wide", check=0).stdout
    assert "aggressiveness" in listed
    assert made.stderr == ""  # cheap tier first: nothing to warn of
    # Tiers dearest first: saved, with the server's warning on stderr (in the JSON with --json)
    flipped = bonito(
        logged_in,
        "routing",
        "update",
        str(policy["id"]),
        "-s",
        'models=["demo-chat","demo-chat-mini"]',
        check=0,
    )
    [warning] = flipped.stderr.strip().splitlines()
    assert warning.startswith("Warning: ") and "demo-chat" in warning, flipped.stderr
    again = bonito(
        logged_in, "routing", "update", str(policy["id"]), "-s", "is_active=true", "--json"
    )
    assert again.stderr == "" and json.loads(again.stdout)["warnings"] == [warning[9:]]
    bonito(logged_in, "routing", "delete", str(policy["id"]), check=0)


def test_logs_follow_prints_new_requests_from_the_live_tail(server, logged_in):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bonito_cli",
            "logs",
            "--follow",
            "--json",
            "--limit",
            "0",
            "--interval",
            "600",  # a poll would come too late: only the live tail can print the row in time
            "--model",
            "demo-chat",
        ],
        cwd=logged_in,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(logged_in),
        preexec_fn=ctrl_c_reaches_python,
    )
    try:
        time.sleep(2)  # connected (the socket opens before anything is printed)
        answer = bonito(
            logged_in,
            "chat",
            "followed",
            "-m",
            "demo-chat",
            "--json",
            env={"BONITO_API_KEY": server["api_key"]},
            check=0,
        )
        del answer
        line = proc.stdout.readline()  # blocks until the row is printed (the timeout below)
        row = json.loads(line)
        assert row["model_used"] == "demo-chat" and row["created_at"].endswith("Z")
        # Ctrl-C ends it cleanly: exit code 0, no traceback
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        err = proc.stderr.read()
        assert "Traceback" not in err and "polling" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_logs_follow_falls_back_to_polling_without_a_live_tail(server, logged_in, tmp_path):
    """An older server (no live tail route): a note on stderr, then REST polling."""
    old = OldServer(server["url"]).start()
    proc = subprocess.Popen(
        # The token given for this other URL: a saved one goes only to its own URL.
        [sys.executable, "-m", "bonito_cli", "--url", old.url, "--token", server["pat"]]
        + ["logs", "--follow", "--json", "--limit", "0", "--interval", "0.3"],
        cwd=logged_in,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(logged_in),
        preexec_fn=ctrl_c_reaches_python,
    )
    try:
        note = proc.stderr.readline()
        assert "polling every 0.3s" in note and "HTTP 404" in note, note
        bonito(
            logged_in,
            "chat",
            "polled",
            "-m",
            "demo-chat",
            env={"BONITO_API_KEY": server["api_key"]},
            check=0,
        )
        assert json.loads(proc.stdout.readline())["model_used"] == "demo-chat"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        old.stop()


class OldServer:
    """A Bonito without the live tail: REST passed through to the real server, and a 404
    for the WebSocket path (as a server before it, or a proxy that does not pass sockets)."""

    def __init__(self, upstream: str):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                if self.path.startswith("/ws/"):
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                answer = httpx.get(
                    upstream + self.path,
                    headers={"Authorization": self.headers.get("Authorization", "")},
                )
                self.send_response(answer.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self):
        import threading

        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.httpd.shutdown()


def test_keys_update_changes_only_what_it_is_told(server, logged_in):
    home = logged_in
    created = json.loads(
        bonito(home, "keys", "create", "--name", "upd", "--rpm", "50", "--json", check=0).stdout
    )
    kid = str(created["id"])
    updated = json.loads(
        bonito(
            home,
            "keys",
            "update",
            kid,
            "--name",
            "upd-2",
            "--model",
            "demo-chat",
            "--expires",
            "2099-12-31",
            "--json",
            check=0,
        ).stdout
    )
    assert updated.keys() == schema_fields(server, "ApiKey")
    assert (updated["id"], updated["name"], updated["allowed_models"]) == (
        created["id"],
        "upd-2",
        ["demo-chat"],
    )
    assert updated["rpm_limit"] == 50 and updated["expires_at"].startswith("2099-12-31T23:59:59")
    cleared = json.loads(
        bonito(
            home,
            "keys",
            "update",
            kid,
            "--all-models",
            "--rpm",
            "none",
            "--expires",
            "never",
            "--json",
            check=0,
        ).stdout
    )
    assert (cleared["allowed_models"], cleared["rpm_limit"], cleared["expires_at"]) == (
        [],
        None,
        None,
    )
    assert cleared["name"] == "upd-2"
    assert (
        "-q"
        and bonito(home, "keys", "update", kid, "--tpm", "9", "-q", check=0).stdout.strip() == kid
    )
    # refusals: the server's field message (exit 1), nothing to change or a bad number (exit 2)
    bad = bonito(home, "keys", "update", kid, "--expires", "2001-01-01", check=1)
    assert "expires_at" in bad.stderr and "future" in bad.stderr
    assert "Nothing to change" in bonito(home, "keys", "update", kid, check=2).stderr
    assert "whole number" in bonito(home, "keys", "update", kid, "--rpm", "lots", check=2).stderr
    assert (
        "No key 999999 in this org."
        in bonito(home, "keys", "update", "999999", "--name", "x", check=1).stderr
    )


def test_keys_rotate_with_a_grace_keeps_the_old_secret_working(server, logged_in):
    home = logged_in
    created = json.loads(
        bonito(home, "keys", "create", "--name", "graced", "--json", check=0).stdout
    )
    old = created["api_key"]
    eventually(home, "chat", "hi", "-m", "demo-chat", env={"BONITO_API_KEY": old}, code=0)
    rotated = json.loads(
        bonito(
            home, "keys", "rotate", str(created["id"]), "--grace", "1h", "--json", check=0
        ).stdout
    )
    assert rotated["id"] == created["id"] and rotated["old_key_valid_until"]
    new = rotated["api_key"]
    eventually(home, "chat", "hi", "-m", "demo-chat", env={"BONITO_API_KEY": new}, code=0)
    bonito(home, "chat", "hi", "-m", "demo-chat", env={"BONITO_API_KEY": old}, check=0)
    assert "--grace" in bonito(home, "keys", "rotate", "1", "--grace", "soon", check=2).stderr


# ------------------------------------------------------------------------------ doctor
def test_doctor_passes_on_a_healthy_setup(server, logged_in):
    out = bonito(logged_in, "doctor", check=0).stdout
    lines = [line for line in out.splitlines() if not line.startswith("      ")]
    names = [line.split(":")[0].split("  ", 1)[1] for line in lines]
    assert names == [
        "server reachable",
        "TLS",
        "token valid",
        "org access",
        "provider mock",
        "/v1 request",
        "clock skew",
    ]
    assert all(line.startswith("PASS") for line in lines), out
    # the temporary key it used is revoked
    keys = json.loads(bonito(logged_in, "keys", "list", "--json", check=0).stdout)
    assert all(k["status"] == "revoked" for k in keys if k["name"] == "bonito doctor (temporary)")


def test_doctor_fails_with_hints_on_a_broken_setup(server, logged_in):
    wrong = bonito(logged_in, "doctor", env={"BONITO_TOKEN": "pat-" + "B" * 38}, check=1).stdout
    assert "FAIL  token valid: Invalid" in wrong and "hint: Create a token" in wrong
    dead_port = _free_port()
    provider = json.loads(
        bonito(
            logged_in,
            "providers",
            "create",
            "-s",
            "name=dead",
            "-s",
            "kind=openai",
            "-s",
            f"api_base=http://127.0.0.1:{dead_port}/v1",
            "-s",
            'credentials={"api_key":"sk-x"}',
            "--json",
            check=0,
        ).stdout
    )
    bonito(
        logged_in,
        "deployments",
        "create",
        "-s",
        "model_name=dead-model",
        "-s",
        "provider=dead",
        "-s",
        "upstream_model=gpt-x",
        check=0,
    )
    try:
        result = bonito(logged_in, "doctor", "--json", check=1)
        checks = {c["check"]: c for c in json.loads(result.stdout)}
        assert checks["provider dead"]["status"] == "fail" and checks["provider dead"]["hint"]
        assert checks["provider mock"]["status"] == "pass"
        assert "sk-x" not in result.stdout
        test = bonito(logged_in, "providers", "test", str(provider["id"]), check=1)
        assert "failed" in test.stdout
    finally:
        bonito(logged_in, "providers", "delete", str(provider["id"]), check=0)
    down = bonito(logged_in, "--url", f"http://127.0.0.1:{dead_port}", "doctor", check=1).stdout
    assert down.startswith("FAIL  server reachable") and "SKIP  token valid" in down


# ------------------------------------------------------------------------------ completion
@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_for_each_shell(home, shell):
    script = bonito(home, "completion", shell, check=0).stdout
    assert "_BONITO_COMPLETE" in script
    bonito(
        home,
        "completion",
        "install",
        "--shell",
        shell,
        env={"XDG_CONFIG_HOME": str(home / "x")},
        check=0,
    )
    if shell == "fish":
        fish = home / "x" / "fish" / "completions" / "bonito.fish"
        assert fish.read_text().strip() == script.strip()
    else:
        rc = (home / (".bashrc" if shell == "bash" else ".zshrc")).read_text()
        assert f"completion.{shell}" in rc
        bonito(home, "completion", "install", "--shell", shell, check=0)
        rc_again = (home / (".bashrc" if shell == "bash" else ".zshrc")).read_text()
        assert rc_again.count("bonito completion") == 1  # installed once


def test_completion_completes_commands(home):
    result = bonito(
        home,
        env={"_BONITO_COMPLETE": "bash_complete", "COMP_WORDS": "bonito ke", "COMP_CWORD": "1"},
        check=0,
    )
    assert "keys" in result.stdout


def test_bash_sources_the_script(home):
    script = bonito(home, "completion", "bash", check=0).stdout
    check = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


# ------------------------------------------------------------------------------ agent
def test_agent_status_and_token_rotation(server, logged_in):
    schema = httpx.get(server["url"] + "/api/schema/", params={"format": "json"}).json()
    if "/api/orgs/{org_slug}/agent/token" not in schema["paths"]:
        pytest.skip("this server has no agent endpoints yet (the agents REST API)")
    refused = bonito(logged_in, "agent", "token", "rotate", check=1)
    assert "VPC mode" in refused.stderr
    server["bonito"].manage(
        "shell",
        "-c",
        "from orgs.models import Organization; from orgs import services; "
        "from orgs.audit import Actor; "
        "services.org_update(actor=Actor(via='test'), "
        "org=Organization.objects.get(slug='demo'), deployment_mode='vpc')",
    )
    token = bonito(logged_in, "agent", "token", "rotate", "-q", check=0).stdout.strip()
    assert token.startswith("bt-")
    status = json.loads(bonito(logged_in, "agent", "status", "--json", check=0).stdout)
    assert status["deployment_mode"] == "vpc" and status["tokens"]
    assert token not in json.dumps(status)
    assert "vpc" in bonito(logged_in, "agent", "status", check=0).stdout


def test_config_apply_fills_env_secrets_from_its_own_environment(server, logged_in, home):
    port = _free_port()
    path = home / "secret.yaml"
    path.write_text(
        "providers:\n"
        "  - name: envtest\n"
        "    kind: openai\n"
        f"    api_base: http://127.0.0.1:{port}/v1\n"
        "    api_key: env:CLI_TEST_OPENAI_KEY   # from CI\n"
    )
    unset = bonito(logged_in, "config", "apply", str(path), "--dry-run", check=2)
    assert "env:CLI_TEST_OPENAI_KEY" in unset.stderr
    secret = 'sk-"quoted" \\ secret'
    dry = bonito(
        logged_in,
        "config",
        "apply",
        str(path),
        "--dry-run",
        "--json",
        env={"CLI_TEST_OPENAI_KEY": secret},
        check=0,
    ).stdout
    assert "provider.create" in dry and "sk-" not in dry  # never echoed back
    # a value the CLI leaves as it is (inline) is refused by the server, not read there
    path.write_text("providers:\n- {name: envtest, kind: openai, api_key: env:SECRET_KEY}\n")
    refused = bonito(logged_in, "config", "apply", str(path), check=1)
    assert "not read from the server's environment" in refused.stderr
