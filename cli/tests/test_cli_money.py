"""Money and shares read the same in every command: the reports' amounts come from the API
as JSON numbers (4.571e-05, 5e-05, 0.30000000000000004 as a float sum may be) and are
printed as fixed decimals with 8 places (the grain costs are stored with, as `logs` prints
a cost) in tables, records, CSV and --quiet, never with an exponent; catalog prices per
token with every decimal they have; shares with 2 decimals (95.00%, 19.44%). --json stays
the API's JSON. Against the tiny fake server of test_cli_hardening.py, answering as the
real API does (billing/selectors.py: floats rounded to 8 places, saved_pct in percent,
error_rate a fraction)."""

import csv
import io
import json
import re
from decimal import Decimal

import pytest

from cli.tests.test_cli_hardening import Fake, at

EXPONENT = re.compile(r"[0-9][eE][-+]?[0-9]")

# A smart-routed day as the demo makes it: mini answered 8 requests for 4.571e-05 that the
# top tier would have charged 0.000915 for.
MINI = {
    "requests": 8,
    "cost_usd": 4.571e-05,
    "top_tier_cost_usd": 0.000915,
    "saved_usd": 0.00086929,
    "saved_pct": 95.0,
    "rated": 0,
    "avg_feedback": None,
}
TOP = {
    "requests": 3,
    "cost_usd": 0.30000000000000004,
    "top_tier_cost_usd": 0.30000000000000004,
    "saved_usd": 0.0,
    "saved_pct": 0.0,
    "rated": 1,
    "avg_feedback": 1.0,
}
DEARER = {  # a policy whose low tier cost more than its top tier: a negative saving
    "requests": 2,
    "cost_usd": 7.2e-05,
    "top_tier_cost_usd": 6e-05,
    "saved_usd": -1.2e-05,
    "saved_pct": -20.0,
    "rated": 0,
    "avg_feedback": None,
}
SMART = {
    "requests": 13,
    "cost_usd": 0.30011771,
    "top_tier_cost_usd": 0.30097500,
    "saved_usd": 5e-05,  # under $0.0001: str() said 5e-05
    "saved_pct": 19.44,
    "rated": 1,
    "avg_feedback": 1.0,
    "unpriced_requests": 0,
    "by_policy": [{"policy": "(org default)", **MINI}, {"policy": "dear", **DEARER}],
    "by_classifier": [{"classifier": "rules", **MINI}],
    "by_tier": [{"tier": "demo-chat-mini", **MINI}, {"tier": "demo-chat", **TOP}],
    "by_model": [{"model": "demo-chat-mini", **MINI}],
    "by_day": [{"day": "2026-12-03", **MINI}],
}
ROW = {"name": "demo-chat-mini", "requests": 8, "tokens": 256, "cost_usd": 6.457e-05}
ANALYTICS = {
    "since": "2026-12-02T10:00:00Z",
    "until": "2026-12-03T10:00:00Z",
    "rolled_up_until": None,
    "totals": {
        "requests": 11,
        "input_tokens": 100,
        "output_tokens": 200,
        "cost_usd": 6.457e-05,
        "errors": 1,
        "error_rate": 0.0909,
        "feedback_calls": 0,
    },
    "latency": {"p50_ms": 5, "p95_ms": 10, "p99_ms": 10},
    "series": [{"bucket": "2026-12-03T09:00:00+00:00", **ROW}],
    "by_model": [ROW, {**ROW, "name": "demo-chat", "cost_usd": 0.30000000000000004}],
    "by_provider": [{**ROW, "name": "mock"}],
    "by_key": [{**ROW, "name": "demo key"}],
    "by_team": [],
    "smart_routing": SMART,
}
USAGE = {
    "since": "2026-12-02T10:00:00Z",
    "until": "2026-12-03T10:00:00Z",
    "requests": 8,
    "cost_usd": 6.457e-05,
    "error_rate": 0.0,
    "by_model": [ROW],
}
MODELS = {
    "count": 1,
    "next": None,
    "previous": None,
    "results": [
        {
            "name": "gpt-4o-mini",
            "provider": "openai",
            "mode": "chat",
            "input_cost_per_token": 1.5e-07,
            "output_cost_per_token": 6e-07,
        }
    ],
}
ANSWERS = {
    "/api/gateway/analytics": ANALYTICS,
    "/api/gateway/usage": USAGE,
    "/api/gateway/models": MODELS,
}


@pytest.fixture(scope="module")
def fake():
    yield from Fake.answering(ANSWERS)


def run(fake, home, *args) -> str:
    result = at(fake, home, *args, env={"COLUMNS": "200"}, check=0)
    assert result.stderr == "", result.stderr
    return result.stdout


def rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


# Every command that prints money or a share, in each of its human and script outputs.
RUNS = (
    [
        ("savings", "--group-by", group, *flag)
        for group in ("policy", "classifier", "tier", "model", "day")
        for flag in ((), ("--csv",), ("--quiet",), ("--wide",))
    ]
    + [
        ("analytics", "--group-by", group, *flag)
        for group in ("model", "provider", "key", "time")
        for flag in ((), ("--csv",), ("--wide",))
    ]
    + [
        ("usage",),
        ("usage", "--csv"),
        ("usage", "--quiet"),
        ("usage", "--wide"),
        ("models", "search", "gpt"),
        ("models", "list", "--wide"),
    ]
)


@pytest.mark.parametrize("args", RUNS, ids=[" ".join(r) for r in RUNS])
def test_no_money_is_printed_with_an_exponent(fake, tmp_path, args):
    out = run(fake, tmp_path, *args)
    assert out.strip()
    assert not EXPONENT.search(out), out
    assert "0000000000" not in out, out  # no float noise (0.30000000000000004)


def test_savings_table_and_record_show_fixed_decimals_and_shares(fake, tmp_path):
    out = run(fake, tmp_path, "savings", "--group-by", "tier")
    record = dict(line.split(None, 1) for line in out.split("By tier")[0].splitlines())
    assert record["cost_usd"] == "0.30011771"
    assert record["saved_usd"] == "0.00005000"
    assert record["saved_pct"] == "19.44%"
    mini = next(line.split() for line in out.splitlines() if line.startswith("demo-chat-mini"))
    assert mini[:6] == ["demo-chat-mini", "8", "0.00004571", "0.00091500", "0.00086929", "95.00%"]
    top = next(line.split() for line in out.splitlines() if line.startswith("demo-chat "))
    assert top[2:6] == ["0.30000000", "0.30000000", "0.00000000", "0.00%"]

    dear = run(fake, tmp_path, "savings", "--group-by", "policy")
    row = next(line.split() for line in dear.splitlines() if line.startswith("dear"))
    assert row[4:6] == ["-0.00001200", "-20.00%"]


def test_savings_csv_is_exact_and_plain_numbers(fake, tmp_path):
    table = rows(run(fake, tmp_path, "savings", "--group-by", "tier", "--csv"))
    assert table[0] == {
        "tier": "demo-chat-mini",
        "requests": "8",
        "cost_usd": "0.00004571",
        "top_tier_cost_usd": "0.00091500",
        "saved_usd": "0.00086929",
        "saved_pct": "95.00",
        "rated": "0",
        "avg_feedback": "",
    }
    assert table[1]["cost_usd"] == "0.30000000"
    # Exactly the API's amounts, to the 8 places they are rounded to.
    for got, sent in zip(table, SMART["by_tier"], strict=True):
        for column in ("cost_usd", "top_tier_cost_usd", "saved_usd"):
            assert Decimal(got[column]) == round(Decimal(repr(sent[column])), 8)


def test_quiet_prints_the_amount_for_scripts(fake, tmp_path):
    assert run(fake, tmp_path, "savings", "--quiet") == "0.00005000\n"
    assert run(fake, tmp_path, "usage", "--quiet") == "0.00006457\n"


def test_usage_and_analytics_show_fixed_decimals_and_a_rate_in_percent(fake, tmp_path):
    usage = run(fake, tmp_path, "usage")
    assert re.search(r"^cost_usd +0\.00006457$", usage, re.M), usage
    assert re.search(r"^error_rate +0\.00%$", usage, re.M), usage
    assert re.search(r"^demo-chat-mini +8 +256 +0\.00006457$", usage, re.M), usage
    assert rows(run(fake, tmp_path, "usage", "--csv"))[0]["cost_usd"] == "0.00006457"

    analytics = run(fake, tmp_path, "analytics")
    assert re.search(r"^error_rate +9\.09%$", analytics, re.M), analytics
    assert re.search(r"^demo-chat +8 +256 +0\.30000000$", analytics, re.M), analytics
    series = rows(run(fake, tmp_path, "analytics", "--group-by", "time", "--csv"))
    assert series[0]["cost_usd"] == "0.00006457"


def test_catalog_prices_keep_every_decimal(fake, tmp_path):
    out = run(fake, tmp_path, "models", "search", "gpt")
    assert re.search(r"^gpt-4o-mini +openai +chat +0\.00000015 +0\.0000006$", out, re.M), out


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (("savings", "--group-by", "tier"), "/api/gateway/analytics"),
        (("analytics",), "/api/gateway/analytics"),
        (("usage",), "/api/gateway/usage"),
        (("models", "search", "gpt"), "/api/gateway/models"),
    ],
)
def test_json_is_still_the_apis_numbers(fake, tmp_path, args, path):
    out = json.loads(run(fake, tmp_path, *args, "--json"))
    answer = ANSWERS[path]
    if args[0] == "savings":
        answer = answer["smart_routing"]
    assert out == answer.get("results", answer)
    if args[0] == "savings":
        assert out["by_tier"][0]["cost_usd"] == 4.571e-05  # a number, not text


SCRIPT = """
from bonito_cli.output import field_text, percent, price, usd
for value in (4.571e-05, 5e-05, 0.30000000000000004, -1.2e-05, -1e-10, 0, 123456.78901234):
    print(usd(value))
print(usd("0.00117300"), usd(None) or "-", usd(float("nan")))
print(price(1.65e-07), price(2.5e-06), price(0))
print(percent(95.0), percent(19.44), percent(0.012345, fraction=True), percent(95.0, sign=False))
print(
    field_text("spend_this_month", 1e-05),
    field_text("request_rate", 1e-05),
    field_text("requests", 3),
)
"""


def test_the_rules_themselves(tmp_path):
    from cli.tests.test_cli import run_script

    assert run_script(SCRIPT, tmp_path).splitlines() == [
        "0.00004571",
        "0.00005000",
        "0.30000000",
        "-0.00001200",
        "0.00000000",  # not -0.00000000
        "0.00000000",
        "123456.78901234",
        "0.00117300 - nan",  # text (the API's exact decimals) as it came
        "0.000000165 0.0000025 0",
        "95.00% 19.44% 1.23% 95.00",
        "0.00001000 1e-05 3",  # only money and shares change, not a rate per second
    ]
