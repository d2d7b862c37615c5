"""Every amount and share the dashboard shows follows one rule (core.money): cents and at
most 4 decimals ($0.0009, $1.50), a non-zero amount under that grain with its first two
significant digits ($0.000016), never "$0.0000" for money that was spent; zero is $0; shares
with at most 2 decimals (95%, 19.44%), never "95.0%" beside "19.44%". The Usage page (its
headline, smart routing tables, breakdowns, with and without a policy filter), the
dashboard's home, Logs (and its live tail's script), Budgets and Keys."""

import re
import shutil
import subprocess
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone

from billing.models import Budget, UsageRecord
from core import money
from gateway import services
from gateway.tests.conftest import ACTOR

# An amount of money shown as zero with decimals ("$0.0000", "$0.00"), or a share with a
# needless trailing zero ("95.0%").
ZERO_WITH_DECIMALS = re.compile(r"\$0\.0+(?![0-9])")
TRAILING_ZERO_SHARE = re.compile(r"[0-9]\.[0-9]*0%")

RULES = [
    (0, "$0"),
    (Decimal("0E-8"), "$0"),
    (4.571e-05, "$0.000046"),
    (0.000915, "$0.0009"),
    (Decimal("0.00001636"), "$0.000016"),
    (Decimal("0.00000035"), "$0.00000035"),
    (0.00004999, "$0.00005"),
    (0.00005, "$0.0001"),
    (0.002, "$0.002"),
    (1.5, "$1.50"),
    (Decimal("100.50"), "$100.50"),
    (12.345678, "$12.3457"),
    (0.30000000000000004, "$0.30"),
    (-0.0019, "-$0.0019"),
    ("0.00117300", "$0.0012"),
    (None, "—"),
]


@pytest.mark.parametrize(("value", "said"), RULES)
def test_an_amount(value, said):
    assert money.usd(value) == said


def test_a_share():
    assert [money.pct(v) for v in (95.0, 19.44, 47.5, 1900.0, 100, 0, 0.004, -20.0)] == [
        "95%",
        "19.44%",
        "47.5%",
        "1900%",
        "100%",
        "0%",
        "under 0.01%",
        "-20%",
    ]
    # a saving that is not zero whose share the API rounded to 0.0
    assert money.pct(0.0, nonzero=True) == "under 0.01%"
    assert money.rate_pct(0.3333) == "33.33%" and money.rate_pct(0.0, nonzero=3) == "under 0.01%"
    assert money.rate_pct(0.0) == "0%"


def _record(org, *, cost, top=None, model="lite", status="success", key=None, at=None):
    return UsageRecord.objects.create(
        id=uuid.uuid4(),
        org=org,
        key=key,
        created_at=at or timezone.now(),
        model_requested="auto" if top is not None else model,
        model_used=model,
        provider="mock",
        status=status,
        http_status=200 if status == "success" else 500,
        input_tokens=100,
        output_tokens=50,
        cost=Decimal(cost),
        cost_top_tier=Decimal(top) if top is not None else None,
        route_tier=model if top is not None else "",
        routing_policy="saver" if top is not None else "",
        route_classifier="rules" if top is not None else "",
        route_score=0.1 if top is not None else None,
    )


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def _cells(page: str, table: str, row: str) -> list[str]:
    """The cells of the row named ``row`` in the table titled ``table``."""
    body = page.split(f"<h3>{table}</h3>", 1)[1].split("</tbody>", 1)[0]
    for tr in re.findall(r"<tr>(.*?)</tr>", body, re.S):
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td>(.*?)</td>", tr)]
        if cells and cells[0] == row:
            return cells
    raise AssertionError(f"no row {row} in {table}")


@pytest.fixture
def smart_day(org_a):
    """The demo's smart day: mini answered for $0.00001636 what the top tier would have
    charged $0.0003272 for; the top tier answered at its own price; one request failed."""
    _record(org_a, cost="0.00001636", top="0.00032720", model="lite")
    _record(org_a, cost="0.00090000", top="0.00090000", model="pro")
    _record(org_a, cost="0", model="pro", status="error")


@pytest.mark.django_db
@pytest.mark.parametrize("policy", [None, "saver"])
def test_the_usage_page_says_every_amount_by_one_rule(org_a, alice_client, smart_day, policy):
    params = {"range": "24h", **({"policy": policy} if policy else {})}
    page = alice_client.get(f"/o/{org_a.slug}/usage/", params).content.decode()
    assert not ZERO_WITH_DECIMALS.search(page), ZERO_WITH_DECIMALS.findall(page)
    assert not TRAILING_ZERO_SHARE.search(page), TRAILING_ZERO_SHARE.findall(page)
    # The row that cost $0.00001636: "$0.0000" before; its top tier and saving to 4 places.
    assert _cells(page, "By model used", "lite")[2:5] == ["$0.000016", "$0.0003", "$0.0003 (95%)"]
    assert _cells(page, "By model used", "pro")[2:4] == ["$0.0009", "$0.0009"]
    text = _text(page)
    # 0.00091636 in all, saved 0.00031084 of 0.0012272 (25.33 %)
    assert "You saved $0.0003 (25.33%) on 2 smart-routed requests" in text
    assert (
        "they cost $0.0009; the same tokens on each policy's top tier would have cost $0.0012"
        in text
    )
    if policy is None:  # the breakdowns, the failed request among the requests
        assert "$0.0009 cost" in text and "33.33% errors" in text
        assert re.search(r"lite 1 150 \$0\.000016\b", text), text


@pytest.mark.django_db
def test_a_tiny_amount_elsewhere_is_not_zero(org_a, alice_client):
    key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="tiny")
    _record(org_a, cost="0.00000460", model="mini", key=key)
    Budget.objects.create(org=org_a, amount_usd=Decimal("100.00"), thresholds=[50, 100])
    for path in ("", "logs/", "budgets/", "keys/"):
        page = alice_client.get(f"/o/{org_a.slug}/{path}").content.decode()
        assert "$0.0000046" in page, path
        assert not ZERO_WITH_DECIMALS.search(page), (path, ZERO_WITH_DECIMALS.findall(page))
    budgets = _text(alice_client.get(f"/o/{org_a.slug}/budgets/").content.decode())
    assert "$100.00 $0.0000046 (under 0.01%)" in budgets
    home = _text(alice_client.get(f"/o/{org_a.slug}/").content.decode())
    assert "$0.0000046 spend" in home and "0% errors" in home


MONEY_JS = Path(__file__).resolve().parents[2] / "static" / "js" / "money.js"


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_the_live_tail_and_playground_script_says_amounts_as_the_server_does():
    numeric = [(v, said) for v, said in RULES if v is not None]
    script = (
        "const window = {};\n"
        + MONEY_JS.read_text()
        + "\nfor (const v of "
        + "["
        + ",".join(repr(str(v)) for v, _ in numeric)
        + "]) console.log(window.bonitoUsd(v));"
    )
    out = subprocess.run(
        ["node", "-e", script], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert out.splitlines() == [said for _, said in numeric]
