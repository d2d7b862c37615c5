"""The policy filter (?policy=): one smart routing policy's requests, by its id or its name,
or the org default's, on the analytics and usage API, the Usage page, the logs (page, REST,
CSV); so the A/B comparison is of one policy's arms. Another org's policy id is answered as
an unknown one; a malformed value is a 400 that names the filter; never a 500."""

import csv
import io
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing.models import UsageRecord
from billing.services import rollup_recent
from gateway.tests.conftest import ACTOR

pytestmark = pytest.mark.django_db
NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
AN_HOUR_AGO = NOW - timedelta(hours=1)


def _row(org, *, policy, tier, classifier="rules", cost="0.0001", at=None, **kw):
    return UsageRecord.objects.create(
        id=uuid.uuid4(),
        org=org,
        created_at=at or AN_HOUR_AGO,
        model_requested="auto",
        model_used=tier or "plain",
        status="success",
        input_tokens=100,
        output_tokens=50,
        cost=Decimal(cost),
        cost_top_tier=Decimal("0.002") if tier else None,
        route_tier=tier,
        routing_policy=policy,
        route_classifier=classifier if tier else "",
        route_score=0.2 if tier else None,
        request_id=kw.pop("request_id", uuid.uuid4().hex),
        **kw,
    )


def _smart_policy(org, name):
    from governance import services as gov

    return gov.routing_policy_save(
        actor=ACTOR, org=org, name=name, strategy="smart", models=["lite", "pro"], smart={}
    )


@pytest.fixture
def traffic(org_a, org_b):
    """Acme: policy saver (rules vs learned A/B), policy other (rules vs strong), the org
    default, and a request no smart routing chose; Globex: a policy of its own, named like
    Acme's."""
    saver, other = _smart_policy(org_a, "saver"), _smart_policy(org_a, "other")
    foreign = _smart_policy(org_b, "saver")
    for _ in range(3):
        _row(org_a, policy="saver", tier="lite", classifier="rules", request_id="saver-rules")
    _row(org_a, policy="saver", tier="lite", classifier="learned", request_id="saver-learned")
    _row(org_a, policy="other", tier="lite", classifier="rules", request_id="other-rules")
    _row(org_a, policy="other", tier="pro", classifier="strong", request_id="other-strong")
    _row(org_a, policy="", tier="lite", classifier="rules", request_id="default")
    _row(org_a, policy="", tier="", request_id="not-smart")
    _row(org_b, policy="saver", tier="lite", classifier="learned", request_id="theirs")
    return {"saver": saver, "other": other, "foreign": foreign}


def _analytics(client, **params):
    return client.get("/api/gateway/analytics", {"range": "24h", **params})


def _arms(data) -> dict:
    return {r["classifier"]: r["requests"] for r in data["smart_routing"]["by_classifier"]}


def _log_ids(client, **params) -> list:
    data = client.get("/api/gateway/logs", {"range": "24h", **params}).json()
    return sorted(r["request_id"] for r in data["results"])


# ------------------------------------------------------------------------------ what it keeps
@pytest.mark.parametrize("by", ["id", "name"])
def test_it_compares_one_policy_s_ab_arms_alone(alice_client, traffic, by):
    everything = _analytics(alice_client).json()
    assert _arms(everything) == {"rules": 5, "learned": 1, "strong": 1}  # mixed
    for name, arms in (("saver", {"rules": 3, "learned": 1}), ("other", {"rules": 1, "strong": 1})):
        value = traffic[name].id if by == "id" else name
        data = _analytics(alice_client, policy=value).json()
        assert _arms(data) == arms
        assert [p["policy"] for p in data["smart_routing"]["by_policy"]] == [name]
        assert data["totals"]["requests"] == sum(arms.values())
        assert data["smart_routing"]["requests"] == sum(arms.values())


def test_the_org_default_is_filtered_by_its_name_in_the_analytics(alice_client, traffic):
    data = _analytics(alice_client, policy="(org default)").json()
    assert _arms(data) == {"rules": 1}
    assert data["smart_routing"]["by_policy"][0]["policy"] == "(org default)"
    assert data["totals"]["requests"] == 1  # not the request no smart routing chose
    assert _log_ids(alice_client, policy="(org default)") == ["default"]


def test_the_logs_rest_csv_and_usage_api_keep_to_the_policy(alice_client, org_a, traffic):
    saver = traffic["saver"]
    assert _log_ids(alice_client, policy=saver.id) == ["saver-learned"] + ["saver-rules"] * 3
    assert _log_ids(alice_client, policy="other") == ["other-rules", "other-strong"]
    usage = alice_client.get("/api/gateway/usage", {"policy": "other"}).json()
    assert usage["requests"] == 2 and {m["name"] for m in usage["by_model"]} == {"lite", "pro"}
    response = alice_client.get(f"/o/{org_a.slug}/usage/export.csv", {"policy": saver.id})
    assert response.status_code == 200
    body = b"".join(response.streaming_content) if response.streaming else response.content
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert sorted(r["request_id"] for r in rows) == ["saver-learned"] + ["saver-rules"] * 3
    assert {r["routing_policy"] for r in rows} == {"saver"}


def test_a_deleted_policy_s_requests_are_still_found_by_its_name(alice_client, traffic):
    from governance import services as gov

    gov.routing_policy_delete(actor=ACTOR, routing_policy=traffic["other"])
    assert _log_ids(alice_client, policy="other") == ["other-rules", "other-strong"]


def test_a_policy_named_by_digits_is_found_by_its_name(alice_client, org_a, traffic):
    named = _smart_policy(org_a, "2026")
    _row(org_a, policy="2026", tier="lite", request_id="digits")
    assert str(named.id) != "2026"
    assert _log_ids(alice_client, policy="2026") == ["digits"]
    assert _log_ids(alice_client, policy=named.id) == ["digits"]


def test_the_policy_filter_reads_raw_rows_once_hours_are_rolled_up(org_a, traffic):
    from billing.selectors import usage_query

    rollup_recent(now=NOW + timedelta(hours=2))
    query = usage_query(org_a, {"range": "7d", "policy": "saver"})
    assert query.rollup_parts == []
    assert query.totals()["requests"] == 4
    assert usage_query(org_a, {"range": "7d"}).rollup_parts  # unfiltered: rollups


# ------------------------------------------------------------------------------ refused values
def test_another_org_s_policy_id_is_answered_as_an_unknown_id(alice_client, traffic):
    foreign = traffic["foreign"].id
    unknown = max(foreign, traffic["saver"].id, traffic["other"].id) + 1000
    theirs = _analytics(alice_client, policy=foreign)
    nobody = _analytics(alice_client, policy=unknown)
    assert theirs.status_code == nobody.status_code == 400
    assert theirs.json() == {"policy": [f"There is no policy {foreign} in this organization."]}
    assert nobody.json() == {"policy": [f"There is no policy {unknown} in this organization."]}
    logs = alice_client.get("/api/gateway/logs", {"policy": foreign})
    assert logs.status_code == 400 and "theirs" not in logs.content.decode()


def test_another_org_s_policy_name_finds_none_of_its_requests(
    charlie_client, alice_client, traffic
):
    # Globex has a policy named saver too: each sees its own requests only.
    assert _log_ids(charlie_client, policy="saver") == ["theirs"]
    assert "theirs" not in _log_ids(alice_client, policy="saver")
    assert charlie_client.get("/api/gateway/logs", {"policy": traffic["saver"].id}).status_code == (
        400
    )


BAD = [
    "not a name",
    "saver;drop",
    "a\x00b",
    "x" * 64,
    "ünïcode",
    "1.5",
    "a/b",
    "(org  default)",
    "%",
]


@pytest.mark.parametrize("value", BAD)
def test_a_malformed_policy_is_a_400_that_names_it(alice_client, org_a, traffic, value):
    for url in ("/api/gateway/analytics", "/api/gateway/usage", "/api/gateway/logs"):
        response = alice_client.get(url, {"policy": value})
        assert response.status_code == 400, (url, response.status_code)
        assert list(response.json()) == ["policy"]
    for page in ("usage", "logs"):
        response = alice_client.get(f"/o/{org_a.slug}/{page}/", {"policy": value})
        assert response.status_code == 400
        flashes = [str(m) for m in response.context["messages"]]
        assert len(flashes) == 1 and flashes[0].startswith("policy: "), flashes
    csv_response = alice_client.get(f"/o/{org_a.slug}/usage/export.csv", {"policy": value})
    assert csv_response.status_code == 400
    assert csv_response.content.decode().startswith("policy: ")


@pytest.mark.parametrize("value", ["0", "99999999999999999999999", "123456789"])
def test_an_id_no_policy_has_is_a_400_everywhere(alice_client, org_a, traffic, value):
    assert _analytics(alice_client, policy=value).status_code == 400
    assert alice_client.get(f"/o/{org_a.slug}/usage/", {"policy": value}).status_code == 400


# ------------------------------------------------------------------------------ the pages
def test_the_filter_form_offers_the_org_s_smart_policies(
    alice_client, charlie_client, org_a, org_b, traffic
):
    from governance import services as gov

    gov.routing_policy_save(
        actor=ACTOR, org=org_a, name="plainfail", strategy="failover", models=["lite"]
    )
    for page in ("usage", "logs"):
        html = alice_client.get(f"/o/{org_a.slug}/{page}/", {"policy": "saver"}).content.decode()
        menu = re.findall(r'<select name="policy">(.*?)</select>', html, re.S)[0]
        values = re.findall(r'<option value="([^"]*)"', menu)
        assert values == ["", "(org default)", "other", "saver"]  # smart ones, by name
        assert '<option value="saver" selected>' in menu
        assert charlie_client.get(f"/o/{org_a.slug}/{page}/").status_code == 404


def test_the_usage_menu_offers_policies_that_routed_the_range_s_requests_and_are_gone(
    alice_client, org_a, traffic
):
    """A policy deleted, or no longer smart, after it routed requests dropped out of the
    Usage page's menu: its rows could only be reached by typing ?policy=name."""
    from governance import services as gov

    gone = _smart_policy(org_a, "gone")
    _row(org_a, policy="gone", tier="lite", request_id="gone-1")
    gov.routing_policy_delete(actor=ACTOR, routing_policy=gone)
    _row(org_a, policy="other", tier="lite", request_id="other-more")
    gov.routing_policy_save(
        actor=ACTOR, org=org_a, name="other", strategy="failover", models=["lite"]
    )
    html = alice_client.get(f"/o/{org_a.slug}/usage/").content.decode()
    menu = re.findall(r'<select name="policy">(.*?)</select>', html, re.S)[0]
    assert re.findall(r'<option value="([^"]*)"', menu) == [
        "",
        "(org default)",
        "saver",
        "gone",
        "other",
    ]
    page = alice_client.get(f"/o/{org_a.slug}/usage/", {"policy": "gone"})
    assert page.status_code == 200
    assert [p["policy"] for p in page.context["a"]["smart_routing"]["by_policy"]] == ["gone"]
    # Out of the page's range, a gone policy is not offered (the menu reads the range's rows).
    earlier = {
        "since": (NOW - timedelta(days=9)).isoformat(),
        "until": (NOW - timedelta(days=8)).isoformat(),
    }
    response = alice_client.get(f"/o/{org_a.slug}/usage/", earlier)
    assert response.status_code == 200
    html = response.content.decode()
    menu = re.findall(r'<select name="policy">(.*?)</select>', html, re.S)[0]
    assert "gone" not in menu


def test_the_usage_page_s_ab_table_keeps_to_the_policy(alice_client, org_a, traffic):
    response = alice_client.get(f"/o/{org_a.slug}/usage/", {"policy": "other"})
    arms = {r["classifier"] for r in response.context["a"]["smart_routing"]["by_classifier"]}
    assert arms == {"rules", "strong"}
    by_id = alice_client.get(f"/o/{org_a.slug}/usage/", {"policy": traffic["other"].id})
    html = by_id.content.decode()
    menu = re.findall(r'<select name="policy">(.*?)</select>', html, re.S)[0]
    # the id asked for selects the policy's own entry (not a second entry for the id)
    assert re.findall(r'<option value="([^"]*)"', menu) == ["", "(org default)", "other", "saver"]
    assert '<option value="other" selected>' in menu and menu.count(" selected") == 1


def test_the_logs_live_tail_is_told_the_policy_it_keeps_to(alice_client, org_a, traffic):
    html = alice_client.get(
        f"/o/{org_a.slug}/logs/", {"policy": traffic["saver"].id}
    ).content.decode()
    assert 'data-policy="saver"' in html
    html = alice_client.get(f"/o/{org_a.slug}/logs/", {"policy": "(org default)"}).content.decode()
    assert 'data-policy=""' in html
    assert "data-policy" not in alice_client.get(f"/o/{org_a.slug}/logs/").content.decode()


def test_a_name_of_digits_that_is_another_policy_s_id_is_never_that_policy_s_data(
    alice_client, org_a, traffic
):
    """policy=N where N is one policy's id and another's name answered with the first's
    requests, and the dashboard's menu offered N for the second: its own page showed
    another policy's traffic. Now such a value is a 400 that gives both ids, and the menu
    gives a policy named by digits by its id."""
    saver = traffic["saver"]
    named = _smart_policy(org_a, str(saver.id))
    _row(org_a, policy=str(saver.id), tier="lite", request_id="digits")
    said = (
        f"{saver.id} is the id of policy 'saver' and also a policy's name; give an id to say "
        f"which: {saver.id} for 'saver', {named.id} for the one named '{saver.id}'."
    )
    for url in ("/api/gateway/analytics", "/api/gateway/usage", "/api/gateway/logs"):
        response = alice_client.get(url, {"range": "24h", "policy": saver.id})
        assert response.status_code == 400, url
        assert response.json() == {"policy": [said]}
    assert _log_ids(alice_client, policy=named.id) == ["digits"]
    assert _log_ids(alice_client, policy="saver") != ["digits"]
    page = alice_client.get(f"/o/{org_a.slug}/usage/", {"range": "24h", "policy": named.id})
    assert page.status_code == 200
    menu = {label: (value, selected) for value, label, selected in page.context["policies"]}
    assert menu[str(saver.id)] == (str(named.id), True)  # the digits' policy, by its id
    assert menu["saver"] == ("saver", False)
    # once that policy is deleted, its requests still hold the name: still ambiguous
    from governance import services as gov

    gov.routing_policy_delete(actor=ACTOR, routing_policy=named)
    response = alice_client.get("/api/gateway/logs", {"range": "24h", "policy": saver.id})
    assert response.status_code == 400
    assert response.json()["policy"][0].endswith(f"{saver.id} for 'saver'.")
