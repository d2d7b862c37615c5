"""A client that leaves before its answer begins ends the request: the call in flight is
cancelled, no other deployment (no dearer tier) is tried, and the one usage row says 499
client_disconnected, billing the prompt to the deployment that was reading it (docs/
gateway.md, Errors). On every endpoint, streamed or not, over HTTP (the live gateway, the
fake upstream), and on the project's own HTTP protocol."""

import socket
import time
from urllib.parse import urlsplit

import orjson
import pytest

from gateway.tests.conftest import usage_rows
from gateway.tests.fake_upstream import Behaviour
from gateway.tests.test_failover_deadline import BODIES, CASES, ENDPOINT, _called, _timeout
from gateway.tests.test_smart_routing import _smart_key, _tiers


def leave_after(url, path, body, key, seconds):
    """Send the request, wait ``seconds`` without reading, close the connection."""
    where = urlsplit(url)
    raw = orjson.dumps(body)
    with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {where.hostname}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n".encode()
            + raw
        )
        time.sleep(seconds)


def the_row(acme, endpoint, within=5.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        rows = [r for r in usage_rows(acme.org) if r.endpoint == endpoint]
        if rows:
            return rows
        time.sleep(0.05)
    return []


@pytest.mark.parametrize(("path", "stream"), CASES)
def test_a_client_gone_before_the_answer_stops_the_failover(acme, gw, path, stream):
    _timeout(acme, 20)
    # The first deployment answers a 500 after 1.5 s: the second would be called then.
    acme.fake.behaviours["primary-model"] = Behaviour(status=500, latency=1.5)
    body = {"model": "ha-chat", **BODIES[path], "stream": stream}
    leave_after(acme.url, path, body, acme.raw, 0.4)
    time.sleep(2.0)  # past the first deployment's answer
    assert _called(acme) == ["primary-model"]
    rows = the_row(acme, ENDPOINT[path])
    assert len(rows) == 1
    [row] = rows
    assert (row.status, row.http_status, row.error_type) == ("error", 499, "client_disconnected")
    assert row.deployment.endswith("primary-model")
    assert row.input_tokens > 0 and row.output_tokens == 0


@pytest.mark.parametrize(("path", "stream"), CASES)
def test_a_client_gone_while_a_tier_hangs_is_recorded_at_once_not_sent_up(acme, gw, path, stream):
    _tiers(acme)
    client = _smart_key(acme, {"thresholds": [0.999999]})  # the cheap tier
    _timeout(acme, 20)
    acme.fake.behaviours["smart-lite-upstream"] = Behaviour(hang=True)
    body = {"model": "auto", **BODIES[path], "stream": stream}
    left = time.monotonic()
    leave_after(acme.url, path, body, client.api_key, 0.4)
    rows = the_row(acme, ENDPOINT[path])
    assert time.monotonic() - left < 3  # not the 10 s share nor the 20 s deadline
    [row] = rows
    assert (row.status, row.http_status, row.error_type) == ("error", 499, "client_disconnected")
    assert (row.model_used, row.route_tier) == ("smart-lite", "smart-lite")
    assert float(row.cost) > 0  # the cheap tier's price for the prompt it read
    time.sleep(0.5)
    assert _called(acme) == ["smart-lite-upstream"]  # never the dearer tier


def test_the_projects_http_protocol_notices_it_too(acme, gw, wire):
    _timeout(acme, 20)
    acme.fake.behaviours["primary-model"] = Behaviour(status=500, latency=1.5)
    body = {"model": "ha-chat", **BODIES["/v1/chat/completions"], "stream": False}
    leave_after(wire, "/v1/chat/completions", body, acme.raw, 0.4)
    time.sleep(2.0)
    assert _called(acme) == ["primary-model"]
    [row] = the_row(acme, "chat")
    assert (row.http_status, row.error_type) == (499, "client_disconnected")


def test_a_client_that_stays_is_answered_after_the_failover(acme, gw):
    """The watcher changes nothing for a client that waits."""
    import httpx

    acme.fake.behaviours["primary-model"] = Behaviour(status=500, latency=0.3)
    r = httpx.post(
        acme.url + "/v1/chat/completions",
        json={"model": "ha-chat", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {acme.raw}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    [row] = the_row(acme, "chat")
    assert (row.status, row.http_status) == ("success", 200)
