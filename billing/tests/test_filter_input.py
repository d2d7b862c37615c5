"""Bad filter input on every usage, logs, analytics and statement endpoint: a 400 that
names the parameter, never a 500, never another org's data, never a silently different
range (issue 12: `since=2026-02-30`, `key=²`, `month=9999-12` answered 500)."""

import csv
import io
import uuid
from datetime import timedelta
from decimal import Decimal
from urllib.parse import quote

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.models import UsageRecord
from gateway import services
from gateway.tests.conftest import ACTOR
from orgs import services as org_services

pytestmark = pytest.mark.django_db

BAD_MOMENTS = [
    "2026-02-30",  # no such day
    "2026-02-30T10:00:00Z",
    "2026-13-01",
    "2026-00-10",
    "2026-01-01T25:00",
    "2026-01-01T10:00+99:00",
    "0000-01-01",  # year 0 does not exist
    "0001-01-01",  # exists, but arithmetic on it overflows: out of the accepted range
    "9999-12-31",
    "9999-12-31T23:59:59Z",
    "10000-01-01",
    "٢٠٢٦-٠١-٠١",  # Arabic-Indic digits: Python's int() reads them, the API does not
    "2026-0²-01",
    "２０２６-01-01",  # full-width digits
    "yesterday",
    "2026-01-01\x00",
    "2026",
]
BAD_IDS = [
    "²",  # str.isdigit() is True, int() raises
    "٣",  # int() reads it as 3
    "-1",
    "0",
    "1.5",
    "1e3",
    "0x10",
    " 1",
    "99999999999999999999999",  # beyond 64 bits
    "9223372036854775808",  # 2**63
    "abc",
    "1\x00",
]
BAD_MONTHS = [
    "9999-12",  # computing the next month overflowed
    "0000-01",
    "0001-01",
    "10000-01",
    "2026-13",
    "2026-00",
    "2026-0",
    "2026-1",
    "2026-²",
    "٢٠٢٦-١١",
    "2026-11-01",
    "-2026-11",
    "2026--11",
    "soon",
    "2026-11\x00",
]
CASES = (
    [("since", v) for v in BAD_MOMENTS]
    + [("until", v) for v in BAD_MOMENTS]
    + [("key", v) for v in BAD_IDS]
    + [("team", v) for v in BAD_IDS]
    + [
        ("range", "5y"),
        ("range", "²4h"),
        ("status", "weird"),
        ("model", "chat\x00small"),
        ("provider", "fa\x00ke"),
    ]
)
LOG_CASES = CASES + [("ordering", "name"), ("ordering", "-created_at\x00")]


def _q(name, value):
    return f"?{name}={quote(value)}"


@pytest.fixture
def acme_usage(org_a, alice):
    key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="app")
    UsageRecord.objects.create(
        id=uuid.uuid4(),
        org=org_a,
        key=key,
        model_requested="chat-small",
        model_used="chat-small",
        provider="fake",
        status="success",
        input_tokens=10,
        output_tokens=5,
        cost=Decimal("0.002"),
        latency_ms=120,
        created_at=timezone.now() - timedelta(minutes=5),
    )
    return key


# ------------------------------------------------------------------------------ REST
@pytest.mark.parametrize(
    "path", ["/api/gateway/logs", "/api/gateway/usage", "/api/gateway/analytics"]
)
@pytest.mark.parametrize("name,value", LOG_CASES)
def test_rest_filters_refuse_bad_values_naming_the_parameter(
    alice_client, acme_usage, path, name, value
):
    if name == "ordering" and path != "/api/gateway/logs":
        pytest.skip("only logs are ordered")
    response = alice_client.get(path + _q(name, value))
    assert response.status_code == 400, response.content[:300]
    body = response.json()
    assert list(body) == [name] and body[name][0], body


# ------------------------------------------------------------------------------ dashboard pages
@pytest.mark.parametrize("page", ["logs", "usage"])
@pytest.mark.parametrize("name,value", CASES)
def test_dashboard_pages_refuse_bad_values_with_a_400_and_the_message(
    alice_client, org_a, acme_usage, page, name, value
):
    response = alice_client.get(reverse(page, args=[org_a.slug]) + _q(name, value))
    assert response.status_code == 400, response.content[:300]
    flashes = [str(m) for m in response.context["messages"]]
    assert len(flashes) == 1 and flashes[0].startswith(f"{name}: "), flashes


@pytest.mark.parametrize("name,value", LOG_CASES)
def test_the_csv_export_refuses_bad_values_instead_of_exporting_another_range(
    alice_client, org_a, acme_usage, name, value
):
    response = alice_client.get(reverse("usage_csv", args=[org_a.slug]) + _q(name, value))
    assert response.status_code == 400, response.content[:300]
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode().startswith(f"{name}: ")


@pytest.mark.parametrize("value", BAD_MONTHS)
def test_the_statement_refuses_bad_months(alice_client, org_a, acme_usage, value):
    response = alice_client.get(reverse("usage_statement", args=[org_a.slug]) + _q("month", value))
    assert response.status_code == 400, response.content[:300]
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode().startswith("month: ")


# ------------------------------------------------------------------------------ what is accepted
def test_empty_parameters_mean_no_filter(alice_client, org_a, acme_usage):
    """The dashboard's filter form sends every field, empty ones included."""
    empty = "?range=&since=&until=&model=&provider=&key=&team=&status=&ordering="
    assert alice_client.get(reverse("logs", args=[org_a.slug]) + empty).status_code == 200
    assert alice_client.get(reverse("usage", args=[org_a.slug]) + empty).status_code == 200
    assert alice_client.get(reverse("usage_csv", args=[org_a.slug]) + empty).status_code == 200
    assert alice_client.get("/api/gateway/logs" + empty).json()["count"] == 1
    assert alice_client.get("/api/gateway/usage" + empty).json()["requests"] == 1
    statement = alice_client.get(reverse("usage_statement", args=[org_a.slug]) + "?month=")
    assert statement.status_code == 200


def test_good_values_still_filter(alice_client, org_a, acme_usage):
    today = timezone.now().date()
    since = (today - timedelta(days=1)).isoformat()
    until = (today + timedelta(days=1)).isoformat()
    query = f"?since={since}&until={until}&key={acme_usage.id}&model=chat-small&status=success"
    assert alice_client.get("/api/gateway/logs" + query).json()["count"] == 1
    assert alice_client.get("/api/gateway/usage" + query).json()["requests"] == 1
    assert alice_client.get("/api/gateway/analytics" + query).json()["totals"]["requests"] == 1
    page = alice_client.get(reverse("logs", args=[org_a.slug]) + query)
    assert page.status_code == 200 and page.context["page"].paginator.count == 1
    rows = list(
        csv.reader(
            io.StringIO(
                b"".join(
                    alice_client.get(
                        reverse("usage_csv", args=[org_a.slug]) + query
                    ).streaming_content
                ).decode()
            )
        )
    )
    assert len(rows) == 2
    month = f"{timezone.now():%Y-%m}"
    statement = alice_client.get(reverse("usage_statement", args=[org_a.slug]) + f"?month={month}")
    assert statement.status_code == 200
    lines = list(csv.reader(io.StringIO(b"".join(statement.streaming_content).decode())))
    assert lines[-1] == ["TOTAL", "", "1", *lines[1][3:5], "0.002000"]
    # The edges of the accepted range of years, and the last month before the edge.
    edge = "?since=1970-01-01&until=2999-12-31T23:59:59Z"
    assert alice_client.get("/api/gateway/usage" + edge).status_code == 200
    assert alice_client.get("/api/gateway/analytics" + edge).status_code == 200
    statement = alice_client.get(reverse("usage_statement", args=[org_a.slug]) + "?month=2999-12")
    assert statement.status_code == 200


# ------------------------------------------------------------------------------ other orgs' ids
def test_another_orgs_key_and_team_ids_are_refused_like_ids_that_do_not_exist(
    alice_client, org_a, org_b, acme_usage
):
    their_key, _raw = services.api_key_create(actor=ACTOR, org=org_b, name="globex-app")
    their_team = org_services.team_create(actor=ACTOR, org=org_b, name="Globex R&D")
    missing = max(their_key.id, their_team.id, acme_usage.id) + 1000
    for name, theirs in (("key", their_key.id), ("team", their_team.id)):
        for path in ("/api/gateway/logs", "/api/gateway/usage", "/api/gateway/analytics"):
            a = alice_client.get(f"{path}?{name}={theirs}")
            b = alice_client.get(f"{path}?{name}={missing}")
            assert a.status_code == b.status_code == 400
            assert a.json()[name][0].replace(str(theirs), "N") == b.json()[name][0].replace(
                str(missing), "N"
            )
            assert "globex" not in a.content.decode().lower()
        for page in ("logs", "usage", "usage_csv"):
            a = alice_client.get(reverse(page, args=[org_a.slug]) + f"?{name}={theirs}")
            b = alice_client.get(reverse(page, args=[org_a.slug]) + f"?{name}={missing}")
            assert a.status_code == b.status_code == 400


def test_log_details_of_bad_or_foreign_ids_are_404(alice_client, charlie_client, org_a, org_b):
    record = UsageRecord.objects.create(
        id=uuid.uuid4(), org=org_a, status="success", created_at=timezone.now()
    )
    for bad in ("²", "٣", "-1", "99999999999999999999999", "not-a-uuid", str(uuid.uuid4())):
        assert alice_client.get(f"/api/gateway/logs/{quote(bad)}").status_code == 404
        assert alice_client.get(reverse("log_detail", args=[org_a.slug, bad])).status_code == 404
    assert alice_client.get(f"/api/gateway/logs/{record.id}").status_code == 200
    assert charlie_client.get(f"/api/gateway/logs/{record.id}").status_code == 404
    assert (
        charlie_client.get(reverse("log_detail", args=[org_b.slug, record.id])).status_code == 404
    )


@pytest.mark.parametrize(
    "path",
    [
        "/api/gateway/audit?action=",
        "/api/gateway/models?search=",
        "/api/gateway/models?provider=",
        "/api/gateway/deployments?provider=",
        "/api/gateway/keys?anything=",
    ],
)
def test_no_rest_list_takes_a_nul_into_a_query(alice_client, path):
    """PostgreSQL refuses NUL in text, which made any filter holding one a 500 there."""
    response = alice_client.get(path + "a%00b")
    assert response.status_code == 400
    assert "NUL" in next(iter(response.json().values()))[0]
