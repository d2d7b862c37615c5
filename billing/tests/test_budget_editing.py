"""Budgets managed from the dashboard: edit (raising a spent hard budget lifts its block),
pause, delete, the webhook kept unless replaced; current spend and alert history on the
page; one notice per threshold crossed, each dismissible; a hard budget blocks as soon as
the usage rows that spend it are stored, not at the next minute's check."""

import uuid
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from billing import budgets as budgets_module
from billing.budgets import budget_save, budgets_check_all
from billing.models import Budget, BudgetAlert, Notification
from billing.usage_writer import write_usage
from core.config_version import current_version
from gateway.snapshot_builder import build_snapshot
from gateway.tests.conftest import ACTOR
from orgs.models import AuditLog

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_watch():
    budgets_module._watch.update(at=-1e9, stamp=None, by_org={}, checked={}, bumped=set())


def spend(org, amount, key_id=None):
    write_usage(
        [
            {
                "id": str(uuid.uuid4()),
                "org_id": org.id,
                "key_id": key_id,
                "created_at": timezone.now().timestamp(),
                "model_requested": "chat",
                "model_used": "chat",
                "provider": "fake",
                "status": "success",
                "http_status": 200,
                "cost": amount,
                "input_tokens": 1,
                "output_tokens": 1,
                "latency_ms": 5,
                "request_id": uuid.uuid4().hex,
            }
        ]
    )


def blocked(org) -> bool:
    return "org" in build_snapshot().orgs[org.id].blocked


def edit(client, org, budget, **fields):
    data = {"scope": "org", "period": "monthly", "amount_usd": "10", "hard": "on", **fields}
    return client.post(reverse("budget_edit", args=[org.slug, budget.id]), data)


def test_a_hard_budget_blocks_when_its_rows_are_stored(org_a):
    budget_save(actor=ACTOR, org=org_a, amount_usd=1, hard=True)
    spend(org_a, 0.6)
    assert not blocked(org_a)
    version = current_version()
    spend(org_a, 0.6)  # the writer checks right after storing: no task, no minute's wait
    assert current_version() > version and blocked(org_a)
    assert sorted(BudgetAlert.objects.values_list("threshold", flat=True)) == [50, 80, 100]


def test_raising_a_spent_hard_budget_in_the_dashboard_lifts_its_block(alice_client, org_a):
    budget = budget_save(actor=ACTOR, org=org_a, amount_usd=1, hard=True)
    spend(org_a, 1.5)
    assert blocked(org_a)
    # Adding a larger budget does not lift the smaller one's block (the page says so)...
    budget_save(actor=ACTOR, org=org_a, amount_usd=100, hard=True)
    assert blocked(org_a)
    # ...raising it does.
    assert edit(alice_client, org_a, budget, amount_usd="5").status_code == 302
    budget.refresh_from_db()
    assert budget.amount_usd == Decimal("5.00") and not blocked(org_a)
    assert AuditLog.objects.filter(org=org_a, action__startswith="budget.").exists()
    # Spent again past the raised amount: blocked again at once.
    spend(org_a, 4)
    assert blocked(org_a)


def test_pause_delete_and_the_webhook_kept_unless_replaced(alice_client, org_a, loopback_allowed):
    budget = budget_save(
        actor=ACTOR, org=org_a, amount_usd=1, hard=True, webhook_url="https://hooks.example.com/x"
    )
    spend(org_a, 2)
    assert blocked(org_a)
    edit(alice_client, org_a, budget, amount_usd="1", is_active="off")
    budget.refresh_from_db()
    assert not budget.is_active and not blocked(org_a)
    assert budget.webhook_url == "https://hooks.example.com/x"  # left blank: kept
    edit(alice_client, org_a, budget, amount_usd="1", clear_webhook="on")
    budget.refresh_from_db()
    assert budget.webhook_url == "" and budget.is_active and blocked(org_a)
    response = alice_client.post(reverse("budget_delete", args=[org_a.slug, budget.id]))
    assert response.status_code == 302 and not Budget.objects.filter(pk=budget.pk).exists()
    assert not blocked(org_a)


def test_only_admins_manage_and_only_their_org_s_budgets(
    alice_client, bob_client, charlie_client, org_a, org_b
):
    budget = budget_save(actor=ACTOR, org=org_a, amount_usd=3)
    assert edit(bob_client, org_a, budget).status_code == 403
    assert (
        bob_client.post(reverse("budget_delete", args=[org_a.slug, budget.id])).status_code == 403
    )
    theirs = budget_save(actor=ACTOR, org=org_b, amount_usd=3)
    assert edit(alice_client, org_a, theirs).status_code == 404
    assert (
        alice_client.post(reverse("budget_delete", args=[org_a.slug, theirs.id])).status_code == 404
    )
    assert alice_client.post(reverse("budget_delete", args=[org_a.slug, "x"])).status_code == 404
    assert (
        alice_client.get(reverse("budgets", args=[org_a.slug]) + f"?edit={theirs.id}").status_code
        == 404
    )
    assert Budget.objects.count() == 2


def test_the_page_shows_spend_percent_and_alert_history(alice_client, org_a):
    budget = budget_save(actor=ACTOR, org=org_a, amount_usd=10, hard=True)
    spend(org_a, 8.5)
    budgets_check_all(now=timezone.now())
    response = alice_client.get(reverse("budgets", args=[org_a.slug]))
    [row] = response.context["budgets"]
    assert row.spent == Decimal("8.5") and row.percent == 85 and not row.blocking
    assert [a.threshold for a in row.recent_alerts] == [80, 50]
    page = response.content.decode()
    assert "$8.50 (85%)" in page and "Edit" in page
    editing = alice_client.get(reverse("budgets", args=[org_a.slug]) + f"?edit={budget.id}")
    assert editing.context["editing"] == budget and 'value="10.00"' in editing.content.decode()


def test_one_notice_per_threshold_each_named_and_dismissible(
    alice_client, vera_client, charlie_client, org_a, org_b
):
    budget_save(actor=ACTOR, org=org_a, amount_usd=10)
    spend(org_a, 15.6)
    budgets_check_all(now=timezone.now())
    messages = sorted(Notification.objects.for_org(org_a).values_list("message", flat=True))
    assert [m.split(" passed ")[1][:4] for m in messages] == ["100%", "50% ", "80% "]
    assert all("(spent $15.60, 156%)" in m for m in messages)
    overview = reverse("overview", args=[org_a.slug])
    notice = Notification.objects.for_org(org_a).first()
    dismiss = reverse("notice_dismiss", args=[org_a.slug, notice.id])
    assert (
        charlie_client.post(reverse("notice_dismiss", args=[org_b.slug, notice.id])).status_code
        == 404
    )
    assert vera_client.post(dismiss).status_code == 403  # a viewer reads, never hides
    assert alice_client.post(dismiss).status_code == 302
    page = alice_client.get(overview).content.decode()
    assert notice.message not in page and page.count("Dismiss this notice") == 2


def test_only_members_and_admins_see_and_use_dismiss(alice_client, bob_client, vera_client, org_a):
    notices = [Notification.objects.create(org=org_a, message=f"notice {i}") for i in range(3)]
    overview = reverse("overview", args=[org_a.slug])
    viewer_page = vera_client.get(overview).content.decode()
    assert "notice 0" in viewer_page and "Dismiss this notice" not in viewer_page
    assert bob_client.get(overview).content.decode().count("Dismiss this notice") == 3
    dismiss = reverse("notice_dismiss", args=[org_a.slug, notices[0].id])
    assert vera_client.post(dismiss).status_code == 403
    notices[0].refresh_from_db()
    assert notices[0].read_at is None  # the viewer's post hid nothing
    for client, notice in ((bob_client, notices[0]), (alice_client, notices[1])):
        response = client.post(reverse("notice_dismiss", args=[org_a.slug, notice.id]))
        notice.refresh_from_db()
        assert response.status_code == 302 and notice.read_at is not None


@pytest.mark.parametrize("next_url", ["overview", "logout", "b", "a.b", "../x", "?x=1", "#top"])
def test_dismiss_takes_a_next_that_is_no_path_for_no_page(bob_client, org_a, next_url):
    """A ``next`` that is not a path (a URL pattern's name, a relative word) was handed to
    redirect(), which reversed it as a view name: NoReverseMatch, a 500 (or a redirect to
    the page of that name). Only a path on this site is followed."""
    notice = Notification.objects.create(org=org_a, message="m")
    dismiss = reverse("notice_dismiss", args=[org_a.slug, notice.id])
    response = bob_client.post(dismiss, {"next": next_url})
    assert response.status_code == 302
    assert response["Location"] == reverse("overview", args=[org_a.slug])


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.example/phish",
        "//evil.example",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "http://testserver/o/acme/",  # this host, but not https on an https request
        "javascript:alert(1)",
        " https://evil.example",
        "https:evil.example",
    ],
)
def test_dismiss_goes_back_only_to_a_path_on_this_site(bob_client, org_a, next_url):
    notice = Notification.objects.create(org=org_a, message="m")
    dismiss = reverse("notice_dismiss", args=[org_a.slug, notice.id])
    response = bob_client.post(dismiss, {"next": next_url}, secure=True)
    assert response.status_code == 302
    assert response["Location"] == reverse("overview", args=[org_a.slug])
    back = reverse("budgets", args=[org_a.slug]) + "?x=1"
    response = bob_client.post(dismiss, {"next": back}, secure=True)
    assert response.status_code == 302 and response["Location"] == back


def test_a_hard_budget_changed_during_traffic_holds_from_the_next_batch(org_a):
    """The class: any change to hard budgets (raised, lowered, paused, resumed, a new one)
    counts for the next batch the usage writer stores, as the gateways see it through
    their incremental refresh (the config change log), never after a reload's delay. A
    budget raised and spent again past its new amount used to stay open for 10 s."""
    from gateway.dataplane.state import SnapshotSource
    from gateway.services import api_key_create
    from gateway.snapshot_builder import SnapshotRefresher

    source = SnapshotSource()
    refresher = SnapshotRefresher(source, interval=60)

    def blocks():
        refresher.refresh_once()  # applies the change log's delta, as every worker does
        return set(source.current.orgs[org_a.id].blocked)

    budget = budget_save(actor=ACTOR, org=org_a, amount_usd=1, hard=True)
    assert blocks() == set()
    spend(org_a, 1.5)
    assert blocks() == {"org"}

    def save(**fields):
        return budget_save(actor=ACTOR, org=org_a, hard=True, budget=budget, **fields)

    save(amount_usd=5)  # raised while traffic flows: open again...
    assert blocks() == set()
    spend(org_a, 4)  # ...and spent past the new amount: closed at once
    assert blocks() == {"org"}
    save(amount_usd=10)
    assert blocks() == set()
    save(amount_usd=6)  # lowered: the next spend past it closes
    assert blocks() == set()
    spend(org_a, 1)
    assert blocks() == {"org"}
    save(amount_usd=6, is_active=False)  # paused: open, whatever is spent
    spend(org_a, 3)
    assert blocks() == set()
    save(amount_usd=12, is_active=True)  # resumed at 12 with 9.5 spent
    assert blocks() == set()
    spend(org_a, 3)
    assert blocks() == {"org"}
    # A hard budget added during traffic counts from the next batch too.
    key, _raw = api_key_create(actor=ACTOR, org=org_a, name="lab")
    budget_save(actor=ACTOR, org=org_a, amount_usd=2, hard=True, scope="key", key=key)
    spend(org_a, 1, key_id=key.id)
    assert blocks() == {"org"}
    spend(org_a, 1.5, key_id=key.id)
    assert blocks() == {"org", f"key:{key.id}"}
