"""On a phone (390 and 320 px) a masked key (bn-abcd…wxyz) reads on one line: in the Keys
table its cell had shrunk to one character (td's overflow-wrap: anywhere lets a cell's
content break anywhere, so the table gave that column the least width) and the key stood one
character per line; so did the row's buttons (R/e/v/o/k/e) and words ("neve r"). They keep
to one line, the table scrolling inside its card, never the page."""

import pytest

from gateway import services
from gateway.tests.conftest import ACTOR, org_models
from gateway.tests.test_browser import chromium_page, shot
from gateway.tests.test_browser_new_user_pass import Console, _sign_in

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# The line boxes each masked key spans (an inline element split over n lines has n rects).
LINES = "sel => [...document.querySelectorAll(sel)].map(e => e.getClientRects().length)"
# The line boxes of each one-word cell's text ("never", "$0.00").
WORD_LINES = """sel => [...document.querySelectorAll(sel)].map(td => {
  const r = document.createRange(); r.selectNodeContents(td); return r.getClientRects().length; })"""
# The lines of text in each of a row's buttons (its content height over its line height).
BUTTON_LINES = """() => [...document.querySelectorAll('tr[data-key-id] :is(button, a.button)')]
  .map(b => { const s = getComputedStyle(b), px = n => parseFloat(s[n]) || 0;
    const content = b.getBoundingClientRect().height - px('paddingTop') - px('paddingBottom')
      - px('borderTopWidth') - px('borderBottomWidth');
    return Math.round(content / px('lineHeight')); })"""
SIDEWAYS = "document.documentElement.scrollWidth - document.documentElement.clientWidth"


def test_a_masked_key_stays_on_one_line_on_a_phone(live_server_thread, monkeypatch, org_a, alice):
    base = live_server_thread.url
    key, _raw = services.api_key_create(
        actor=ACTOR, org=org_a, name="a-key-with-a-long-name-for-the-table"
    )
    services.api_key_rotate(actor=ACTOR, key=key, grace_seconds=3600)  # an old secret shown
    org_models(org_a, "m")
    services.api_key_create(actor=ACTOR, org=org_a, name="short", allowed_models=["m"])
    with chromium_page(monkeypatch) as page:
        console = Console(page)
        _sign_in(page, base)
        for width, height in ((390, 844), (320, 640)):
            page.set_viewport_size({"width": width, "height": height})
            page.goto(f"{base}/o/acme/keys/")
            shot(page, f"keys-masked-{width}")
            lines = page.eval_on_selector_all("code.key-mask", "els => els.length")
            assert lines == 3  # both keys, and the rotated key's old secret
            assert page.evaluate(LINES, "code.key-mask") == [1, 1, 1], width
            assert page.evaluate(BUTTON_LINES) == [1] * 6, width  # 2 rows: edit, revoke, disable
            spend, last_used = "td[data-spend]", "tr[data-key-id] td:nth-last-child(2)"
            assert page.evaluate(WORD_LINES, f"{spend}, {last_used}") == [1] * 4, width
            assert page.evaluate(SIDEWAYS) == 0, width
            page.goto(f"{base}/o/acme/keys/{key.id}/edit/")
            assert page.evaluate(LINES, "code.key-mask") == [1, 1], width
            assert page.evaluate(SIDEWAYS) == 0, width
        assert console.errors == []
