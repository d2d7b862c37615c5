"""Smart routing's savings (issue 17): exact on a known set of rows, per day, model,
policy, classifier (the A/B arms) and tier with the apps' feedback; shown on the Usage
page, in /api/gateway/analytics and in the weekly digest; and POST /v1/feedback, which
rates only the key's own org's requests, with OpenAI-shaped errors."""

import io
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from django.core import mail

from billing.digest import digest_context, weekly_digest_send
from billing.models import UsageRecord
from billing.selectors import smart_savings
from core import smart
from gateway.tests.conftest import ACTOR, refresh_snapshot, usage_rows

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # a Monday
DAY1, DAY2 = NOW - timedelta(days=3, hours=2), NOW - timedelta(days=2, hours=5)


def _row(
    org, at, *, cost, top=None, tier="", policy="", classifier="rules", used="lite", score=0.2, **kw
):
    return UsageRecord.objects.create(
        id=uuid.uuid4(),
        org=org,
        created_at=at,
        model_requested="auto",
        model_used=used,
        status=kw.pop("status", "success"),
        input_tokens=100,
        output_tokens=50,
        cost=Decimal(cost),
        cost_top_tier=None if top is None else Decimal(top),
        route_tier=tier,
        routing_policy=policy,
        route_classifier=classifier if tier else "",
        route_score=score if tier else None,
        **kw,
    )


@pytest.fixture
def rows(org_a, org_b):
    """Known rows: four smart-routed successes over two days, two policies and both A/B
    arms; plus rows that must not count (not smart-routed, failed, another org's)."""
    _row(org_a, DAY1, cost="0.00010000", top="0.00200000", tier="lite", policy="saver")
    _row(
        org_a,
        DAY1,
        cost="0.00200000",
        top="0.00200000",
        tier="pro",
        used="pro",
        policy="saver",
        feedback_score=1.0,
    )
    _row(
        org_a,
        DAY2,
        cost="0.00030000",
        top="0.00600000",
        tier="lite",
        policy="",
        feedback_score=0.5,
    )
    _row(
        org_a,
        DAY2,
        cost="0.00600000",
        top="0.00600000",
        tier="pro",
        used="pro",
        policy="saver",
        classifier="strong",
        feedback_score=0.0,
    )
    _row(org_a, DAY2, cost="0.05000000")  # a model asked for by name
    _row(org_a, DAY2, cost="0", top="0.00100000", tier="lite", status="error")
    _row(org_b, DAY2, cost="0.00010000", top="0.90000000", tier="lite", policy="saver")


@pytest.mark.django_db
def test_the_savings_are_exact_on_known_rows(rows, org_a):
    s = smart_savings(org_a, NOW - timedelta(days=7), NOW)
    # cost 0.0001 + 0.002 + 0.0003 + 0.006; on the top tier 0.002 + 0.002 + 0.006 + 0.006
    assert (s["requests"], s["cost_usd"], s["top_tier_cost_usd"]) == (4, 0.0084, 0.016)
    assert s["saved_usd"] == 0.0076 and s["saved_pct"] == 47.5
    assert [(d["day"], d["requests"], d["saved_usd"]) for d in s["by_day"]] == [
        (DAY1.date().isoformat(), 2, 0.0019),
        (DAY2.date().isoformat(), 2, 0.0057),
    ]
    assert {p["policy"]: p["saved_usd"] for p in s["by_policy"]} == {
        "(org default)": 0.0057,
        "saver": 0.0019,
    }
    assert {m["model"]: (m["requests"], m["saved_usd"]) for m in s["by_model"]} == {
        "lite": (2, 0.0076),
        "pro": (2, 0.0),
    }
    arms = {c["classifier"]: c for c in s["by_classifier"]}
    assert (arms["rules"]["requests"], arms["rules"]["rated"], arms["rules"]["avg_feedback"]) == (
        3,
        2,
        0.75,
    )
    assert (arms["strong"]["saved_usd"], arms["strong"]["avg_feedback"]) == (0.0, 0.0)
    tiers = {t["tier"]: (t["rated"], t["avg_feedback"]) for t in s["by_tier"]}
    assert tiers == {"lite": (1, 0.5), "pro": (2, 0.5)}


@pytest.mark.django_db
def test_no_smart_traffic_reads_as_nothing_saved(org_a):
    s = smart_savings(org_a, NOW - timedelta(days=7), NOW)
    assert (s["requests"], s["saved_usd"], s["saved_pct"], s["by_day"]) == (0, 0.0, 0.0, [])


@pytest.mark.django_db
def test_analytics_and_the_usage_page_show_the_savings_and_outsiders_see_none(
    rows, org_a, org_b, alice_client, charlie_client
):
    params = {"since": (NOW - timedelta(days=7)).isoformat(), "until": NOW.isoformat()}
    data = alice_client.get("/api/gateway/analytics", params).json()["smart_routing"]
    assert (data["saved_usd"], data["saved_pct"]) == (0.0076, 47.5)
    page = alice_client.get(f"/o/{org_a.slug}/usage/", params)
    assert page.status_code == 200
    assert b"You saved $0.0076 (47.5%)" in page.content
    theirs = charlie_client.get("/api/gateway/analytics", params).json()["smart_routing"]
    assert theirs["requests"] == 1 and theirs["by_policy"][0]["saved_usd"] == 0.8999
    assert charlie_client.get(f"/o/{org_a.slug}/usage/").status_code == 404
    # one request reads as one ("on 1 smart-routed request: it cost")
    assert f"on {data['requests']} smart-routed requests: they cost".encode() in page.content
    theirs_page = charlie_client.get(f"/o/{org_b.slug}/usage/", params)
    assert b"on 1 smart-routed request: it cost" in theirs_page.content


@pytest.mark.django_db
def test_the_weekly_digest_says_what_smart_routing_saved(rows, org_a, alice):
    assert digest_context(org_a, NOW)["smart"]["saved_usd"] == 0.0076
    weekly_digest_send(org=org_a, now=NOW, base_url="https://bonito.example")
    [message] = [m for m in mail.outbox if alice.email in m.to]
    # To 4 places, as the Usage page says it: 2 places made small savings "$0.01", or "$0.00".
    assert "Smart routing saved $0.0076 (47.5%)" in message.body
    html, _mime = message.alternatives[0]
    assert "Smart routing saved $0.0076 (47.5%)" in html


# ------------------------------------------------------------------------------ POST /v1/feedback
def _feedback(acme, payload, key=None, **kw):
    return httpx.post(
        acme.url + "/v1/feedback",
        headers={"Authorization": f"Bearer {key or acme.raw}"},
        timeout=10,
        **({"content": payload} if isinstance(payload, bytes) else {"json": payload}),
        **kw,
    )


def _one_request(acme) -> str:
    response = httpx.post(
        acme.base_url + "/chat/completions",
        headers={"Authorization": f"Bearer {acme.raw}"},
        json={"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    assert response.status_code == 200
    usage_rows(acme.org)  # stored now (the sink writes within a second)
    return response.headers["x-request-id"]


def test_feedback_is_stored_on_the_request_and_thumbs_count_as_1_or_0(acme, gw):
    rid = _one_request(acme)
    ok = _feedback(acme, {"request_id": rid, "score": 0.25})
    assert ok.status_code == 200 and ok.json() == {
        "object": "feedback",
        "request_id": rid,
        "score": 0.25,
        "rated": 1,
    }
    [row] = [r for r in usage_rows(acme.org) if r.endpoint == "chat"]
    assert row.feedback_score == 0.25
    assert _feedback(acme, {"request_id": rid, "thumbs": "up"}).status_code == 200
    [row] = [r for r in usage_rows(acme.org) if r.endpoint == "chat"]
    assert row.feedback_score == 1.0
    # Each feedback call is a request with a valid key: one usage row of its own, unrated.
    feedback_rows = [r for r in usage_rows(acme.org) if r.endpoint == "feedback"]
    assert len(feedback_rows) == 2 and all(r.feedback_score is None for r in feedback_rows)


@pytest.mark.parametrize(
    ("payload", "param", "code"),
    [
        (b"not json", None, "invalid_json"),
        ([1, 2], None, "invalid_type"),
        ({"score": 1}, "request_id", "missing_required_parameter"),
        ({"request_id": 5, "score": 1}, "request_id", "invalid_type"),
        ({"request_id": "x" * 129, "score": 1}, "request_id", "string_above_max_length"),
        ({"request_id": "r"}, "score", "missing_required_parameter"),
        ({"request_id": "r", "score": 1, "thumbs": "up"}, "score", "invalid_value"),
        ({"request_id": "r", "score": 1.5}, "score", "invalid_value"),
        ({"request_id": "r", "score": True}, "score", "invalid_type"),
        ({"request_id": "r", "score": "high"}, "score", "invalid_type"),
        ({"request_id": "r", "thumbs": "sideways"}, "thumbs", "invalid_value"),
        ({"request_id": "r", "score": 1, "prompt": "x"}, "prompt", "unknown_parameter"),
    ],
)
def test_a_bad_feedback_body_is_a_400_naming_the_field(acme, gw, payload, param, code):
    response = _feedback(acme, payload)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)


def test_feedback_rates_only_the_keys_own_orgs_requests(acme, gw, org_b):
    from gateway import services

    rid = _one_request(acme)
    _key, theirs = services.api_key_create(actor=ACTOR, org=org_b, name="other")
    refresh_snapshot()
    response = _feedback(acme, {"request_id": rid, "score": 0}, key=theirs)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "request_not_found"
    assert rid not in response.text or "No request with the id" in response.text
    [row] = [r for r in usage_rows(acme.org) if r.endpoint == "chat"]
    assert row.feedback_score is None
    unknown = _feedback(acme, {"request_id": "req_never_sent", "score": 1})
    assert unknown.status_code == 404
    assert _feedback(acme, {"request_id": rid, "score": 1}, key="bn-wrong").status_code == 401
    # The key first (docs/gateway.md, order of checks): no key is a 401 on any method,
    # a valid key's wrong method a 405.
    assert httpx.get(acme.url + "/v1/feedback", timeout=10).status_code == 401
    wrong_method = httpx.get(
        acme.url + "/v1/feedback", headers={"Authorization": f"Bearer {acme.raw}"}, timeout=10
    )
    assert wrong_method.status_code == 405


# ------------------------------------------------------------------------------ re-calibration
def _policy(org):
    from governance import services as gov

    return gov.routing_policy_save(
        actor=ACTOR,
        org=org,
        name="saver",
        strategy="smart",
        models=["lite", "pro"],
        smart={"thresholds": [0.5]},
    )


def _rated(
    org, n, score_of, feedback_of, tier="lite", policy="saver", used="", cost="0.0001", **kw
):
    """n rated rows of the policy an hour ago; ``used``: the model that answered (the
    tier's own by default), ``kw``: other columns (the A/B arm)."""
    for i in range(n):
        _row(
            org,
            NOW - timedelta(hours=1),
            cost=cost,
            top="0.002",
            tier=tier,
            used=used or tier,
            policy=policy,
            score=score_of(i),
            feedback_score=feedback_of(i),
            **kw,
        )


@pytest.mark.django_db
def test_recalibration_lowers_the_threshold_where_the_cheap_tier_falls_short(org_a):
    from billing.smart_calibration import smart_recalibrate
    from governance.models import RoutingPolicy

    _policy(org_a)
    # Scores 0.01..0.40: good answers up to 0.30, bad ones above.
    _rated(org_a, 40, lambda i: (i + 1) / 100, lambda i: 1.0 if i < 30 else 0.0)
    _rated(org_a, 10, lambda i: 0.7, lambda i: 1.0, tier="pro")
    moved = smart_recalibrate(actor=ACTOR, org=org_a, name="saver")
    assert moved["old"] == 0.5 and 0.3 <= moved["new"] < 0.34
    assert RoutingPolicy.objects.get(name="saver").smart["thresholds"] == [moved["new"]]


@pytest.mark.django_db
def test_recalibration_needs_enough_feedback_and_a_smart_policy(org_a):
    from billing.smart_calibration import smart_recalibrate

    _policy(org_a)
    _rated(org_a, 5, lambda i: 0.1, lambda i: 1.0)
    with pytest.raises(Exception, match="re-calibrating needs 30"):
        smart_recalibrate(actor=ACTOR, org=org_a, name="saver")
    with pytest.raises(Exception, match="No smart routing policy"):
        smart_recalibrate(actor=ACTOR, org=org_a, name="other")


@pytest.mark.django_db
def test_each_recalibration_on_good_feedback_steps_up_again(org_a):
    """Its saved thresholds are explicit: the next run, on new good ratings up to them,
    steps on from there (it used to stop after one step); with no new ratings it stays
    (it used to step again on every press: billing/tests/test_smart_recalibration.py)."""
    from billing.smart_calibration import smart_recalibrate
    from governance import services as gov

    gov.routing_policy_save(
        actor=ACTOR,
        org=org_a,
        name="saver",
        strategy="smart",
        models=["lite", "pro"],
        smart={"aggressiveness": 0.3},
    )
    (top,) = smart.thresholds_for(0.3, 2, "rules")
    tops = []
    for _ in range(4):  # good ratings up to the cut each time: the cheap tier served them
        _rated(org_a, 40, lambda i, top=top: top * (i + 1) / 41, lambda i: 1.0)
        top = smart_recalibrate(actor=ACTOR, org=org_a, name="saver")["new"]
        tops.append(top)
    assert tops == sorted(tops) and len(set(tops)) == 4, tops
    assert smart_recalibrate(actor=ACTOR, org=org_a, name="saver")["new"] == tops[-1]


@pytest.mark.django_db
def test_the_org_default_smart_routing_is_recalibrated_too(org_a, alice_client):
    """bn- keys asking for `auto`: their rows name no policy; the command without
    --policy, the function with the empty name and the page's button move its threshold."""
    from django.core.management import call_command

    from billing.smart_calibration import ORG_DEFAULT, smart_recalibrate
    from gateway import services as gateway_services
    from gateway.models import GatewayConfig

    with pytest.raises(Exception, match="no default smart routing"):
        smart_recalibrate(actor=ACTOR, org=org_a, name=ORG_DEFAULT)
    gateway_services.gateway_config_set(
        actor=ACTOR, org=org_a, smart_tiers=["lite", "pro"], smart={"thresholds": [0.5]}
    )
    _rated(org_a, 40, lambda i: (i + 1) / 100, lambda i: 1.0 if i < 30 else 0.0, policy="")
    _rated(org_a, 40, lambda i: 0.01, lambda i: 0.0, policy="saver")  # another policy's
    out = io.StringIO()
    call_command("smart_recalibrate", "--org", org_a.slug, stdout=out)
    assert "the org default: top threshold 0.5000 -> 0.3" in out.getvalue()
    [top] = GatewayConfig.objects.get(org=org_a).smart["thresholds"]
    assert 0.3 <= top < 0.34
    response = alice_client.post(
        f"/o/{org_a.slug}/usage/smart-recalibrate/", {"policy": ""}, follow=True
    )
    # pressed again on the same ratings: nothing moves, and the page says so
    assert b"the org default: thresholds unchanged" in response.content


@pytest.mark.django_db
def test_the_recalibrate_button_is_for_admins_of_the_org(org_a, alice_client, charlie_client):
    _policy(org_a)
    url = f"/o/{org_a.slug}/usage/smart-recalibrate/"
    assert charlie_client.post(url, {"policy": "saver"}).status_code == 404
    response = alice_client.post(url, {"policy": "saver"}, follow=True)
    assert b"re-calibrating needs 30" in response.content


@pytest.mark.django_db
def test_the_logs_show_how_a_request_was_smart_routed(rows, org_a, alice_client, charlie_client):
    row = UsageRecord.objects.filter(org=org_a, route_tier="pro", feedback_score=1.0).get()
    params = {"since": (NOW - timedelta(days=7)).isoformat(), "until": NOW.isoformat()}
    listed = alice_client.get("/api/gateway/logs", params).json()["results"]
    [mine] = [r for r in listed if r["id"] == str(row.id)]
    assert (mine["route_tier"], mine["routing_policy"], mine["feedback_score"]) == (
        "pro",
        "saver",
        1.0,
    )
    page = alice_client.get(f"/o/{org_a.slug}/logs/{row.id}/")
    assert b"Smart routing" in page.content and b"tier pro" in page.content
    assert charlie_client.get(f"/o/{org_a.slug}/logs/{row.id}/").status_code == 404


def test_feedback_takes_the_keys_and_orgs_rate_limits(acme, gw):
    """A feedback call writes to the database: one request of the key's RPM (a 429 past
    it, no write), like any /v1 request; the spend cap never refuses it."""
    from gateway import services
    from governance import services as governance_services

    rid = _one_request(acme)
    key, raw = services.api_key_create(actor=ACTOR, org=acme.org, name="rater", rpm_limit=2)
    governance_services.policy_set(actor=ACTOR, org=acme.org, monthly_spend_cap_usd=Decimal("0"))
    refresh_snapshot()
    statuses = [_feedback(acme, {"request_id": rid, "score": 0.5}, key=raw).status_code]
    statuses += [_feedback(acme, {"request_id": rid, "score": 0.1}, key=raw).status_code]
    statuses += [_feedback(acme, {"request_id": rid, "score": 0.9}, key=raw).status_code]
    assert statuses == [200, 200, 429]
    capped = httpx.post(
        acme.base_url + "/chat/completions",
        headers={"Authorization": f"Bearer {acme.raw}"},
        json={"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    assert capped.json()["error"]["code"] == "spend_cap_exceeded"  # the cap is reached
    [row, _capped] = [r for r in usage_rows(acme.org) if r.endpoint == "chat"]
    assert row.feedback_score == 0.1  # the refused one wrote nothing


@pytest.mark.django_db
def test_recalibrating_a_learned_policy_where_the_extra_is_missing_says_so(
    org_a, alice_client, monkeypatch
):
    """A policy saved with the learned classifier where the smart extra was installed,
    re-calibrated where it is not (the extra removed, another control plane): refused
    with what to install, by the button and the command alike, never a 500."""
    import sys

    from django.core.management import CommandError, call_command

    from governance.models import RoutingPolicy

    RoutingPolicy.objects.create(
        org=org_a,
        name="saver",
        strategy="smart",
        model_names=["lite", "pro"],
        smart={"classifier": "learned", "thresholds": [0.5]},
    )
    monkeypatch.setitem(sys.modules, "numpy", None)  # the extra is not installed here
    response = alice_client.post(
        f"/o/{org_a.slug}/usage/smart-recalibrate/", {"policy": "saver"}, follow=True
    )
    assert response.status_code == 200 and b"requirements-smart.txt" in response.content
    with pytest.raises(CommandError, match="requirements-smart.txt"):
        call_command("smart_recalibrate", "--org", org_a.slug, "--policy", "saver")


@pytest.mark.django_db
def test_recalibrate_with_min_rated_0_and_no_ratings_says_so(org_a):
    from django.core.management import CommandError, call_command

    _policy(org_a)
    for low in ("0", "-5"):
        with pytest.raises(CommandError, match="at least 1"):
            call_command(
                "smart_recalibrate", "--org", org_a.slug, "--policy", "saver", "--min-rated", low
            )


@pytest.mark.django_db
def test_recalibration_does_not_count_requests_the_top_tier_answered_after_a_failover(org_a):
    """A request scored for the cheap tier, served by the top tier because the cheap one
    was down: its rating is the top model's, not the cheap tier's quality."""
    from billing.smart_calibration import smart_recalibrate

    _policy(org_a)
    # Served by pro after lite failed, rated well, at the lowest scores.
    _rated(org_a, 100, lambda i: (i + 1) / 100_000, lambda i: 1.0, used="pro", cost="0.002")
    # What lite itself answered: bad from the easiest prompt on.
    _rated(org_a, 30, lambda i: (i + 1) / 100, lambda i: 0.0)
    _rated(org_a, 10, lambda i: 0.7, lambda i: 1.0, tier="pro")
    moved = smart_recalibrate(actor=ACTOR, org=org_a, name="saver")
    # only the easiest (0.01) stays below: the cut falls just above it
    assert (moved["rated"], moved["new"]) == (30, 0.010001)


@pytest.mark.django_db
def test_recalibration_reads_the_top_tiers_quality_from_the_ab_strong_arm_too(org_a, alice_client):
    """The A/B `strong` arm's requests are the top tier's answers (scored nothing): their
    feedback is the top tier's quality the Usage page shows, and the cheap tier is measured
    against it, not against a perfect 1.0 (which sent nearly every prompt to the top tier)."""
    from governance import services as gov
    from governance.models import RoutingPolicy

    gov.routing_policy_save(
        actor=ACTOR,
        org=org_a,
        name="saver",
        strategy="smart",
        models=["lite", "pro"],
        smart={"thresholds": [0.5], "ab": {"share": 0.5, "classifier": "strong"}},
    )
    _rated(org_a, 40, lambda i: (i + 1) / 100, lambda i: 0.8)  # as good as the top tier
    # the strong arm: straight to pro, no score
    _rated(org_a, 40, lambda i: None, lambda i: 0.8, tier="pro", cost="0.002", classifier="strong")
    [pro] = [
        t
        for t in smart_savings(org_a, NOW - timedelta(days=1), NOW)["by_tier"]
        if t["tier"] == "pro"
    ]
    assert pro["avg_feedback"] == 0.8  # what the page shows as the top tier's quality
    response = alice_client.post(
        f"/o/{org_a.slug}/usage/smart-recalibrate/", {"policy": "saver"}, follow=True
    )
    assert b"saver: thresholds unchanged (top 0.5000)" in response.content
    [top] = RoutingPolicy.objects.get(name="saver").smart["thresholds"]
    assert top >= 0.5  # the cheap tier held the top tier's quality: not moved down


@pytest.mark.django_db
def test_recalibration_counts_only_the_policys_current_tiers(org_a):
    """Rows of a tier the policy no longer has (its tiers were changed) rated another model:
    they do not move the threshold of the new cheap tier."""
    from billing.smart_calibration import smart_recalibrate

    _policy(org_a)  # lite -> pro
    _rated(org_a, 100, lambda i: (i + 1) / 1000, lambda i: 0.0, tier="old-lite")
    _rated(org_a, 30, lambda i: (i + 1) / 100, lambda i: 1.0)
    _rated(org_a, 10, lambda i: 0.7, lambda i: 1.0, tier="pro")
    moved = smart_recalibrate(actor=ACTOR, org=org_a, name="saver")
    assert moved["rated"] == 30 and moved["new"] >= 0.5


@pytest.mark.django_db
def test_the_usage_page_has_a_recalibrate_button_for_every_smart_policy_and_the_org_default(
    org_a, alice_client
):
    """docs/smart-routing.md: one button per policy and one for the org default, not only
    for those with requests in the page's range (a policy quiet today had no button)."""
    from gateway import services as gateway_services
    from governance import services as gov

    _policy(org_a)  # "saver": no request in the last 24 hours
    gov.routing_policy_save(
        actor=ACTOR, org=org_a, name="plain", strategy="failover", models=["lite"]
    )
    gateway_services.gateway_config_set(actor=ACTOR, org=org_a, smart_tiers=["lite", "pro"])
    _row(org_a, datetime.now(UTC) - timedelta(hours=1), cost="0.0001", top="0.002", tier="lite")
    page = alice_client.get(f"/o/{org_a.slug}/usage/").content.decode()
    assert "Re-calibrate (org default) from feedback" in page
    assert "Re-calibrate saver from feedback" in page
    assert "Re-calibrate plain" not in page  # not smart
    # A disabled policy may be re-calibrated before it is enabled again: its button says so.
    gov.routing_policy_save(
        actor=ACTOR,
        org=org_a,
        name="saver",
        strategy="smart",
        models=["lite", "pro"],
        is_active=False,
    )
    page = alice_client.get(f"/o/{org_a.slug}/usage/").content.decode()
    assert "Re-calibrate saver (disabled) from feedback" in page


@pytest.mark.django_db
def test_the_policy_filter_keeps_that_policys_recalibrate_button_only(org_a, alice_client):
    """With the Usage page's Policy filter set, only the filtered policy's button is shown
    (every policy's button was, under a page about one policy)."""
    from gateway import services as gateway_services
    from governance import services as gov

    _policy(org_a)  # "saver"
    gov.routing_policy_save(
        actor=ACTOR, org=org_a, name="other", strategy="smart", models=["lite", "pro"]
    )
    gateway_services.gateway_config_set(actor=ACTOR, org=org_a, smart_tiers=["lite", "pro"])
    when = datetime.now(UTC) - timedelta(hours=1)
    _row(org_a, when, cost="0.0001", top="0.002", tier="lite", policy="saver")
    _row(org_a, when, cost="0.0001", top="0.002", tier="lite")  # the org default's
    url = f"/o/{org_a.slug}/usage/"
    every = alice_client.get(url).content.decode()
    assert all(
        f"Re-calibrate {label} from feedback" in every
        for label in ("(org default)", "saver", "other")
    )
    page = alice_client.get(url, {"policy": "saver"}).content.decode()
    assert "Re-calibrate saver from feedback" in page
    assert "Re-calibrate other" not in page and "Re-calibrate (org default)" not in page
    page = alice_client.get(url, {"policy": "(org default)"}).content.decode()
    assert "Re-calibrate (org default) from feedback" in page
    assert "Re-calibrate saver" not in page and "Re-calibrate other" not in page


@pytest.mark.django_db
def test_the_recalibrate_button_returns_to_the_page_as_it_was(org_a, alice_client):
    """The button sent the page back to /usage/ with its range and filters lost; it comes
    back with the query string it was shown with, and only to the Usage page."""
    _policy(org_a)
    # smart traffic of the policy in the page's range: the section and its buttons are shown
    _row(
        org_a,
        datetime.now(UTC) - timedelta(hours=1),
        cost="1",
        top="2",
        tier="lite",
        policy="saver",
    )
    url = f"/o/{org_a.slug}/usage/"
    page = alice_client.get(url, {"range": "7d", "policy": "saver"}).content.decode()
    assert 'name="back" value="range=7d&amp;policy=saver"' in page
    response = alice_client.post(
        f"{url}smart-recalibrate/", {"policy": "saver", "back": "range=7d&policy=saver"}
    )
    assert response.status_code == 302 and response["Location"] == f"{url}?range=7d&policy=saver"
    for hostile in (
        "//evil.example/x",
        "\r\nSet-Cookie: a=b",
        "https://evil.example",
        "&" * 2000,
        "x=%%%" * 400,
    ):
        response = alice_client.post(
            f"{url}smart-recalibrate/", {"policy": "saver", "back": hostile}
        )
        assert response["Location"].startswith(f"{url}?") or response["Location"] == url
        assert (
            "\n" not in response["Location"]
            and "evil.example/x" not in response["Location"].split("?")[0]
        )
