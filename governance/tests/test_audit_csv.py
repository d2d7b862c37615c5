"""The Audit log page's CSV export: the rows its filters select (every page), admins only,
the org's own rows, no secret, and no cell a spreadsheet would run as a formula."""

import csv
import io
import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from gateway import services
from orgs.audit import Actor
from orgs.models import AuditLog

pytestmark = pytest.mark.django_db

HOSTILE = ['=HYPERLINK("http://evil.test","x")', "+1+1", "-2+3", "@SUM(A1)", "\tTAB"]


@pytest.fixture
def history(org_a, org_b, alice, bob, charlie):
    as_alice = Actor(user=alice, via="web")
    key, raw = services.api_key_create(actor=as_alice, org=org_a, name="prod-app")
    _key, rotated = services.api_key_rotate(actor=Actor(user=bob, via="api"), key=key)
    services.provider_save(
        actor=as_alice,
        org=org_a,
        name="openai",
        kind="openai",
        credentials={"api_key": "sk-live-SECRETSECRETSECRET1234"},
    )
    for text in HOSTILE:  # names and labels other people typed
        services.api_key_create(actor=as_alice, org=org_a, name=text.strip())
        AuditLog.objects.create(
            org=org_a, actor_label=text, action="key.note", target_type="apikey", target_repr=text
        )
    _theirs, theirs = services.api_key_create(
        actor=Actor(user=charlie), org=org_b, name="globex-secret-app"
    )
    return {"secrets": [raw, rotated, theirs, "SECRETSECRET"]}


def _export(client, org, query=""):
    response = client.get(reverse("audit_csv", args=[org.slug]) + query)
    body = b"".join(response.streaming_content).decode() if response.streaming else ""
    return response, body


def _rows(body):
    return list(csv.DictReader(io.StringIO(body)))


def test_it_exports_the_orgs_rows_and_no_secret(alice_client, org_a, history):
    response, body = _export(alice_client, org_a)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = _rows(body)
    assert len(rows) == AuditLog.objects.filter(org=org_a).count()
    assert "globex-secret-app" not in body
    for secret in history["secrets"]:
        assert secret not in body
    rotate = next(r for r in rows if r["action"] == "api_key.rotate")
    assert rotate["actor_label"] == "bob@acme.test" and rotate["via"] == "api"
    assert json.loads(rotate["changes"])["after"]["name"] == "prod-app"


def test_no_cell_starts_a_formula(alice_client, org_a, history):
    _response, body = _export(alice_client, org_a)
    cells = [cell for row in csv.reader(io.StringIO(body)) for cell in row]
    assert cells and not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    notes = [r for r in _rows(body) if r["action"] == "key.note"]
    assert sorted(r["target_repr"] for r in notes) == sorted("'" + text for text in HOSTILE)


def test_it_exports_what_the_filters_select(alice_client, org_a, history):
    _response, body = _export(alice_client, org_a, "?actor=bob&action=api_key.")
    assert [r["action"] for r in _rows(body)] == ["api_key.rotate"]
    _response, body = _export(alice_client, org_a, "?object_type=providerconnection")
    rows = _rows(body)
    assert rows and {r["target_type"] for r in rows} == {"providerconnection"}
    response, body = _export(alice_client, org_a, "?since=nonsense")
    assert response.status_code == 400 and "since" in response.content.decode()


def test_only_admins_export_and_outsiders_get_404(
    bob_client, vera_client, charlie_client, org_a, history
):
    assert _export(bob_client, org_a)[0].status_code == 403
    assert _export(vera_client, org_a)[0].status_code == 403
    assert _export(charlie_client, org_a)[0].status_code == 404


def test_the_page_links_the_export_with_its_filters(alice_client, org_a, history):
    html = alice_client.get(reverse("audit_log", args=[org_a.slug]) + "?actor=bob&page=1")
    link = reverse("audit_csv", args=[org_a.slug]) + "?actor=bob"
    assert f'href="{link}"' in html.content.decode()


def test_the_export_costs_a_fixed_number_of_queries(alice_client, org_a, alice):
    def export_queries():
        with CaptureQueriesContext(connection) as queries:
            response, body = _export(alice_client, org_a)
        assert response.status_code == 200
        return len(queries), len(_rows(body))

    _export(alice_client, org_a)  # the session, caches warmed
    as_alice = Actor(user=alice, via="web")
    services.api_key_create(actor=as_alice, org=org_a, name="one")
    few, n_few = export_queries()
    for i in range(30):
        services.api_key_create(actor=as_alice, org=org_a, name=f"k{i}")
    many, n_many = export_queries()
    assert n_many == n_few + 30 and many == few, (few, many)
