"""POST /v1/feedback's edges (docs/smart-routing.md *Feedback*): a score out of range is
quoted as sent (1.0000001 is not "1"), -0.0 is stored and echoed as 0.0, and a request id
is read without the spaces and tabs around it, in the x-request-id header (HTTP's field
values have none: httpx strips them, so an app rating "a b  " sends "a b") and in the
feedback body."""

import httpx
import pytest

from gateway.dataplane.errors import GatewayError
from gateway.dataplane.proxy import parse_feedback
from gateway.tests import raw_http
from gateway.tests.conftest import usage_rows


def _auth(raw):
    return {"Authorization": f"Bearer {raw}"}


def _chat(acme, **headers):
    return httpx.post(
        acme.base_url + "/chat/completions",
        json={"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]},
        headers={**_auth(acme.raw), **headers},
        timeout=30,
    )


def _feedback(acme, payload):
    return httpx.post(
        acme.base_url + "/feedback", json=payload, headers=_auth(acme.raw), timeout=30
    )


# ---------------------------------------------------------------------- the score
@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"1.0000001", "1.0000001"),
        (b"-0.0000001", "-1e-07"),
        (b"1.5", "1.5"),
        (b"-1", "-1"),
        # past 64 bits (orjson reads a decimal) and past 308 digits (it reads nothing):
        # the integer as written, a long one cut short
        (b"100000000000000000000", "100000000000000000000"),
        (b"-18446744073709551616", "-18446744073709551616"),
        (b"9" * 400, "9" * 20 + "… (400 digits)"),
        (b"1e20", "1e+20"),  # a decimal stays one
        (b"12345678901234567", "12345678901234567"),
    ],
)
def test_a_score_out_of_range_is_quoted_as_sent(raw, shown):
    with pytest.raises(GatewayError) as info:
        parse_feedback(b'{"request_id": "r", "score": ' + raw + b"}")
    assert info.value.message == f"score must be from 0 (bad) to 1 (good); it is {shown}."
    assert (info.value.code, info.value.param) == ("invalid_value", "score")


def test_a_decimal_past_a_double_is_too_large_not_invalid_json():
    for raw in (b"1e400", b"-1e400"):
        with pytest.raises(GatewayError) as info:
            parse_feedback(b'{"request_id": "r", "score": ' + raw + b"}")
        assert info.value.code == "invalid_json"
        assert info.value.message.startswith("The request body holds a number too large")
    with pytest.raises(GatewayError) as info:  # what is not JSON is still said to be
        parse_feedback(b'{"request_id": "r", "score": 1e400, }')
    assert "not valid JSON" in info.value.message


@pytest.mark.parametrize("raw", [b"-0.0", b"-0", b"0", b"0.0", b"-0e5"])
def test_a_zero_score_is_zero_whatever_its_sign(raw):
    _rid, score = parse_feedback(b'{"request_id": "r", "score": ' + raw + b"}")
    assert score == 0.0 and str(score) == "0.0"


def test_minus_zero_is_stored_and_echoed_as_zero(acme, gw):
    rid = _chat(acme).headers["x-request-id"]
    usage_rows()
    response = httpx.post(
        acme.base_url + "/feedback",
        content=b'{"request_id": "' + rid.encode() + b'", "score": -0.0}',
        headers={**_auth(acme.raw), "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert b'"score":0.0' in response.content and b"-0.0" not in response.content
    [row] = [r for r in usage_rows(acme.org) if r.endpoint == "chat"]
    assert row.feedback_score == 0.0 and str(row.feedback_score) == "0.0"


def test_a_score_just_past_1_is_told_how_far_over_v1(acme, gw):
    response = _feedback(acme, {"request_id": "r", "score": 1.0000001})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "score must be from 0 (bad) to 1 (good); it is 1.0000001."
    )


# ---------------------------------------------------------------------- the request id
def _raw_chat(acme, request_id: bytes) -> bytes:
    body = b'{"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]}'
    sock = raw_http.connect(acme.url)
    with sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + acme.raw.encode() + b"\r\n"
            b"Content-Type: application/json\r\nConnection: close\r\n"
            b"x-request-id:" + request_id + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        [(head, _body)] = raw_http.responses(raw_http.read_until_close(sock))
    return head


@pytest.mark.parametrize("sent", [b" a b  ", b"\ta b\t ", b"a b \t"])
def test_an_x_request_id_is_read_without_the_spaces_and_tabs_around_it(acme, gw, sent):
    head = _raw_chat(acme, sent)
    assert b"\r\nx-request-id: a b\r\n" in head.lower(), head
    [row] = [r for r in usage_rows(acme.org) if r.endpoint == "chat"]
    assert row.request_id == "a b"
    # the app rates what httpx sends of it, "a b"; or what it kept, with its spaces
    for rid in ("a b", "a b  ", "\ta b"):
        response = _feedback(acme, {"request_id": rid, "thumbs": "up"})
        assert response.status_code == 200, (rid, response.text)
        assert response.json()["request_id"] == "a b"
    assert [r.feedback_score for r in usage_rows(acme.org) if r.endpoint == "chat"] == [1.0]


def test_spaces_inside_an_id_are_kept(acme, gw):
    head = _raw_chat(acme, b" my  app 42 ")
    assert b"\r\nx-request-id: my  app 42\r\n" in head.lower(), head
    assert _feedback(acme, {"request_id": "my app 42", "score": 1}).status_code == 404


def test_an_id_of_spaces_and_tabs_is_empty(acme, gw):
    response = _feedback(acme, {"request_id": " \t ", "score": 1})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_value"


@pytest.mark.parametrize("sent", [" a b  ", "\ta b\t ", "a b \t"])
def test_the_header_s_id_is_stripped_whatever_the_http_server_passes_on(sent):
    """uvicorn with httptools (the served stack) drops the spaces around a header value,
    but httptools alone keeps those after it: the id is stripped where it is read."""
    from gateway.dataplane.proxy import _request_id

    assert _request_id({"x-request-id": sent}) == "a b"
    assert _request_id({"x-request-id": " \t "}).startswith("req_")  # none: one is made


# ---------------------------------------------------------------------- rated at once
def test_feedback_sent_at_once_rates_a_request_recorded_a_moment_later(acme, gw, monkeypatch):
    """A usage record is written in a batch a moment after its response: feedback sent at
    once (an app rating what it just showed) found none and was a 404, two times in three
    in an outside check. It now looks again for up to FEEDBACK_WAITS' sum before a 404."""
    monkeypatch.setattr(gw.sink, "linger", 0.6)  # the batch waits 0.6 s for more records
    rid = _chat(acme).headers["x-request-id"]
    rated = _feedback(acme, {"request_id": rid, "score": 1})
    assert rated.status_code == 200, rated.text
    assert rated.json()["rated"] == 1
    [row] = [r for r in usage_rows(acme.org) if r.endpoint == "chat"]
    assert row.request_id == rid and row.feedback_score == 1.0


def test_an_unknown_id_is_a_404_after_the_waits(acme, gw):
    from gateway.dataplane.proxy import FEEDBACK_WAITS

    response = _feedback(acme, {"request_id": "never-sent-1", "score": 1})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "request_not_found"
    assert f"looked for {sum(FEEDBACK_WAITS):g} s" in response.json()["error"]["message"]
    assert response.elapsed.total_seconds() >= sum(FEEDBACK_WAITS)


def test_a_null_score_beside_thumbs_is_not_sent(acme, gw):
    """An app's form with one of the two left empty sends it as null: null is "not sent",
    as in the other endpoints' optional fields (it was refused as "not both")."""
    rid = _chat(acme).headers["x-request-id"]
    for body, stored in (
        ({"request_id": rid, "score": None, "thumbs": "up"}, 1.0),
        ({"request_id": rid, "score": 0.25, "thumbs": None}, 0.25),
    ):
        response = _feedback(acme, body)
        assert response.status_code == 200, response.text
        assert response.json()["score"] == stored


def test_an_id_that_names_no_request_is_a_404_at_once_saying_why(acme, gw):
    response = _feedback(acme, {"request_id": "caf\u00e9-42", "score": 1})
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert "printable ASCII" in message and "looked for" not in message
    assert response.elapsed.total_seconds() < 1
