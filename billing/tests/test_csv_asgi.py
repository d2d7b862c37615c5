"""The CSV downloads stream over ASGI (how Bonito is served) without Django's warning that
a StreamingHttpResponse consumed a synchronous iterator, and with every row; over WSGI too."""

import csv
import io
import uuid
import warnings
from datetime import timedelta
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient
from django.urls import reverse
from django.utils import timezone

from billing.models import UsageRecord
from core import csv_export

pytestmark = pytest.mark.django_db


@pytest.fixture
def rows(org_a, alice):
    now = timezone.now()
    UsageRecord.objects.bulk_create(
        UsageRecord(
            id=uuid.uuid4(),
            org=org_a,
            model_requested="chat-small",
            model_used="chat-small",
            provider="fake",
            status="success",
            cost=Decimal("0.001"),
            request_id=f"req-{i}",
            created_at=now - timedelta(seconds=i + 1),
        )
        for i in range(1203)  # more than two chunks of lines
    )
    return 1203


async def _body(response):
    return b"".join([chunk async for chunk in response])


@pytest.mark.parametrize("name", ["usage_csv", "usage_statement"])
def test_asgi_downloads_stream_without_the_sync_iterator_warning(alice, org_a, rows, name):
    client = AsyncClient()
    client.force_login(alice)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        response = async_to_sync(client.get)(reverse(name, args=[org_a.slug]))
        assert response.status_code == 200 and response.is_async
        body = async_to_sync(_body)(response).decode()
    assert not [w for w in caught if "StreamingHttpResponse" in str(w.message)]
    lines = list(csv.reader(io.StringIO(body)))
    if name == "usage_csv":
        assert len(lines) == rows + 1
        assert {line[1] for line in lines[1:]} == {f"req-{i}" for i in range(rows)}
    else:
        assert lines[-1][0] == "TOTAL" and lines[-1][2] == str(rows)


def test_wsgi_downloads_stay_synchronous(alice_client, org_a, rows):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        response = alice_client.get(reverse("usage_csv", args=[org_a.slug]))
        body = b"".join(response.streaming_content).decode()
    assert not response.is_async
    assert not [w for w in caught if "StreamingHttpResponse" in str(w.message)]
    assert len(body.splitlines()) == rows + 1


def test_the_chunks_are_whole_lines():
    response = csv_export.csv_response(
        filename="x.csv", header=["a"], rows=([f"=cmd{i}"] for i in range(1001))
    )
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert lines[0] == "a" and lines[1] == "'=cmd0" and len(lines) == 1002
