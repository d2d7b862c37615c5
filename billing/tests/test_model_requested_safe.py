"""The model a client asks for is the client's own text: a /v1 body (or a VPC agent's
batch) may name a model holding control, bidi or zero-width characters. No model has such
a name (model names follow the names rule), so the request is answered model_not_found,
and the usage row stores the name with those characters written as escapes
(core.text.name_safe, in billing.usage_writer): the Logs page, a log's page, the live tail,
the CSV export and the REST API (which the CLI reads) never draw a reordering or hidden
character from it (docs/security.md, "Names")."""

import csv
import io
import time
import uuid
from urllib.parse import quote

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.urls import reverse

from billing.models import UsageRecord
from billing.usage_writer import write_usage
from core.text import name_error, name_safe
from gateway.tests.conftest import usage_rows

# What a spoofed model name may hold: each refused by the names rule.
HOSTILE = [
    "gpt-4o\u202e-inim",  # RIGHT-TO-LEFT OVERRIDE
    "\u2066gpt\u2069-4o",  # isolates
    "gpt\u200b-4o",  # ZERO WIDTH SPACE
    "gpt-4o\ufeff",  # BOM
    "gpt\u200d-4o",  # a joiner between Latin letters
    "gpt-4o\x1b[31m",  # ESC: a terminal colour
    "gpt-4o\nFAKE LOG LINE",  # a line feed
    "gpt-4o\x85x",  # C1 NEXT LINE
    "gpt-4o\u2028x",  # LINE SEPARATOR
    "gpt-4o\U000e0041",  # a tag character
    "\u3164",  # a Hangul filler: draws nothing
    "gpt-4o\ufe0f",  # a variation selector after ASCII
]
# Real model names in other scripts are stored as sent.
FINE = ["gpt-4o", "日本語モデル", "👩\u200d💻-coder", "می\u200cخواهم", "=SUM(1)"]


def _bad(text: str) -> bool:
    return name_error(text) is not None


def _csv_cells(response) -> list[str]:
    text = b"".join(response.streaming_content).decode()
    return [cell for row in csv.reader(io.StringIO(text, newline="")) for cell in row]


def _v1_calls(acme, model: str) -> list[httpx.Response]:
    """One request naming ``model`` on each /v1 path that reads a model name."""
    bearer = {"Authorization": f"Bearer {acme.raw}"}
    hi = [{"role": "user", "content": "hi"}]
    anthropic = {"x-api-key": acme.raw, "anthropic-version": "2023-06-01"}
    base = acme.base_url
    bodies = [
        ("chat/completions", bearer, {"model": model, "messages": hi}),
        ("embeddings", bearer, {"model": model, "input": "hi"}),
        ("responses", bearer, {"model": model, "input": "hi"}),
        ("messages", anthropic, {"model": model, "max_tokens": 5, "messages": hi}),
        ("messages/count_tokens", anthropic, {"model": model, "messages": hi}),
    ]
    calls = [httpx.post(f"{base}/{p}", headers=h, json=b, timeout=30) for p, h, b in bodies]
    calls.append(httpx.get(f"{base}/models/{quote(model, safe='')}", headers=bearer, timeout=30))
    calls.append(
        httpx.post(
            f"{base}/audio/transcriptions",
            headers=bearer,
            data={"model": model},
            files={"file": ("a.wav", b"RIFF0000WAVE", "audio/wav")},
            timeout=30,
        )
    )
    return calls


def test_a_hostile_model_name_is_refused_and_stored_escaped(acme):
    for model in HOSTILE:
        for response in _v1_calls(acme, model):
            # Refused as no model's name: not printable (invalid), or no such model; in
            # the path's own error shape (Anthropic's on /v1/messages).
            error = response.json()["error"]
            code = error.get("code") or error["type"]
            assert (response.status_code, code) in (
                (400, "invalid_value"),
                (404, "model_not_found"),
                (400, "invalid_request_error"),
                (404, "not_found_error"),
            ), (model, response.url, response.text)
    stored = [r.model_requested for r in usage_rows(acme.org)]
    assert stored and not any(_bad(m) for m in stored)
    # Those that pass the gateway's printable check reach the row, escaped.
    for model in HOSTILE:
        if model.isprintable():
            assert name_safe(model) in stored, model
    assert "\\u3164" in stored  # the character is named, not dropped

    client = Client()
    client.force_login(acme.alice)
    slug = acme.org.slug
    pages, rest = {}, []
    for number in range(1, len(stored) // 50 + 2):
        url = reverse("logs", args=[slug]) + f"?range=24h&page={number}"
        pages[url] = client.get(url).content.decode()
    url = "/api/gateway/logs?range=24h"
    while url:
        answer = client.get(url)
        pages[url] = answer.content.decode()
        rest += answer.json()["results"]
        url = answer.json()["next"]
    for record in UsageRecord.objects.filter(org=acme.org).exclude(model_requested=""):
        url = reverse("log_detail", args=[slug, record.id])
        pages[url] = client.get(url).content.decode()
    for url, text in pages.items():
        assert not any(model in text for model in HOSTILE), url
    assert sorted(r["model_requested"] for r in rest) == sorted(stored)
    cells = _csv_cells(client.get(reverse("usage_csv", args=[slug]) + "?range=24h"))
    assert not any(_bad(c) for c in cells)
    assert set(stored) <= set(cells)


def _record(org, model: str) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "org_id": org.id,
        "created_at": time.time(),
        "status": "error",
        "http_status": 404,
        "endpoint": "chat",
        "model_requested": model,
    }


@pytest.mark.django_db
def test_the_writer_escapes_only_what_the_rule_refuses(org_a):
    write_usage([_record(org_a, m) for m in HOSTILE + FINE])
    stored = set(UsageRecord.objects.values_list("model_requested", flat=True))
    assert stored == {name_safe(m) for m in HOSTILE} | set(FINE)
    assert not any(_bad(m) for m in stored)
    assert set(FINE) <= stored  # names the rule accepts are kept exactly (filters match them)


@pytest.mark.django_db(transaction=True)
async def test_the_live_tail_gets_the_escaped_name(alice, org_a):
    from billing.tests.test_live_tail import _socket

    socket = await sync_to_async(_socket)(alice, org_a.slug)
    connected, _ = await socket.connect(timeout=10)
    assert connected
    await sync_to_async(write_usage)([_record(org_a, m) for m in HOSTILE])
    pushed = []
    while len(pushed) < len(HOSTILE):
        message = await socket.receive_json_from(timeout=5)
        pushed += [r["model_requested"] for r in message["rows"]]
    await socket.disconnect()
    assert sorted(pushed) == sorted(name_safe(m) for m in HOSTILE)
