"""The key list's spend this month and last use (exact, in a fixed number of queries), and
editing and rotating keys over REST with the dashboard's role rules."""

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.services import rollup_recent
from billing.spend import key_spend_this_month
from billing.usage_writer import write_usage
from core.months import month_bounds
from gateway import services
from gateway.models import ApiKey, GatewayConfig
from gateway.tests.conftest import ACTOR, org_models, org_providers
from orgs.audit import Actor
from orgs.models import AuditLog, Team

pytestmark = pytest.mark.django_db
JSON = "application/json"


def _record(key, at: datetime, cost: float) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "org_id": key.org_id,
        "key_id": key.id,
        "model_requested": "chat",
        "model_used": "chat",
        "provider": "fake",
        "status": "success",
        "input_tokens": 10,
        "output_tokens": 5,
        "cost": cost,
        "latency_ms": 80,
        "created_at": at.timestamp(),
    }


def _keys(org, n, user=None):
    actor = Actor(user=user, via="test") if user else ACTOR
    return [services.api_key_create(actor=actor, org=org, name=f"k{i}")[0] for i in range(n)]


# ------------------------------------------------------------------------------ spend, last used
def test_the_writer_moves_last_used_forward_only(org_a):
    [key] = _keys(org_a, 1)
    now = datetime.now(UTC).replace(microsecond=0)
    write_usage([_record(key, now - timedelta(minutes=5), 0.1), _record(key, now, 0.1)])
    assert ApiKey.objects.get(pk=key.pk).last_used_at == now
    write_usage([_record(key, now - timedelta(hours=2), 0.1)])  # a late, replayed row
    assert ApiKey.objects.get(pk=key.pk).last_used_at == now


@pytest.mark.django_db(transaction=True)
def test_writers_moving_the_same_keys_at_once_never_deadlock(org_a):
    """Usage writers of several processes move the same keys' last use at once, their
    batches naming the keys in any order: each statement locks the rows in id order first,
    so they wait in turn, and the newest time wins."""
    import threading

    keys = _keys(org_a, 6)
    start = datetime.now(UTC).replace(microsecond=0)
    errors: list = []

    def writer(order, offset):
        try:
            for i in range(40):
                at = start + timedelta(seconds=i * 2 + offset)
                write_usage([_record(k, at, 0.001) for k in order])
        except Exception as exc:  # a deadlock is an OperationalError
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=writer, args=(keys, 0)),
        threading.Thread(target=writer, args=(keys[::-1], 1)),
        threading.Thread(target=writer, args=(keys[2:] + keys[:2], 0.5)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    newest = start + timedelta(seconds=79)  # the second writer's last batch
    assert {k.last_used_at for k in ApiKey.objects.filter(org=org_a)} == {newest}


def test_spend_this_month_is_exact_per_key_and_ignores_last_month(alice_client, org_a, org_b):
    first, second, idle = _keys(org_a, 3)
    [outsider] = _keys(org_b, 1)
    start = month_bounds()[0]
    now = datetime.now(UTC)
    write_usage(
        [
            _record(first, now, 0.1),
            _record(first, now - timedelta(seconds=1), 0.2),
            _record(second, now, 1.5),
            _record(first, start - timedelta(seconds=1), 100),  # last month
            _record(outsider, now, 7),
        ]
    )
    rows = {r["id"]: r for r in alice_client.get("/api/gateway/keys").json()["results"]}
    assert rows[first.id]["spend_this_month"] == "0.30000000"
    assert rows[second.id]["spend_this_month"] == "1.50000000"
    assert rows[idle.id]["spend_this_month"] == "0.00000000"
    assert rows[idle.id]["last_used_at"] is None and rows[first.id]["last_used_at"]
    assert outsider.id not in rows
    page = alice_client.get("/o/acme/keys/").content.decode()
    assert "$0.30" in page and "$1.50" in page and "$7" not in page


def test_the_key_lists_make_the_same_few_queries_for_any_number_of_keys(alice_client, org_a):
    """No query per key: the same count for 1 key as for 13 (teams, policies, spend and
    last use included), and a small one. The spend's own share (billing.spend: the rollup
    mark, the dirty hours, the day and hour rollups, the raw edges) is at most 7 queries,
    how many depending on the time of day, never on keys or rows."""
    team = Team.objects.create(org=org_a, name="t")
    now = datetime.now(UTC)

    def add_keys(n):
        keys = _keys(org_a, n)
        for key in keys:
            services.api_key_update(actor=ACTOR, key=key, team=team)
        # rows early in the month, rolled up, and rows since: rollups and the edges are read
        write_usage([_record(k, month_bounds()[0] + timedelta(minutes=1), 0.01) for k in keys])
        rollup_recent(now=now)
        write_usage([_record(k, now, 0.01) for k in keys])

    def counts():
        alice_client.get("/o/acme/keys/")  # the session, caches warmed
        out = []
        for url in ("/api/gateway/keys", "/o/acme/keys/"):
            with CaptureQueriesContext(connection) as queries:
                response = alice_client.get(url)
            assert response.status_code == 200
            out.append(len(queries))
        return out

    add_keys(1)
    with CaptureQueriesContext(connection) as spend_queries:
        key_spend_this_month(org_a.id)
    assert 2 <= len(spend_queries) <= 7
    few = counts()
    add_keys(12)
    assert counts() == few and few[0] <= 10 and few[1] <= 18, few
    rows = alice_client.get("/api/gateway/keys").json()["results"]
    assert {r["spend_this_month"] for r in rows} == {"0.02000000"}


# ------------------------------------------------------------------------------ REST edit
def test_a_member_edits_their_own_key_over_rest(bob, bob_client, org_a):
    # A member renames and narrows (limits, expiry and scopes where there were none); what
    # else they may not do is in test_key_member_narrowing.py.
    [key] = _keys(org_a, 1, user=bob)
    org_models(org_a, "chat")
    org_providers(org_a, "fake")
    body = {
        "name": "renamed",
        "allowed_models": ["chat"],
        "allowed_providers": ["fake"],
        "team": None,
        "rpm_limit": 3,
        "tpm_limit": 900,
        "expires_at": "2099-05-01",
        "kind": "rt",  # read-only: ignored
    }
    response = bob_client.patch(f"/api/gateway/keys/{key.id}", body, content_type=JSON)
    assert response.status_code == 200, response.content
    got = response.json()
    assert got["name"] == "renamed" and got["team"] is None and got["kind"] == "bn"
    assert got["expires_at"].startswith("2099-05-01T23:59:59")
    key.refresh_from_db()
    assert (key.allowed_models, key.rpm_limit, key.tpm_limit) == (["chat"], 3, 900)
    row = AuditLog.objects.get(action="api_key.update", target_id=str(key.id))
    assert row.actor_id == bob.id and row.changes["after"]["name"] == "renamed"
    # one field alone leaves the others as they are
    bob_client.patch(f"/api/gateway/keys/{key.id}", {"rpm_limit": 2}, content_type=JSON)
    key.refresh_from_db()
    assert (key.name, key.rpm_limit, key.tpm_limit) == ("renamed", 2, 900)


def test_role_rules_for_editing_match_the_dashboard(
    alice, bob, bob_client, vera_client, charlie_client, alice_client, org_a
):
    [alices] = _keys(org_a, 1, user=alice)
    [bobs] = _keys(org_a, 1, user=bob)
    patch = {"name": "x"}
    url = "/api/gateway/keys/{}"
    assert bob_client.patch(url.format(alices.id), patch, content_type=JSON).status_code == 403
    assert vera_client.patch(url.format(bobs.id), patch, content_type=JSON).status_code == 403
    assert charlie_client.patch(url.format(bobs.id), patch, content_type=JSON).status_code == 404
    assert alice_client.patch(url.format(bobs.id), patch, content_type=JSON).status_code == 200
    for who, key, code in ((bob_client, alices, 403), (vera_client, bobs, 403)):
        assert who.post(f"/o/acme/keys/{key.id}/edit/", {"name": "y"}).status_code in (code, 302)
        assert ApiKey.objects.get(pk=key.pk).name != "y"
    assert charlie_client.get(f"/o/acme/keys/{bobs.id}/edit/").status_code == 404


def test_bad_edits_get_a_field_error_and_change_nothing(alice_client, org_a, org_b):
    GatewayConfig.objects.update_or_create(org=org_a, defaults={"default_key_rpm": 10})
    [key] = _keys(org_a, 1)
    theirs = Team.objects.create(org=org_b, name="theirs")
    before = ApiKey.objects.filter(pk=key.pk).values().get()
    for body, field in (
        ({"rpm_limit": 11}, "rpm_limit"),
        ({"team": theirs.id}, "team"),
        ({"expires_at": "2001-01-01"}, "expires_at"),
        ({"expires_at": "soon"}, "expires_at"),
        ({"allowed_models": "chat"}, "allowed_models"),
        ({"routing_policy": "nope"}, "routing_policy"),
    ):
        response = alice_client.patch(f"/api/gateway/keys/{key.id}", body, content_type=JSON)
        assert response.status_code == 400, (body, response.content)
        assert field in response.json() or field in str(response.json())
    assert ApiKey.objects.filter(pk=key.pk).values().get() == before


# ------------------------------------------------------------------------------ REST rotate
def test_rotating_over_rest_keeps_the_key_and_takes_a_grace(bob_client, alice_client, org_a):
    created = bob_client.post(
        "/api/gateway/keys", {"name": "ci", "rpm_limit": 7}, content_type=JSON
    ).json()
    url = f"/api/gateway/keys/{created['id']}/rotate"
    response = bob_client.post(url, {"grace_seconds": 3600}, content_type=JSON)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"] == created["id"] and body["api_key"] != created["api_key"]
    assert body["old_key_valid_until"] and body["key"] != created["key"]
    key = ApiKey.objects.get(pk=created["id"])
    assert key.matches(body["api_key"]) and key.previous_valid()
    # the secret is shown once: never in a later read
    again = bob_client.get(f"/api/gateway/keys/{key.id}").json()
    assert "api_key" not in again and again["old_key_valid_until"] == body["old_key_valid_until"]
    for grace in (-1, 31 * 86400, "soon"):
        bad = bob_client.post(url, {"grace_seconds": grace}, content_type=JSON)
        assert bad.status_code == 400 and "grace_seconds" in bad.json()
    assert ApiKey.objects.get(pk=key.pk).key_hash == key.key_hash
    no_grace = bob_client.post(url).json()
    assert no_grace["old_key_valid_until"] is None


# ------------------------------------------------------------------------------ dashboard
def test_the_dashboard_edits_and_rotates_through_the_same_services(alice_client, org_a):
    GatewayConfig.objects.update_or_create(org=org_a, defaults={"default_key_rpm": 10})
    key, raw = services.api_key_create(actor=ACTOR, org=org_a, name="dash", expires_at="2098-03-04")
    url = f"/o/acme/keys/{key.id}/edit/"
    page = alice_client.get(url).content.decode()
    assert 'value="dash"' in page and 'value="2098-03-04"' in page and raw not in page
    # a limit over the ceiling: the service's message, nothing changed
    refused = alice_client.post(url, {"name": "x", "rpm_limit": "11", "expires_at": "2098-03-04"})
    assert refused.status_code == 400 and "at most 10" in refused.content.decode()
    assert ApiKey.objects.get(pk=key.pk).name == "dash"
    saved = alice_client.post(
        url, {"name": "dash-2", "rpm_limit": "10", "expires_at": "2098-03-04"}
    )
    assert saved.status_code == 302
    key.refresh_from_db()
    assert (key.name, key.rpm_limit) == ("dash-2", 10)
    # the date shown is kept as the exact time it was (the end of that day)
    assert key.expires_at.isoformat() == "2098-03-04T23:59:59+00:00"
    # rotate: only the offered grace periods; the new secret once, not cached
    bad = alice_client.post(f"/o/acme/keys/{key.id}/rotate/", {"grace_seconds": "5"})
    assert bad.status_code == 400 and ApiKey.objects.get(pk=key.pk).matches(raw)
    posted = alice_client.post(f"/o/acme/keys/{key.id}/rotate/", {"grace_seconds": "86400"})
    assert posted.status_code == 302 and posted["Location"] == f"/o/acme/keys/{key.id}/rotated/"
    rotated = alice_client.get(posted["Location"])
    key.refresh_from_db()
    new = re.search(r'id="new-key">(bn-[^<]+)<', rotated.content.decode())[1]
    assert key.matches(new) and key.previous_valid() and rotated["Cache-Control"] == "no-store"
    assert new not in alice_client.get(url).content.decode()
    # A GET of the rotation URL (a reload after a refused rotation) rotates nothing: it goes
    # to the key's page.
    again = alice_client.get(f"/o/acme/keys/{key.id}/rotate/")
    assert again.status_code == 302 and again["Location"] == url
    key.refresh_from_db()
    assert key.matches(new)


def test_rest_answers_carrying_a_secret_are_not_stored_by_caches(alice_client, org_a):
    created = alice_client.post("/api/gateway/keys", {"name": "k"}, content_type=JSON)
    assert created.status_code == 201 and created["Cache-Control"] == "no-store"
    key_id = created.json()["id"]
    rotated = alice_client.post(f"/api/gateway/keys/{key_id}/rotate", {}, content_type=JSON)
    assert rotated.status_code == 200 and rotated["Cache-Control"] == "no-store"
    assert "api_key" not in alice_client.get(f"/api/gateway/keys/{key_id}").json()
