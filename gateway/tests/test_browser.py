"""The dashboard in a real browser (Debian's chromium, driven by Playwright; no browser
download). Screenshots of every page land in test-artifacts/screenshots/ (git-ignored)."""

import csv
import shutil
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from conftest import PASSWORD
from gateway import services
from gateway.tests.conftest import ACTOR, refresh_snapshot

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


@contextmanager
def chromium_page(monkeypatch, **context_options):
    """A page in headless Debian chromium (never a downloaded browser), with the flags that
    keep it off this machine's closed network."""
    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls are
    # still synchronous (Django's documented switch for this case).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: apt-get install -y chromium (.ci/run does it)")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900}, **context_options)
        page = context.new_page()
        page.set_default_timeout(15000)
        try:
            yield page
        finally:
            browser.close()


@pytest.fixture
def browser_page(live_server_thread, monkeypatch):
    with chromium_page(monkeypatch, accept_downloads=True) as page:
        page.on("dialog", lambda dialog: dialog.accept())  # revoke confirmations
        yield page


def shot(page, name):
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def answered(page, card: str) -> None:
    """Wait until a Playground answer's stream has ended (its request id is shown)."""
    page.wait_for_function(
        "sel => { const d = document.querySelector(sel + ' dd:last-of-type');"
        " return d && d.textContent !== '…'; }",
        arg=card,
    )


def test_a_user_runs_the_gateway_from_the_dashboard(
    browser_page, live_server_thread, org_a, alice, gw, tmp_path
):
    page, base = browser_page, live_server_thread.url
    mock = services.provider_save(actor=ACTOR, org=org_a, name="mock", kind="mock")
    services.deployment_save(
        actor=ACTOR, org=org_a, model_name="demo-chat", provider=mock, upstream_model="mock-chat"
    )
    services.deployment_save(
        actor=ACTOR, org=org_a, model_name="demo-chat-2", provider=mock, upstream_model="mock-chat"
    )
    from governance.services import routing_policy_save

    routing_policy_save(
        actor=ACTOR,
        org=org_a,
        name="smart-demo",
        strategy="smart",
        models=["demo-chat", "demo-chat-2"],
        smart={"aggressiveness": 0.5},
    )
    refresh_snapshot()

    page.goto(base + "/login/")
    shot(page, "login")
    page.fill("input[name=username]", "alice@acme.test")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/o/acme/")
    assert "Gateway base URL" in page.content()
    shot(page, "overview")

    # Create a key and see it exactly once.
    page.goto(base + "/o/acme/keys/")
    page.fill("#create-key input[name=name]", "browser-key")
    page.click("#create-key button[type=submit]")
    raw = page.inner_text("#new-key")
    assert raw.startswith("bn-")
    shot(page, "keys-created")
    page.goto(base + "/o/acme/keys/")
    assert raw not in page.content() and "browser-key" in page.content()
    # Revoke it (the confirmation dialog is accepted).
    page.click("tr:has-text('browser-key') button.danger")
    page.wait_for_selector("text=revoked")
    shot(page, "keys-revoked")

    # The Playground sends a chat through the gateway.
    page.goto(base + "/o/acme/playground/")
    page.fill("textarea[name=message]", "hello from the browser")
    page.click("#playground-form button[type=submit]")
    answered(page, "#playground-result")  # streamed in by the page's script, no page load
    result = page.inner_text("#playground-result")
    assert page.url == base + "/o/acme/playground/"
    assert "You said: hello from the browser" in result and "in," in result
    assert "Smart route\nnot smart-routed" in result or "Smart route\tnot smart-routed" in result
    shot(page, "playground")
    # The conversation goes on, with a system prompt, and two models side by side.
    page.fill("textarea[name=system]", "Answer in one word.")
    page.select_option("select[name=compare]", "demo-chat-2")
    page.fill("textarea[name=message]", "and a second turn")
    page.click("#pg-send")
    answered(page, "#playground-result")
    answered(page, "#playground-result-2")
    assert "You said: and a second turn" in page.inner_text("#playground-result-2")
    turns = page.locator("#pg-transcript li").all_inner_texts()
    assert len(turns) == 4 and "hello from the browser" in turns[0]
    assert "and a second turn" in turns[2]
    shot(page, "playground-compare")
    # A routing policy is tried as its rt- key would send: the pane is named after it and
    # says which tier smart routing chose.
    page.select_option("select[name=compare]", "policy:smart-demo")
    page.fill("textarea[name=message]", "a third turn")
    page.click("#pg-send")
    answered(page, "#playground-result-2")
    routed = page.inner_text("#playground-result-2")
    assert routed.startswith("routing policy smart-demo") and "tier demo-chat" in routed
    assert gw.sink.flush()

    # It shows up in Logs and in the Usage chart.
    page.goto(base + "/o/acme/logs/")
    assert "demo-chat" in page.inner_text("#log-rows") and "Playground" in page.inner_text(
        "#log-rows"
    )
    shot(page, "logs")
    # The live tail shows a new request without a reload.
    page.wait_for_selector("text=Live tail: on")
    _key, live_raw = services.api_key_create(actor=ACTOR, org=org_a, name="live-key")
    refresh_snapshot()
    httpx.post(
        base + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {live_raw}"},
        json={"model": "demo-chat", "messages": [{"role": "user", "content": "live"}]},
    ).raise_for_status()
    page.wait_for_selector("#log-rows tr.fresh")
    shot(page, "logs-live")
    page.goto(base + "/o/acme/usage/")
    page.wait_for_selector("#usage-chart[data-ready='1']")
    shot(page, "usage")

    # Download the CSV of the same data.
    with page.expect_download() as download:
        page.click("#csv-link")
    path = tmp_path / "usage.csv"
    download.value.save_as(path)
    rows = list(csv.DictReader(path.open()))
    assert any(r["model_requested"] == "demo-chat" and r["status"] == "success" for r in rows)

    for name in ("policies", "routing", "providers", "team", "settings"):
        page.goto(f"{base}/o/acme/{name}/")
        assert page.title().endswith("Acme Corp · Bonito")
        shot(page, name)
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.goto(base + "/o/acme/")
    shot(page, "overview-phone")
