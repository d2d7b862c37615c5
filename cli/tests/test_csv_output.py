"""The CLI's CSV output neutralises cells a spreadsheet would run (as the server's CSV
downloads do): text starting with = + - @ or a tab/line break gets a leading quote;
numbers, including negative ones, stay numbers (a cost as the fixed decimal text of
test_cli_money.py)."""

import csv
import io
import subprocess
import sys
from pathlib import Path

CLI = Path(__file__).resolve().parents[1]

SCRIPT = """
from bonito_cli.output import write_csv
write_csv(
    [
        {"name": "=HYPERLINK(1)", "cost": -1.5, "models": ["@SUM(A1)", "b"]},
        {"name": "+1", "cost": 2, "models": []},
        {"name": "plain", "cost": 0.25, "models": ["a"]},
    ],
    ["name", "cost", "models"],
)
"""


def test_csv_output_neutralises_formulas():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={"PYTHONPATH": str(CLI)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["name"] for r in rows] == ["'=HYPERLINK(1)", "'+1", "plain"]
    assert [r["cost"] for r in rows] == ["-1.50000000", "2.00000000", "0.25000000"]
    assert rows[0]["models"] == "'@SUM(A1), b"
