"""The Logs page's live tail in a real browser (Debian's chromium via Playwright): a row the
tail draws is the row a reload draws — the same markup, user-given names (models, provider,
key) inside <bdi> so a right-to-left name cannot reorder the text around it, and text never
parsed as HTML (static/js/logs-live.js builds it with DOM calls only)."""

import time
import uuid

import pytest

from billing.usage_writer import write_usage
from conftest import PASSWORD
from gateway import services
from gateway.tests.conftest import ACTOR
from gateway.tests.test_browser import chromium_page, shot

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Right-to-left and mixed names: unisolated, "مدل 2 → gpt" draws its parts out of order.
RTL_MODEL = "مدل\u200cها 2"
HEBREW = "מודל-3"
HTML = '<img src=x onerror="window.__xss=1">'


def _rows(org, key) -> list[dict]:
    """A record of each kind the page draws differently."""
    base = {"org_id": org.id, "created_at": time.time(), "input_tokens": 3, "output_tokens": 4}
    return [
        {  # a success routed to another model, by a key with an RTL name
            **base,
            "id": str(uuid.uuid4()),
            "status": "success",
            "http_status": 200,
            "model_requested": RTL_MODEL,
            "model_used": HEBREW,
            "provider": "fake-אב",
            "key_id": key.id,
            "cost": "0.000123",
            "latency_ms": 12,
        },
        {  # an error before routing: no provider, no key
            **base,
            "id": str(uuid.uuid4()),
            "status": "error",
            "http_status": 404,
            "error_type": "model_not_found",
            "model_requested": HTML,
            "cost": "0",
            "latency_ms": 1,
        },
        {  # a model listing: no model
            **base,
            "id": str(uuid.uuid4()),
            "status": "success",
            "http_status": 200,
            "model_requested": "",
            "key_id": key.id,
            "cost": "0",
            "latency_ms": 1,
        },
    ]


# Each row's cells as markup, by the record id in its link.
CELLS = """() => Object.fromEntries([...document.querySelectorAll("#log-rows tr")].map(
  (tr) => [tr.querySelector("a").getAttribute("href"), [...tr.cells].map((td) => td.innerHTML)]))"""


@pytest.mark.parametrize("empty", [True, False], ids=["empty page", "page with rows"])
def test_the_live_tail_draws_a_row_as_a_reload_does(
    live_server_thread, monkeypatch, org_a, alice, gw, empty
):
    key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="مفتاح app")
    if not empty:
        write_usage(_rows(org_a, key)[2:])
    base, logs = live_server_thread.url, f"{live_server_thread.url}/o/{org_a.slug}/logs/"
    with chromium_page(monkeypatch) as page:
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(base + "/login/")
        page.fill("input[name=username]", alice.email)
        page.fill("input[name=password]", PASSWORD)
        with page.expect_navigation():
            page.click("button[type=submit]")
        page.goto(logs)
        page.wait_for_selector("text=Live tail: on")
        before = page.locator("#log-rows tr").count()
        records = _rows(org_a, key)
        write_usage(records)
        # (polled from here: a string predicate is evaluated by eval(), which the page's
        # Content Security Policy refuses, as it should)
        fresh = page.locator("#log-rows tr.fresh")
        deadline = time.monotonic() + 30
        while fresh.count() != len(records) and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        assert fresh.count() == len(records)
        shot(page, "logs-live-tail-names")
        live = page.evaluate(CELLS)
        assert page.evaluate("window.__xss || null") is None
        # Names are isolated: the model cell's names, the provider, the key.
        first = page.locator("#log-rows tr.fresh").last  # prepended: the first record is last
        assert first.locator("td:nth-child(3) > bdi").all_inner_texts() == [RTL_MODEL, HEBREW]
        assert first.locator("td:nth-child(4) > bdi").inner_text() == "fake-אב"
        assert first.locator("td:nth-child(5) > bdi").inner_text() == "مفتاح app"
        page.reload()
        page.wait_for_selector("#log-rows tr")
        reloaded = page.evaluate(CELLS)
        assert errors == []
    assert before == (0 if empty else 1)
    for record in records:
        href = f"/o/{org_a.slug}/logs/{record['id']}/"
        assert live[href] == reloaded[href], record
