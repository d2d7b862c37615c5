"""The logs page and the REST logs API count an org's rows up to COUNT_LIMIT (10,000) and
say "more than" past it, so a tenant with millions of rows gets its page in milliseconds;
pages go on past the counted ones while rows remain, and no page number is a 500."""

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from billing import selectors
from billing.models import UsageRecord
from billing.pagination import COUNT_LIMIT, BoundedPaginator

pytestmark = pytest.mark.django_db


def _rows(org, n, *, status="success"):
    """n rows a second apart, newest a minute ago; request ids number them newest first."""
    now = timezone.now() - timedelta(minutes=1)
    UsageRecord.objects.bulk_create(
        UsageRecord(
            id=uuid.uuid4(),
            org=org,
            model_requested="chat-small",
            model_used="chat-small",
            provider="fake",
            status=status,
            request_id=f"req-{i}",
            input_tokens=10,
            output_tokens=5,
            cost=Decimal("0.002"),
            created_at=now - timedelta(seconds=i),
        )
        for i in range(n)
    )


def _page(client, org, query=""):
    return client.get(reverse("logs", args=[org.slug]) + query)


def test_it_counts_exactly_up_to_the_limit(alice_client, org_a):
    _rows(org_a, COUNT_LIMIT)
    response = _page(alice_client, org_a)
    paginator = response.context["page"].paginator
    assert (paginator.count, paginator.count_is_exact, paginator.num_pages) == (10_000, True, 200)
    assert b"<p>10000 requests from" in response.content
    last = _page(alice_client, org_a, "?page=200")
    assert last.context["page"][49].request_id == "req-9999"
    assert b"Page 200 of 200" in last.content and b"Older" not in last.content
    # Past the last page: the last page, as Django's paginator does.
    assert _page(alice_client, org_a, "?page=201").context["page"].number == 200


def test_past_the_limit_it_says_more_than_and_the_pages_go_on(alice_client, org_a, org_b):
    _rows(org_a, COUNT_LIMIT + 1)
    _rows(org_b, 3)
    response = _page(alice_client, org_a)
    paginator = response.context["page"].paginator
    assert (paginator.count, paginator.count_is_exact) == (10_000, False)
    assert b"More than 10000 requests from" in response.content
    assert b"Page 1 of more than 200" in response.content
    page_200 = _page(alice_client, org_a, "?page=200")
    assert b"page=201" in page_200.content  # the Older link: a row remains
    page_201 = _page(alice_client, org_a, "?page=201")
    assert [r.request_id for r in page_201.context["page"]] == ["req-10000"]
    assert b"Older" not in page_201.content
    # No such page (the rows end at 201), a page number too large for any database: the
    # last counted page, never a 500.
    for query in ("?page=202", "?page=99999999999999999999999", "?page=-1", "?page=abc"):
        response = _page(alice_client, org_a, query)
        assert response.status_code == 200, query
        assert response.context["page"].object_list, query


def test_the_api_says_whether_its_count_is_exact(alice_client, charlie_client, org_a, org_b):
    _rows(org_a, COUNT_LIMIT + 1)
    _rows(org_b, 3, status="rejected")
    body = alice_client.get("/api/gateway/logs").json()
    assert (body["count"], body["count_is_exact"], len(body["results"])) == (10_000, False, 50)
    assert alice_client.get("/api/gateway/logs?page=200").json()["next"].endswith("page=201")
    last = alice_client.get("/api/gateway/logs?page=201").json()
    assert [r["request_id"] for r in last["results"]] == ["req-10000"] and last["next"] is None
    assert alice_client.get("/api/gateway/logs?page=202").status_code == 404
    assert alice_client.get("/api/gateway/logs?page=99999999999999999999999").status_code == 404
    # A filter under the limit, and the outsider: exact counts of their own rows only.
    assert alice_client.get("/api/gateway/logs?status=rejected").json() == {
        "count": 0,
        "count_is_exact": True,
        "next": None,
        "previous": None,
        "results": [],
    }
    theirs = charlie_client.get("/api/gateway/logs").json()
    assert (theirs["count"], theirs["count_is_exact"]) == (3, True)
    assert {r["status"] for r in theirs["results"]} == {"rejected"}


def test_the_count_reads_at_most_one_row_past_the_limit(org_a):
    _rows(org_a, 3)
    qs, _since, _until = selectors.usage_records(org_a, {}, "30d")
    with CaptureQueriesContext(connection) as captured:
        paginator = BoundedPaginator(qs, 50)
        assert (paginator.count, paginator.count_is_exact) == (3, True)
    (count_sql,) = [q["sql"] for q in captured.captured_queries]
    assert "COUNT(*)" in count_sql and f"LIMIT {COUNT_LIMIT + 1}" in count_sql


def test_a_row_written_after_the_count_opens_a_next_page_not_an_error(org_a):
    _rows(org_a, 50)
    qs, _since, _until = selectors.usage_records(org_a, {}, "30d")
    paginator = BoundedPaginator(qs, 50)
    assert paginator.num_pages == 1  # counted: one page
    _rows(org_a, 1)  # a request lands between the count and the page
    page = paginator.get_page(1)
    assert page.has_next() and page.next_page_number() == 2
