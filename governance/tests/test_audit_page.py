"""The dashboard's Audit log page: org admins filter their org's changes by actor, action,
object and time, page through them, and never see a secret or another org's row."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from gateway import services
from orgs.audit import Actor
from orgs.models import AuditLog

pytestmark = pytest.mark.django_db


@pytest.fixture
def history(org_a, org_b, alice, bob, charlie):
    as_alice, as_bob = Actor(user=alice, via="web"), Actor(user=bob, via="api")
    key, raw_key = services.api_key_create(actor=as_alice, org=org_a, name="prod-app")
    services.api_key_revoke(actor=as_bob, key=key)
    provider = services.provider_save(
        actor=as_alice,
        org=org_a,
        name="openai",
        kind="openai",
        credentials={"api_key": "sk-live-SECRETSECRETSECRET1234"},
    )
    globex_key, globex_raw = services.api_key_create(
        actor=Actor(user=charlie), org=org_b, name="globex-secret-app"
    )
    return {"raw": raw_key, "globex_raw": globex_raw, "key": key, "provider": provider}


def _page(client, org, query=""):
    return client.get(reverse("audit_log", args=[org.slug]) + query)


def _actions(response):
    return [r.action for r in response.context["page"].object_list]


def test_it_lists_the_orgs_changes_and_none_of_another_org(alice_client, org_a, history):
    response = _page(alice_client, org_a)
    assert response.status_code == 200
    html = response.content.decode()
    assert "prod-app" in html and "globex-secret-app" not in html
    rows = response.context["page"].object_list
    assert rows and all(r.org_id == org_a.id for r in rows)


def test_it_never_shows_a_secret(alice_client, org_a, history):
    html = _page(alice_client, org_a).content.decode()
    assert history["raw"] not in html
    assert "SECRETSECRET" not in html
    assert history["globex_raw"] not in html
    for row in AuditLog.objects.filter(org=org_a):  # the rows themselves hold none
        assert history["raw"] not in str(row.changes) and "SECRETSECRET" not in str(row.changes)


def test_the_filters(alice_client, org_a, alice, bob, history):
    by_actor = _page(alice_client, org_a, "?actor=BOB@").context["page"].object_list
    assert by_actor and {r.actor_label for r in by_actor} == {bob.email}
    assert all("revoke" in r.action for r in by_actor)
    by_action = _actions(_page(alice_client, org_a, "?action=provider."))
    assert by_action and all(a.startswith("provider.") for a in by_action)
    by_type = (
        _page(alice_client, org_a, "?object_type=providerconnection").context["page"].object_list
    )
    assert by_type and {r.target_type for r in by_type} == {"providerconnection"}
    by_name = _page(alice_client, org_a, "?object=prod-app").context["page"].object_list
    assert by_name and all("prod-app" in r.target_repr for r in by_name)
    by_id = _page(alice_client, org_a, f"?object={history['key'].pk}&object_type=apikey")
    assert {r.target_id for r in by_id.context["page"].object_list} == {str(history["key"].pk)}
    tomorrow = (timezone.now() + timedelta(days=1)).date().isoformat()
    assert _actions(_page(alice_client, org_a, f"?since={tomorrow}")) == []
    today = timezone.now().date().isoformat()
    assert len(_actions(_page(alice_client, org_a, f"?since={today}&until={today}"))) == len(
        _actions(_page(alice_client, org_a))
    )


@pytest.mark.parametrize(
    "query,name",
    [
        ("?since=2026-02-30", "since"),
        ("?until=yesterday", "until"),
        ("?since=9999-12-31", "since"),
        ("?since=2026-11-02&until=2026-11-01", "since"),
        ("?actor=a%00b", "actor"),
        ("?object=" + "x" * 300, "object"),
    ],
)
def test_bad_filters_get_a_message_never_a_500(alice_client, org_a, history, query, name):
    response = _page(alice_client, org_a, query)
    assert response.status_code == 400
    flashes = [str(m) for m in response.context["messages"]]
    assert len(flashes) == 1 and flashes[0].startswith(f"{name}: ")
    assert all(r.org_id == org_a.id for r in response.context["page"].object_list)


def test_it_pages_fifty_at_a_time(alice_client, org_a, alice):
    for i in range(55):
        services.api_key_create(actor=Actor(user=alice), org=org_a, name=f"k{i}")
    first = _page(alice_client, org_a, "?action=api_key.create")
    assert len(first.context["page"].object_list) == 50
    second = _page(alice_client, org_a, "?action=api_key.create&page=2")
    assert len(second.context["page"].object_list) == 5
    assert b"action=api_key.create&amp;page=2" in first.content or b"page=2" in first.content


def test_only_admins_read_it_and_outsiders_get_404(
    bob_client, vera_client, charlie_client, org_a, history
):
    assert bob_client.get(reverse("audit_log", args=[org_a.slug])).status_code == 403
    assert vera_client.get(reverse("audit_log", args=[org_a.slug])).status_code == 403
    assert charlie_client.get(reverse("audit_log", args=[org_a.slug])).status_code == 404


def test_the_page_costs_a_fixed_number_of_queries(
    alice_client, org_a, alice, django_assert_max_num_queries
):
    for i in range(30):
        services.api_key_create(actor=Actor(user=alice), org=org_a, name=f"k{i}")
    _page(alice_client, org_a)
    with django_assert_max_num_queries(12):
        assert _page(alice_client, org_a).status_code == 200


def test_an_admin_sees_the_link_in_the_navigation(org_a, alice):
    client = Client()
    client.force_login(alice)
    assert (
        reverse("audit_log", args=[org_a.slug]).encode()
        in client.get(reverse("overview", args=[org_a.slug])).content
    )
