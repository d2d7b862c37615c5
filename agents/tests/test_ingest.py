"""POST /api/agent/ingest: usage records from an agent land once, as source=vpc_agent; every
hostile or broken batch is refused whole, with the right status, and writes nothing."""

import gzip
import json
import time
import uuid
from decimal import Decimal

import pytest

from agents.models import IngestBatch
from billing.models import UsageRecord
from conftest import SETUP
from gateway.services import api_key_create


@pytest.fixture
def key_a(org_a):
    return api_key_create(actor=SETUP, org=org_a, name="backend")[0]


@pytest.fixture
def key_b(org_b):
    return api_key_create(actor=SETUP, org=org_b, name="globex-app")[0]


def record(key, **over):
    """The dict the data plane hands its usage sink (gateway.dataplane.proxy)."""
    return {
        "id": str(uuid.uuid4()),
        "org_id": key.org_id,
        "key_id": key.id,
        "team_id": None,
        "endpoint": "chat",
        "model_requested": "gpt-4o",
        "model_used": "gpt-4o",
        "provider": "openai",
        "deployment": "openai/gpt-4o",
        "input_tokens": 10,
        "output_tokens": 5,
        "cached_tokens": 0,
        "cost": 0.00123,
        "latency_ms": 120,
        "ttft_ms": None,
        "status": "success",
        "http_status": 200,
        "error_type": "",
        "request_id": "req_1",
        "source": "shared_gateway",
        "created_at": time.time(),
        **over,
    }


def test_it_writes_records_once_as_vpc_agent_with_their_costs(agent_a, org_a, key_a):
    records = [record(key_a, cost=0.5), record(key_a, cost=0.25, status="error")]
    r = agent_a.ingest(records)
    assert r.status_code == 200, r.content
    assert r.json()["accepted"] == 2 and r.json()["duplicates"] == 0
    rows = UsageRecord.objects.filter(org=org_a)
    assert rows.count() == 2
    assert set(rows.values_list("source", flat=True)) == {"vpc_agent"}
    assert sum(rows.values_list("cost", flat=True)) == Decimal("0.75")
    assert {str(i) for i in rows.values_list("id", flat=True)} == {x["id"] for x in records}


def test_it_accepts_an_uncompressed_body(agent_a, org_a, key_a):
    doc = {"batch_id": str(uuid.uuid4()), "records": [record(key_a)]}
    r = agent_a.ingest_raw(json.dumps(doc).encode(), encoding=None)
    assert r.status_code == 200 and r.json()["accepted"] == 1


def test_a_replayed_batch_gets_its_first_answer_and_writes_nothing(agent_a, org_a, key_a):
    batch_id = uuid.uuid4()
    records = [record(key_a), record(key_a)]
    first = agent_a.ingest(records, batch_id)
    again = agent_a.ingest(records, batch_id)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert UsageRecord.objects.filter(org=org_a).count() == 2


def test_records_already_written_count_as_duplicates_in_a_new_batch(agent_a, org_a, key_a):
    records = [record(key_a), record(key_a)]
    agent_a.ingest(records)
    r = agent_a.ingest([*records, record(key_a)])
    assert r.json()["accepted"] == 1 and r.json()["duplicates"] == 2
    assert UsageRecord.objects.filter(org=org_a).count() == 3


def test_the_same_record_twice_in_a_batch_is_one_row(agent_a, org_a, key_a):
    rec = record(key_a)
    r = agent_a.ingest([rec, dict(rec)])
    assert r.json() == {"batch_id": r.json()["batch_id"], "accepted": 1, "duplicates": 1}
    assert UsageRecord.objects.filter(org=org_a).count() == 1


def test_the_same_batch_id_with_another_payload_is_refused(agent_a, org_a, key_a):
    batch_id = uuid.uuid4()
    agent_a.ingest([record(key_a)], batch_id)
    r = agent_a.ingest([record(key_a)], batch_id)
    assert r.status_code == 422 and r.json()["code"] == "batch_id_reused"
    assert UsageRecord.objects.filter(org=org_a).count() == 1


def test_batch_ids_are_per_org(agent_a, agent_b, key_a, key_b):
    batch_id = uuid.uuid4()
    assert agent_a.ingest([record(key_a)], batch_id).status_code == 200
    assert agent_b.ingest([record(key_b)], batch_id).status_code == 200


@pytest.mark.parametrize(
    "bad",
    [
        {"key_id": "other-org"},
        {"org_id": "other-org"},
        {"team_id": "other-org"},
    ],
)
def test_a_record_naming_another_orgs_key_org_or_team_refuses_the_whole_batch(
    agent_a, org_a, org_b, key_a, key_b, bad
):
    from orgs.models import Team

    team_b = Team.objects.create(org=org_b, name="ops")
    other = {"key_id": key_b.id, "org_id": org_b.id, "team_id": team_b.id}
    field = next(iter(bad))
    r = agent_a.ingest([record(key_a), record(key_a, **{field: other[field]})])
    assert r.status_code == 422
    assert r.json()["code"] == "records_refused"
    assert r.json()["errors"][0]["index"] == 1
    assert not UsageRecord.objects.exists()
    assert not IngestBatch.objects.exists()


@pytest.mark.parametrize(
    "field", ["messages", "prompt", "input", "output", "response", "content", "choices"]
)
def test_a_record_with_content_is_refused(agent_a, key_a, field):
    r = agent_a.ingest([record(key_a, **{field: "the secret prompt"})])
    assert r.status_code == 422
    assert field in r.json()["errors"][0]["reason"]
    assert "the secret prompt" not in r.content.decode()
    assert not UsageRecord.objects.exists()


@pytest.mark.parametrize(
    ("when", "why"),
    [(3600, "future"), (-8 * 86400, "older than 7 days")],
)
def test_times_far_outside_clock_skew_are_refused(agent_a, key_a, when, why):
    r = agent_a.ingest([record(key_a, created_at=time.time() + when)])
    assert r.status_code == 422 and why in r.json()["errors"][0]["reason"]
    assert not UsageRecord.objects.exists()


def test_a_small_clock_skew_is_accepted(agent_a, key_a):
    assert agent_a.ingest([record(key_a, created_at=time.time() + 60)]).status_code == 200


@pytest.mark.parametrize(
    "over",
    [
        {"id": "not-a-uuid"},
        {"id": None},
        {"created_at": "yesterday"},
        {"created_at": "2026-11-30T10:00:00"},  # no offset
        {"status": "great"},
        {"input_tokens": "ten"},
        {"input_tokens": -1},
        {"cost": "free"},
        {"model_requested": ["a", "list"]},
        {"key_id": True},
        # Money and ranges: a negative cost would lower the org's recorded spend; values
        # beyond a column would overflow the dashboards' sums.
        {"cost": -999999.0},
        {"cost": -0.01},
        {"cost": float("nan")},
        {"cost": float("inf")},
        {"cost": 1e10},
        {"cost_top_tier": -1},
        {"input_tokens": 2**70},
        {"output_tokens": 2**31},
        {"http_status": 70000},
        {"feedback_score": 5.0},
        {"route_score": 1e308},
        {"latency_ms": 1.5},
    ],
)
def test_a_record_with_a_wrong_value_is_refused_naming_it(agent_a, key_a, over):
    r = agent_a.ingest([record(key_a), record(key_a, **over)])
    assert r.status_code == 422, r.content
    assert [e["index"] for e in r.json()["errors"]] == [1]
    assert not UsageRecord.objects.exists()


def test_refusals_list_at_most_fifty_records(agent_a, key_a):
    r = agent_a.ingest([record(key_a, status="?") for _ in range(60)])
    assert r.status_code == 422 and len(r.json()["errors"]) == 50
    assert "60 record(s)" in r.json()["detail"]


def test_an_oversized_compressed_body_is_413_stating_the_limit(agent_a, settings, key_a):
    settings.AGENT_INGEST_MAX_BYTES = 2048
    records = [record(key_a, request_id=uuid.uuid4().hex) for _ in range(100)]  # random: big
    body = gzip.compress(json.dumps({"batch_id": str(uuid.uuid4()), "records": records}).encode())
    assert len(body) > 2048
    r = agent_a.ingest_raw(body)
    assert r.status_code == 413 and "2048 bytes" in r.json()["detail"]
    assert not UsageRecord.objects.exists()


def test_a_gzip_bomb_is_stopped_at_the_decompressed_limit(agent_a, settings):
    settings.AGENT_INGEST_MAX_DECOMPRESSED_BYTES = 1024 * 1024
    bomb = gzip.compress(b'{"batch_id": "' + b" " * (64 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < settings.AGENT_INGEST_MAX_BYTES
    r = agent_a.ingest_raw(bomb)
    assert r.status_code == 413
    assert str(1024 * 1024) in r.json()["detail"] and r.json()["code"] == "too_large"


def test_too_many_records_is_413_stating_the_limit(agent_a, settings, key_a):
    settings.AGENT_INGEST_MAX_RECORDS = 3
    r = agent_a.ingest([record(key_a) for _ in range(4)])
    assert r.status_code == 413 and "at most 3 records" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "encoding", "code"),
    [
        (b"\x1f\x8b\x08\x00garbage", "gzip", "bad_gzip"),
        (b"not gzip at all", "gzip", "bad_gzip"),
        (gzip.compress(b"{not json"), "gzip", "bad_json"),
        (gzip.compress(b"[1, 2]"), "gzip", "invalid"),
        (gzip.compress(b'{"batch_id": "x", "records": []}'), "gzip", "invalid"),
        (
            gzip.compress(b'{"batch_id": "%s", "records": [1]}' % str(uuid.uuid4()).encode()),
            "gzip",
            "invalid",
        ),
        (
            gzip.compress(b'{"batch_id": "%s", "records": {}}' % str(uuid.uuid4()).encode()),
            "gzip",
            "invalid",
        ),
        (gzip.compress(b"{}")[:-8], "gzip", "bad_gzip"),  # truncated
        (b"{}", "br", "bad_encoding"),
    ],
    # ids that do not change between collections (gzip stamps the time; pytest-xdist's
    # workers must collect the same tests)
    ids=lambda value: value if isinstance(value, str) else "body",
)
def test_a_broken_body_is_400(agent_a, body, encoding, code):
    r = agent_a.ingest_raw(body, encoding=encoding)
    assert r.status_code == 400, r.content
    assert r.json()["code"] == code
    assert not UsageRecord.objects.exists()


def test_an_empty_batch_is_accepted_and_writes_nothing(agent_a):
    r = agent_a.ingest([])
    assert r.status_code == 200 and r.json()["accepted"] == 0


def test_late_records_mark_their_hours_for_the_rollups(agent_a, key_a, settings):
    from billing.models import RollupDirtyHour

    agent_a.ingest([record(key_a, created_at=time.time() - 3 * 3600)])
    assert RollupDirtyHour.objects.exists()


def test_a_record_of_a_key_deleted_since_is_kept_without_it(agent_a, org_a, key_a):
    from gateway.models import ApiKey

    gone = api_key_create(actor=SETUP, org=org_a, name="temp")[0]
    rec = record(gone, cost=0.75)
    ApiKey.objects.filter(pk=gone.pk).delete()
    r = agent_a.ingest([rec, record(key_a, key_id=10**12)])
    assert r.status_code == 200 and r.json()["accepted"] == 2
    rows = UsageRecord.objects.filter(org=org_a)
    assert list(rows.values_list("key_id", flat=True)) == [None, None]
    assert sum(rows.values_list("cost", flat=True)) == Decimal("0.75") + Decimal("0.00123")


def test_a_deeply_nested_body_is_400_not_500(agent_a):
    body = gzip.compress(b"[" * 200_000 + b"]" * 200_000)
    r = agent_a.ingest_raw(body)
    assert r.status_code in (400, 413) and r.json()["code"] in ("bad_json", "too_many_records")
    r = agent_a.ingest_raw(
        gzip.compress(b'{"batch_id": "x", "records": ' + b"[" * 50_000 + b"]" * 50_000 + b"}")
    )
    assert r.status_code == 400 and r.json()["code"] == "bad_json"


def test_millions_of_tiny_objects_are_refused_before_parsing(agent_a):
    body = b'{"batch_id": "%s", "records": [' % str(uuid.uuid4()).encode()
    body += b",".join([b"{}"] * 2_000_000) + b"]}"
    r = agent_a.ingest_raw(gzip.compress(body))  # ~20 KB compressed
    assert r.status_code == 413 and r.json()["code"] == "too_many_records"


def test_a_record_id_of_another_org_is_refused_not_reported_accepted(
    agent_a, agent_b, key_a, key_b
):
    mine = record(key_a)
    assert agent_a.ingest([mine]).json()["accepted"] == 1
    r = agent_b.ingest([record(key_b), record(key_b, id=mine["id"])])
    assert r.status_code == 422 and [e["index"] for e in r.json()["errors"]] == [1]
    assert UsageRecord.objects.count() == 1
