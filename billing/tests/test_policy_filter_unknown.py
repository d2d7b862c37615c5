"""?policy= names a policy the org has, or one its requests recorded (a deleted policy's):
anything else is a 400, as an unknown id is, never a 200 of zeros (docs/smart-routing.md,
"To compare one policy's A/B arms alone"). Only this org's policies and requests are looked
at: another org's policy names are not told apart from names no one has."""

import pytest

from billing.tests.test_smart_policy_filter import (  # noqa: F401 (the fixture)
    _analytics,
    _log_ids,
    _row,
    _smart_policy,
    traffic,
)
from gateway.tests.conftest import ACTOR

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("traffic")]


@pytest.mark.parametrize("value", ["-1", "-42", "nosuch", "Saver", "saver-", "0", "9999999"])
def test_a_policy_no_one_has_is_a_400_on_every_way_in(alice_client, org_a, value):
    said = (
        f"There is no policy {value} in this organization."
        if value.isdigit()
        else f"There is no policy named {value!r} in this organization."
    )
    for url in ("/api/gateway/analytics", "/api/gateway/usage", "/api/gateway/logs"):
        response = alice_client.get(url, {"policy": value})
        assert response.status_code == 400, (url, response.content)
        assert response.json() == {"policy": [said]}
    for page in ("usage", "logs"):
        response = alice_client.get(f"/o/{org_a.slug}/{page}/", {"policy": value})
        assert response.status_code == 400
        assert [str(m) for m in response.context["messages"]] == [f"policy: {said}"]
    csv_response = alice_client.get(f"/o/{org_a.slug}/usage/export.csv", {"policy": value})
    assert csv_response.status_code == 400


def test_a_deleted_policy_s_name_still_finds_its_requests(alice_client, org_a):
    from governance import services as gov
    from governance.models import RoutingPolicy

    other = RoutingPolicy.objects.get(org=org_a, name="other")
    gov.routing_policy_delete(actor=ACTOR, routing_policy=other)
    response = _analytics(alice_client, policy="other")
    assert response.status_code == 200
    assert response.json()["totals"]["requests"] == 2
    assert _log_ids(alice_client, policy="other") == ["other-rules", "other-strong"]


def test_a_deleted_policy_named_by_digits_is_found_by_its_requests(alice_client, org_a):
    from governance import services as gov

    named = _smart_policy(org_a, "2026")
    _row(org_a, policy="2026", tier="lite", request_id="digits")
    gone_id = named.id
    gov.routing_policy_delete(actor=ACTOR, routing_policy=named)
    assert _log_ids(alice_client, policy="2026") == ["digits"]
    # its id is gone: an id no policy has
    response = _analytics(alice_client, policy=gone_id)
    assert response.status_code == 400


def test_a_policy_with_no_requests_yet_is_an_empty_answer(alice_client, org_a):
    _smart_policy(org_a, "fresh")
    response = _analytics(alice_client, policy="fresh")
    assert response.status_code == 200 and response.json()["totals"]["requests"] == 0


def test_another_org_s_names_are_answered_as_names_no_one_has(
    alice_client, charlie_client, org_a, org_b
):
    """Globex's policy "only-theirs" and the requests it recorded are Globex's: to Acme the
    name is unknown, with the same words as a name no one has."""
    _smart_policy(org_b, "only-theirs")
    _row(org_b, policy="only-theirs", tier="lite", request_id="theirs-too")
    _row(org_b, policy="gone-theirs", tier="lite", request_id="theirs-gone")  # deleted
    for name in ("only-theirs", "gone-theirs"):
        response = _analytics(alice_client, policy=name)
        assert response.status_code == 400
        assert response.json() == {
            "policy": [f"There is no policy named {name!r} in this organization."]
        }
        assert charlie_client.get(
            "/api/gateway/analytics", {"range": "24h", "policy": name}
        ).status_code == (200)


def test_the_name_check_and_the_filter_read_an_index_of_smart_routed_rows_only(org_a):
    """A name no policy has was a scan of all the org's usage rows; now the partial index
    of rows that carry a policy answers it (and the policy= filter), on both databases."""
    from django.db import connection

    from billing.models import UsageRecord, of_policy

    query = of_policy(UsageRecord.objects.filter(org=org_a), "nosuch").order_by("-created_at")
    sql, params = query.values("id")[:1].query.sql_with_params()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")  # the rows here are few
            cursor.execute("EXPLAIN " + sql, params)
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        plan = " ".join(str(part) for row in cursor.fetchall() for part in row)
    # (on PostgreSQL each partition's copy of it, named by its columns)
    assert "gateway_req_policy_idx" in plan or "org_id_routing_policy_created_at_idx" in plan, plan
    with connection.cursor() as cursor:  # partial: rows without a policy are not in it
        indexes = connection.introspection.get_constraints(cursor, UsageRecord._meta.db_table)
    assert indexes["gateway_req_policy_idx"]["columns"] == [
        "org_id",
        "routing_policy",
        "created_at",
    ]
