"""CORS in a real browser: a page on another origin calls the gateway with fetch and its
key. The org's allowed origin reads the answer; any other origin is refused by the
browser (Debian's chromium through Playwright, as the other browser tests)."""

import functools
import http.server
import threading
from urllib.parse import quote

import pytest

from gateway import services
from gateway.tests.conftest import ACTOR, free_port, refresh_snapshot, usage_rows
from gateway.tests.test_browser import chromium_page

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>app</title>
<script src="/app.js" defer></script></head><body><pre id="out">waiting</pre></body></html>"""
# A browser app as one would write it: fetch with the key, show the answer or the failure.
APP_JS = """
const params = new URLSearchParams(location.search);
const out = document.getElementById("out");
fetch(params.get("gateway") + "/v1/chat/completions", {
  method: "POST",
  headers: {"Authorization": "Bearer " + params.get("key"), "Content-Type": "application/json"},
  body: JSON.stringify({model: "chat-small", messages: [{role: "user", content: "hi"}]}),
}).then(async (r) => {
  const body = await r.json();
  out.textContent = "status " + r.status + " request " + r.headers.get("x-request-id") +
    " answer " + body.choices[0].message.content;
}).catch((e) => { out.textContent = "blocked " + e.name; });
"""


class _Site(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the handler's API
        body, kind = (APP_JS, "text/javascript") if self.path == "/app.js" else (PAGE, "text/html")
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def _site() -> tuple[str, http.server.ThreadingHTTPServer]:
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(_Site))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{port}", server


@pytest.fixture
def sites():
    allowed, refused = _site(), _site()
    yield allowed[0], refused[0]
    for _origin, server in (allowed, refused):
        server.shutdown()


def test_a_page_on_an_allowed_origin_reads_the_answer_and_another_is_refused(
    acme, sites, monkeypatch
):
    allowed, refused = sites
    services.gateway_config_set(actor=ACTOR, org=acme.org, cors_origins=[allowed])
    refresh_snapshot()
    query = f"?gateway={quote(acme.url)}&key={quote(acme.raw)}"
    with chromium_page(monkeypatch) as page:
        page.goto(allowed + "/" + query)
        page.wait_for_function("document.getElementById('out').textContent !== 'waiting'")
        text = page.inner_text("#out")
        assert text.startswith("status 200 request ") and "answer word0" in text
        assert "request null" not in text  # x-request-id is exposed to the page

        page.goto(refused + "/" + query)
        page.wait_for_function("document.getElementById('out').textContent !== 'waiting'")
        assert page.inner_text("#out") == "blocked TypeError"
    # The allowed page's request, once; the refused one stopped at its preflight.
    assert len(usage_rows(acme.org)) == 1
    assert len(acme.fake.requests) == 1
