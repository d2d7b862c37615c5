"""The Usage page's smart routing tables say in words what each row saved: a row that cost
what the top tier would have saved nothing (the top tier's own row, by its nature), a row
that cost more says how much more, and amounts or shares too small for the column's grain
are never said as zero ("none: $0.0004 (0%) more"): an amount under $0.0001 with its first
two significant digits, a share under 0.01 % as such (core.money's rule, as every amount on
the page)."""

import re

import pytest

from billing.tests.test_smart_loss import PARAMS, _row

pytestmark = pytest.mark.django_db


def _saved_cells(page: str, table: str) -> dict[str, str]:
    """Row name -> the text of its Saved cell, in the table titled ``table``."""
    body = page.split(f"<h3>{table}</h3>", 1)[1].split("</tbody>", 1)[0]
    out = {}
    for row in re.findall(r"<tr>(.*?)</tr>", body):
        cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td>(.*?)</td>", row)]
        if cells:
            out[cells[0]] = cells[4].replace("&#x27;", "'")
    return out


@pytest.mark.parametrize(
    ("cost", "top", "said"),
    [
        # the top tier's requests cost what the top tier would have: nothing saved
        ("0.00200000", "0.00200000", "nothing (cost what the top tier would have)"),
        # more, by a share too small to print at 2 decimals
        ("10.00040000", "10.00000000", "nothing: cost $0.0004 (under 0.01%) more than the top"),
        # more, by an amount too small to print at 4 decimals
        ("0.00002000", "0.00001000", "nothing: cost $0.00001 (100%) more than the top"),
        # a saving
        ("0.00010000", "0.00200000", "$0.0019 (95%)"),
        ("9.99990000", "10.00000000", "$0.0001 (under 0.01%)"),
    ],
)
def test_each_row_s_saved_cell_says_what_it_means(org_a, alice_client, cost, top, said):
    _row(org_a, cost=cost, top=top, tier="pro")
    page = alice_client.get(f"/o/{org_a.slug}/usage/", PARAMS).content.decode()
    for table in ("By model used", "Quality by tier", "By policy"):
        cells = _saved_cells(page, table)
        [cell] = cells.values()
        assert cell.startswith(said), (table, cells)
        assert "none" not in cell and "(0%)" not in cell
        assert not re.search(r"\$0\.0000(?![0-9])", cell), cell  # $0.00001 is not zero


def test_the_top_tier_row_beside_a_saving_row(org_a, alice_client):
    _row(org_a, cost="0.00200000", top="0.00200000", tier="pro")
    _row(org_a, cost="0.00010000", top="0.00200000", tier="lite")
    page = alice_client.get(f"/o/{org_a.slug}/usage/", PARAMS).content.decode()
    assert _saved_cells(page, "By model used") == {
        "lite": "$0.0019 (95%)",
        "pro": "nothing (cost what the top tier would have)",
    }


def test_an_outsider_sees_none_of_it(org_a, charlie_client):
    _row(org_a, cost="0.00200000", top="0.00200000", tier="pro")
    assert charlie_client.get(f"/o/{org_a.slug}/usage/", PARAMS).status_code == 404


def test_one_request_is_counted_in_the_singular(org_a, alice_client):
    _row(org_a, cost="0.00200000", top="0.00200000", tier="pro")
    page = alice_client.get(f"/o/{org_a.slug}/usage/", PARAMS).content.decode()
    assert '<span class="big">1</span> request</div>' in page
    assert not re.search(r"\b1</span> requests\b|\b1 requests\b", page)
