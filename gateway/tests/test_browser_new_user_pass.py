"""A new org admin's pass over the dashboard in a real browser (Debian's chromium via
Playwright): what broke for them. The name fields' `pattern` must compile (chromium reads it
with the `v` flag; an invalid one is a console error and no check at all), a phone-wide
page must not scroll sideways, the live tail must keep to the Logs filters, and the
aggressiveness slider must show its value."""

import httpx
import pytest

from conftest import PASSWORD
from gateway import services
from gateway.tests.conftest import ACTOR, refresh_snapshot
from gateway.tests.test_browser import chromium_page, shot

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


class Console:
    def __init__(self, page):
        self.errors = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on(
            "console",
            lambda msg: self.errors.append(msg.text) if msg.type == "error" else None,
        )


def _sign_in(page, base, email="alice@acme.test"):
    page.goto(base + "/login/")
    page.fill("input[name=username]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/o/acme/")


def _mock_models(org, *names):
    mock = services.provider_save(actor=ACTOR, org=org, name="mock", kind="mock")
    for name in names:
        services.deployment_save(
            actor=ACTOR, org=org, model_name=name, provider=mock, upstream_model="mock-chat"
        )
    refresh_snapshot()
    return mock


def test_name_patterns_compile_and_check_names(live_server_thread, monkeypatch, org_a, alice):
    base = live_server_thread.url
    with chromium_page(monkeypatch) as page:
        console = Console(page)
        _sign_in(page, base)
        for path, field in (
            ("providers/", "form:has(.kinds) input[name=name]"),
            ("routing/", "section:has(h2:text-is('New routing policy')) input[name=name]"),
        ):
            page.goto(f"{base}/o/acme/{path}")
            page.fill(field, "has a space")
            assert page.eval_on_selector(field, "e => e.validity.patternMismatch"), path
            page.fill(field, "azure-east_2")
            assert page.eval_on_selector(field, "e => e.validity.valid"), path
        assert console.errors == []


def test_phone_wide_pages_do_not_scroll_sideways(live_server_thread, monkeypatch, org_a, alice):
    base = live_server_thread.url
    _mock_models(org_a, "demo-chat")
    services.api_key_create(actor=ACTOR, org=org_a, name="a-key-with-a-long-name-for-the-table")
    with chromium_page(monkeypatch) as page:
        console = Console(page)
        _sign_in(page, base)
        page.set_viewport_size({"width": 390, "height": 844})
        for path in ("keys/", "providers/", "team/", "routing/", "budgets/", "logs/"):
            page.goto(f"{base}/o/acme/{path}")
            sideways = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            shot(page, f"phone-{path.strip('/')}")
            assert sideways == 0, path
        # The narrowest phones: a filter's long key name and the side-by-side cards fit too.
        services.api_key_create(
            actor=ACTOR, org=org_a, name="Playground (a-rather-long-address@acme.test)"
        )
        page.set_viewport_size({"width": 320, "height": 640})
        for path in ("logs/", "usage/", "playground/", "keys/"):
            page.goto(f"{base}/o/acme/{path}")
            sideways = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert sideways == 0, f"{path} at 320 px"
        assert console.errors == []


def test_live_tail_keeps_to_the_filters(live_server_thread, monkeypatch, org_a, alice, gw):
    base = live_server_thread.url
    _mock_models(org_a, "demo-chat", "demo-chat-2")
    _key, raw = services.api_key_create(actor=ACTOR, org=org_a, name="live-key")
    refresh_snapshot()

    def send(model):
        httpx.post(
            base + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {raw}"},
            json={"model": model, "messages": [{"role": "user", "content": "live"}]},
        ).raise_for_status()

    with chromium_page(monkeypatch) as page:
        console = Console(page)
        _sign_in(page, base)
        page.goto(base + "/o/acme/logs/?model=demo-chat-2&status=success")
        page.wait_for_selector("text=Live tail: on")
        send("demo-chat")  # not what the page shows
        send("demo-chat-2")
        page.wait_for_selector("#log-rows tr.fresh")
        page.wait_for_timeout(1000)  # anything else the socket had for us
        fresh = page.locator("#log-rows tr.fresh").all_inner_texts()
        assert len(fresh) == 1 and "demo-chat-2" in fresh[0], fresh
        # The page had no rows: its "No requests in this range" went with the first one.
        assert page.get_by_text("No requests in this range").count() == 0
        # The rows of a range that ended before now are not the tail's either.
        page.goto(base + "/o/acme/logs/?since=2020-01-01&until=2020-01-02")
        page.wait_for_selector("#live-tail")
        send("demo-chat")
        page.wait_for_timeout(1500)
        assert page.locator("#log-rows tr.fresh").count() == 0
        assert console.errors == []


def test_aggressiveness_slider_shows_its_value(live_server_thread, monkeypatch, org_a, alice):
    base = live_server_thread.url
    with chromium_page(monkeypatch) as page:
        console = Console(page)
        _sign_in(page, base)
        page.goto(base + "/o/acme/routing/")
        for form in ("#org-smart form", "section:has(h2:text-is('New routing policy')) form"):
            slider = page.locator(f"{form} input[name=aggressiveness]")
            shown = page.locator(f"{form} output[data-range-for=aggressiveness]")
            assert shown.inner_text() == slider.input_value()
            slider.focus()
            page.keyboard.press("ArrowRight")
            assert shown.inner_text() == slider.input_value() != "50"
        assert console.errors == []


def test_log_detail_names_the_source_once(alice_client, org_a):
    import uuid

    from django.utils import timezone

    from billing.models import UsageRecord

    record = UsageRecord.objects.create(
        id=uuid.uuid4(),
        org=org_a,
        model_requested="m",
        status="success",
        request_id="req-source-once",
        created_at=timezone.now(),
    )
    html = alice_client.get(f"/o/acme/logs/{record.id}/").content.decode()
    assert html.count("<dt>Source</dt>") == 1


def test_the_usage_page_tables_never_paint_over_each_other(
    live_server_thread, monkeypatch, org_a, alice
):
    """The smart routing tables (seven columns) sat in grid cells narrower than themselves
    and painted over the next one: a feedback average read as another table's. At a
    desktop's and a phone's width, no two tables of the page overlap, and the page does not
    scroll sideways (a wide table scrolls in its own box)."""
    from datetime import UTC, datetime, timedelta

    from billing.tests.test_smart_savings import _row

    base = live_server_thread.url
    when = datetime.now(UTC) - timedelta(hours=1)
    for i, (policy, tier) in enumerate(
        [("a-rather-long-policy-name", "lite-model-with-a-long-name"), ("", "pro")] * 3
    ):
        _row(
            org_a,
            when,
            cost="0.0001234",
            top="0.0023456",
            tier=tier,
            policy=policy,
            used=tier,
            feedback_score=0.677 if i % 2 else None,
        )
    overlaps = """() => {
        const boxes = [...document.querySelectorAll('main table')].map(
            t => t.getBoundingClientRect());
        const hits = [];
        boxes.forEach((a, i) => boxes.slice(i + 1).forEach((b, j) => {
            if (a.left < b.right - 1 && b.left < a.right - 1
                && a.top < b.bottom - 1 && b.top < a.bottom - 1) hits.push([i, i + 1 + j]);
        }));
        return [boxes.length, hits];
    }"""
    with chromium_page(monkeypatch) as page:
        console = Console(page)
        _sign_in(page, base)
        for width in (1280, 1600, 375):
            page.set_viewport_size({"width": width, "height": 900})
            page.goto(f"{base}/o/acme/usage/")
            tables, hits = page.evaluate(overlaps)
            assert tables >= 9 and hits == [], (width, hits)
            sideways = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert sideways == 0, width
        assert console.errors == []
