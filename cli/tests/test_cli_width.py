"""Every command that prints a table fits the terminal: rows of realistic, long values
(key and model names, ISO times, costs with 8 decimals) are one line each, no wider than
$COLUMNS (80 when piped); --wide prints every column in full and --json is the API's JSON
as it came. Against the tiny fake server of test_cli_hardening.py (the answers are
realistic REST rows; the CLI runs as a subprocess)."""

import json
import signal
import subprocess
import sys

import pytest

from cli.tests.test_cli import cli_env, ctrl_c_reaches_python, run_script
from cli.tests.test_cli_hardening import Fake, at

WHEN = "2026-11-30T23:59:58.123456Z"
LATER = "2026-12-03T13:51:37.987654Z"
LONG_KEY_NAME = "production-backend-ingestion-pipeline-eu-west-1-batch-worker"
LONG_MODEL = "bedrock/anthropic.claude-3-5-sonnet-20241022-v2:0"
LONG_UPSTREAM = "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude"


def page(rows):
    return {"count": len(rows), "next": None, "previous": None, "results": rows}


KEY = {
    "id": 104729,
    "name": LONG_KEY_NAME,
    "kind": "routing",
    "key": "rt-Xy7Qp2…9fKd",
    "allowed_models": [LONG_MODEL, "gpt-4o-mini-2024-07-18", "gemini/gemini-1.5-pro-002"],
    "allowed_providers": ["bedrock-eu-west-1", "openai"],
    "team": 4012,
    "routing_policy": "cost-optimised-with-claude-fallback-for-long-context",
    "rpm_limit": 120000,
    "tpm_limit": 2000000,
    "expires_at": LATER,
    "created_at": WHEN,
    "revoked_at": None,
    "is_active": True,
    "status": "active",
    "last_used_at": LATER,
    "spend_this_month": "123456.78901234",
    "old_key_valid_until": None,
}
PROVIDER = {
    "id": 311,
    "name": "bedrock-eu-west-1-production-account",
    "kind": "bedrock",
    "api_base": "https://bedrock-runtime.eu-west-1.amazonaws.com/model/invoke-with-response",
    "is_active": True,
    "has_credentials": True,
    "active_deployments": 42,
}
DEPLOYMENT = {
    "id": 9001,
    "model_name": LONG_MODEL,
    "provider": "bedrock-eu-west-1-production-account",
    "upstream_model": LONG_UPSTREAM,
    "region": "eu-west-1",
    "weight": 100,
    "priority": 10,
    "is_active": True,
    "input_price_per_mtok": "3.00000000",
    "output_price_per_mtok": "15.00000000",
}
MODEL = {
    "name": LONG_MODEL,
    "provider": "bedrock_converse",
    "mode": "chat",
    "input_cost_per_token": 3e-06,
    "output_cost_per_token": 1.5e-05,
    "max_input_tokens": 200000,
}
ROUTING = {
    "id": 77,
    "name": "cost-optimised-with-claude-fallback-for-long-context",
    "strategy": "cost_optimized",
    "models": [LONG_MODEL, "gpt-4o-mini-2024-07-18"],
    "weights": {LONG_MODEL: 70, "gpt-4o-mini-2024-07-18": 30},
    "is_active": True,
}
BUDGET = {
    "id": 55,
    "scope": "key",
    "team": None,
    "key": LONG_KEY_NAME,
    "period": "monthly",
    "amount_usd": "250000.00",
    "spent_usd": "123456.78901234",
    "hard": True,
    "thresholds": [50, 80, 90, 100],
    "is_active": True,
}
TEAM = {
    "id": 4012,
    "name": "machine-learning-platform-infrastructure",
    "description": "Owns the inference gateway, the batch pipelines and the evaluation jobs",
    "created_at": WHEN,
}
MEMBER = {
    "id": 8,
    "email": "maria.fernandez-gonzalez@engineering.example-corporation.com",
    "name": "María Fernández González",
    "role": "admin",
    "team": "machine-learning-platform-infrastructure",
}
TOKEN = {
    "id": 12,
    "name": "github-actions-deploy-pipeline-monorepo",
    "token": "pat-AbCd…wXyZ",
    "created_at": WHEN,
    "last_used_at": LATER,
    "revoked_at": None,
}
AUDIT = {
    "id": 1234567,
    "created_at": WHEN,
    "actor_label": "maria.fernandez-gonzalez@engineering.example-corporation.com",
    "action": "api_key.update_routing_policy",
    "target_type": "api_key",
    "target_repr": f"{LONG_KEY_NAME} (rt-Xy7Qp2…9fKd)",
}
LOG = {
    "id": 987654321,
    "created_at": LATER,
    "request_id": "chatcmpl-4f1c2d3e-9a8b-47c6-b5d4-e3f2a1b0c9d8",
    "status": "success",
    "http_status": 200,
    "error_type": "",
    "model_requested": LONG_MODEL,
    "model_used": LONG_MODEL,
    "provider": "bedrock-eu-west-1-production-account",
    "key": 104729,
    "key_name": LONG_KEY_NAME,
    "team": 4012,
    "team_name": "machine-learning-platform-infrastructure",
    "input_tokens": 123456,
    "output_tokens": 65432,
    "cost": "1.35185700",
    "latency_ms": 12345,
    "source": "vpc_agent",
}
BREAKDOWN = {
    "name": LONG_MODEL,
    "requests": 1234567,
    "tokens": 987654321,
    "cost_usd": "123456.78901234",
    "errors": 321,
}
USAGE = {
    "since": WHEN,
    "until": LATER,
    "requests": 1234567,
    "tokens": 987654321,
    "cost_usd": "123456.78901234",
    "by_model": [BREAKDOWN, {**BREAKDOWN, "name": "gpt-4o-mini-2024-07-18"}],
}
SAVED = {
    "requests": 1234567,
    "cost_usd": 123.45678901,
    "top_tier_cost_usd": 2345.67890123,
    "saved_usd": 2222.22211222,
    "saved_pct": 94.74,
    "rated": 4321,
    "avg_feedback": 0.8765,
}
SMART = {
    **SAVED,
    "unpriced_requests": 12,
    "by_policy": [{"policy": "customer-support-smart-routing-production", **SAVED}],
    "by_classifier": [{"classifier": "learned", **SAVED}, {"classifier": "rules", **SAVED}],
    "by_tier": [{"tier": "anthropic.claude-3-5-haiku-20241022-v1:0", **SAVED}],
    "by_model": [{"model": "anthropic.claude-3-5-sonnet-20241022-v2:0", **SAVED}],
    "by_day": [{"day": "2026-12-03", **SAVED}],
}
ANALYTICS = {
    "since": WHEN,
    "until": LATER,
    "rolled_up_until": WHEN,
    "totals": {"requests": 1234567, "tokens": 987654321, "cost_usd": "123456.78901234"},
    "latency": {"p50": 812.5, "p95": 4012.25, "p99": 11873.0},
    "series": [{**BREAKDOWN, "bucket": "2026-12-03T13:00:00+00:00"} for _ in range(2)],
    "by_model": [BREAKDOWN],
    "by_provider": [{**BREAKDOWN, "name": "bedrock-eu-west-1-production-account"}],
    "by_key": [{**BREAKDOWN, "name": LONG_KEY_NAME}],
    "by_team": [{**BREAKDOWN, "name": "machine-learning-platform-infrastructure"}],
    "smart_routing": SMART,
}
AGENT = {
    "deployment_mode": "vpc",
    "status": "healthy",
    "tokens": [
        {"id": 3, "created_at": WHEN, "last_used_at": LATER, "valid_until": None},
    ],
    "agents": [
        {
            "agent_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
            "hostname": "ip-10-123-234-117.eu-west-1.compute.internal",
            "status": "healthy",
            "last_heartbeat_at": LATER,
            "version": "1.12.0-rc.3+build.20261203",
            "config_version": 123456,
            "in_sync": True,
            "request_rate": 1234.5678,
            "error_rate": 0.012345,
        }
    ],
}

# path the command reads -> its answer
ANSWERS = {
    "/api/gateway/keys": page([KEY, {**KEY, "id": 7, "name": "ci"}]),
    "/api/gateway/providers": page([PROVIDER]),
    "/api/gateway/deployments": page([DEPLOYMENT]),
    "/api/gateway/models": page([MODEL, {**MODEL, "name": "gpt-4o-mini"}]),
    "/api/gateway/routing-policies": page([ROUTING]),
    "/api/gateway/budgets": page([BUDGET]),
    "/api/gateway/teams": page([TEAM]),
    "/api/gateway/members": page([MEMBER]),
    "/api/tokens": page([TOKEN]),
    "/api/gateway/audit": page([AUDIT]),
    "/api/gateway/logs": page([LOG, {**LOG, "id": 2, "status": "error", "http_status": 429}]),
    "/api/gateway/usage": USAGE,
    "/api/gateway/analytics": ANALYTICS,
    "/api/orgs/acme/agent": AGENT,
}
# every command that prints a table -> (its arguments, the path it reads)
TABLES = {
    "keys list": ((), "/api/gateway/keys"),
    "providers list": ((), "/api/gateway/providers"),
    "deployments list": ((), "/api/gateway/deployments"),
    "models list": ((), "/api/gateway/models"),
    "models search": (("claude",), "/api/gateway/models"),
    "routing list": ((), "/api/gateway/routing-policies"),
    "budgets list": ((), "/api/gateway/budgets"),
    "teams list": ((), "/api/gateway/teams"),
    "members list": ((), "/api/gateway/members"),
    "tokens list": ((), "/api/tokens"),
    "audit list": ((), "/api/gateway/audit"),
    "logs": ((), "/api/gateway/logs"),
    "usage": ((), "/api/gateway/usage"),
    "analytics": ((), "/api/gateway/analytics"),
    "savings": ((), "/api/gateway/analytics"),
    "agent status": ((), "/api/orgs/acme/agent"),
}
RUNS = (
    [(name, ()) for name in TABLES]
    + [("analytics", ("--group-by", group)) for group in ("provider", "key", "team", "time")]
    + [("savings", ("--group-by", group)) for group in ("classifier", "tier", "model", "day")]
)

WALK = """
from bonito_cli.main import cli

def walk(command, path):
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            walk(sub, path + [name])
    else:
        opts = [o for p in command.params for o in p.opts + p.secondary_opts]
        assert len(opts) == len(set(opts)), (path, opts)  # -w taken twice, say
        print(" ".join(path), "wide" if "--wide" in opts else "-")

walk(cli, [])
"""


@pytest.fixture(scope="module")
def fake():
    yield from Fake.answering(ANSWERS)


def _lines(text: str) -> list[str]:
    return text.splitlines()


def test_the_commands_with_tables_are_these_and_take_wide(tmp_path):
    """Which commands print a table: the list commands of every group (read from the
    command tree, so a new one cannot be left out of the tests below) and the reports."""
    listing = run_script(WALK, tmp_path)
    commands = dict(line.rsplit(" ", 1) for line in listing.splitlines())
    listing_commands = {c for c in commands if c.split()[-1] in ("list", "search")}
    assert listing_commands <= set(TABLES), listing_commands - set(TABLES)
    assert {c for c, wide in commands.items() if wide == "wide"} == set(TABLES)


@pytest.mark.parametrize("columns", ["80", "60", "100"])
@pytest.mark.parametrize(("command", "extra"), RUNS, ids=[" ".join(r[0:1] + r[1]) for r in RUNS])
def test_every_table_fits_the_terminal(fake, tmp_path, command, extra, columns):
    args, _path = TABLES[command]
    result = at(fake, tmp_path, *command.split(), *args, *extra, env={"COLUMNS": columns}, check=0)
    lines = _lines(result.stdout)
    assert lines, result
    assert max(len(line) for line in lines) <= int(columns), result.stdout
    # no row is wrapped: a table's lines are its header and one line per row
    if command in ("keys list", "logs", "models list"):
        assert len(lines) == 3, result.stdout


def test_piped_without_columns_is_80_wide(fake, tmp_path):
    env = cli_env(tmp_path, BONITO_URL=fake.url, BONITO_TOKEN="pat-fake")
    del env["COLUMNS"]
    for command in ("keys list", "logs", "deployments list"):
        out = subprocess.run(
            [sys.executable, "-m", "bonito_cli", *command.split()],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert max(map(len, out.splitlines())) <= 80, out


def test_narrow_tables_keep_what_matters_and_say_what_they_left_out(fake, tmp_path):
    keys = at(fake, tmp_path, "keys", "list", env={"COLUMNS": "80"}, check=0)
    header, *rows = _lines(keys.stdout)
    assert header.split()[:2] == ["id", "name"] and "status" in header, header
    assert {"status", "spend_this_month"} <= set(header.split()), header
    assert rows[0].startswith("104729  production-backend-") and "…" in rows[0], rows
    assert "123456.78901234" in rows[0], rows  # money whole, or not shown
    assert "2026-12-03 13:51:37" in keys.stdout or "last_used_at" in keys.stderr
    assert "routing_policy" in keys.stderr and "--wide" in keys.stderr, keys.stderr
    logs = at(fake, tmp_path, "logs", env={"COLUMNS": "80"}, check=0).stdout
    assert "2026-12-03 13:51:37" in logs and "1.35185700" in logs and "success" in logs, logs
    money = at(fake, tmp_path, "budgets", "list", env={"COLUMNS": "80"}, check=0).stdout
    assert "123456.78901234" in money and "250000.00" in money, money  # never cut


@pytest.mark.parametrize(("command", "extra"), RUNS, ids=[" ".join(r[0:1] + r[1]) for r in RUNS])
def test_wide_prints_every_column_in_full(fake, tmp_path, command, extra):
    args, _path = TABLES[command]
    result = at(fake, tmp_path, *command.split(), *args, *extra, "--wide", env={"COLUMNS": "80"})
    assert result.returncode == 0 and result.stderr == "", result
    lines = _lines(result.stdout)
    assert max(map(len, lines)) > 80
    if command in ("agent status",):
        assert "ip-10-123-234-117.eu-west-1.compute.internal" in result.stdout
    elif command in ("usage", "analytics"):
        assert "123456.78901234" in result.stdout
    else:
        assert "…" not in result.stdout.replace("rt-Xy7Qp2…9fKd", "").replace("…wXyZ", "")


def test_keys_list_wide_has_every_value_as_the_api_wrote_it(fake, tmp_path):
    out = at(fake, tmp_path, "keys", "list", "-w", env={"COLUMNS": "80"}, check=0).stdout
    for value in (LONG_KEY_NAME, LONG_MODEL, KEY["routing_policy"], LATER, "123456.78901234"):
        assert value in out, value


@pytest.mark.parametrize(("command", "extra"), RUNS, ids=[" ".join(r[0:1] + r[1]) for r in RUNS])
def test_json_is_the_answer_unchanged(fake, tmp_path, command, extra):
    args, path = TABLES[command]
    out = at(fake, tmp_path, *command.split(), *args, *extra, "--json", env={"COLUMNS": "40"})
    answer = ANSWERS[path]
    if command == "savings":  # its part of the analytics answer
        answer = answer["smart_routing"]
    assert json.loads(out.stdout) == answer.get("results", answer)


@pytest.mark.parametrize(("columns", "wide"), [("80", False), ("60", False), ("80", True)])
def test_logs_follow_lines_fit_too(fake, tmp_path, columns, wide):
    """--follow prints each row as it comes (here the history, then polls: the fake has no
    live tail): one line each, no wider than the terminal, unless --wide."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bonito_cli", "logs", "--follow", "--interval", "600"]
        + (["--wide"] if wide else []),
        cwd=tmp_path,
        env=cli_env(tmp_path, BONITO_URL=fake.url, BONITO_TOKEN="pat-fake", COLUMNS=columns),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_reaches_python,
    )
    try:
        lines = [proc.stdout.readline().rstrip("\n") for _ in range(2)]
        proc.send_signal(signal.SIGINT)  # 0 or 130 (during a poll): test_cli.py tells
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert all("1.35185700" in line for line in lines), lines  # the cost is never cut
    if wide:
        assert LONG_KEY_NAME in lines[0] and LATER in lines[0], lines
    else:
        assert max(map(len, lines)) <= int(columns), lines
        assert "2026-12-03 13:51:37" in lines[0], lines


# ------------------------------------------------------------------------------ help
def test_every_help_reads_whole_in_80_columns(tmp_path):
    """`bonito --help` and every command's: no line past 80 columns (an example the
    terminal would break mid-word) and no summary in a command list cut with "..." (Click
    cut "Requests, tokens and cost over time or by..." at the width)."""
    listing = run_script(WALK, tmp_path)
    commands = [line.rsplit(" ", 1)[0].split() for line in listing.splitlines()]
    groups = {tuple(c[:i]) for c in commands for i in range(len(c))}
    for path in sorted(groups) + sorted(map(tuple, commands)):
        out = subprocess.run(
            [sys.executable, "-m", "bonito_cli", *path, "--help"],
            cwd=tmp_path,
            env=cli_env(tmp_path, COLUMNS="80"),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        name = " ".join(("bonito", *path))
        assert max(map(len, out.splitlines())) <= 80, (name, out)
        if "\nCommands:\n" in out:
            listed = out.split("\nCommands:\n", 1)[1]
            assert "..." not in listed, (name, listed)
