"""A VPC-only org's keys on the shared gateway (Organization.vpc_only): refused on every /v1
path with 403 vpc_only and one usage row each, nothing sent upstream; served when the flag
is off; other orgs untouched. The flag reaches the gateway through the real snapshot
refresher (the change log's deltas). The agent serving them is agents/tests/test_vpc_only.py."""

import httpx
import pytest

from gateway import runtime, services
from gateway.dataplane.keys_check import VPC_ONLY
from gateway.dataplane.snapshot import org_from_dict, org_to_dict
from gateway.snapshot_builder import SnapshotRefresher, load_orgs
from gateway.tests.conftest import ACTOR, org_models, usage_rows
from gateway.tests.test_key_disable import _calls  # one request on each /v1 path
from orgs.models import Organization
from orgs.services import org_update, org_vpc_only_set

pytestmark = pytest.mark.django_db
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def refresher(acme):
    org_update(actor=ACTOR, org=acme.org, deployment_mode=Organization.DeploymentMode.VPC)
    refresher = SnapshotRefresher(runtime.snapshots(), interval=60)
    refresher.refresh_once()
    return refresher


def test_it_refuses_the_orgs_keys_on_every_path_with_one_row_each(acme, refresher):
    org_vpc_only_set(actor=ACTOR, org=acme.org, vpc_only=True)
    refresher.refresh_once()
    sent = len(acme.fake.requests)
    answers = _calls(acme, acme.raw)
    for path, r in answers.items():
        assert r.status_code == 403, (path, r.text)
        error = r.json()["error"]
        assert error["message"] == VPC_ONLY, path
        if path == "messages":  # Anthropic's shape on its API
            assert r.json()["type"] == "error" and error["type"] == "permission_error"
        else:
            assert (error["type"], error["code"]) == ("permission_error", "vpc_only")
    assert len(acme.fake.requests) == sent  # no prompt went anywhere
    rows = usage_rows(acme.org)
    assert len(rows) == len(answers)
    assert {(r.status, r.http_status, r.error_type, r.source) for r in rows} == {
        ("rejected", 403, "vpc_only", "shared_gateway")
    }
    assert sorted(r.endpoint for r in rows) == sorted(["chat", "embeddings", "models", "messages"])


def test_it_serves_them_with_the_flag_off_and_again_once_turned_off(acme, refresher):
    first = _calls(acme, acme.raw)
    assert {p: r.status_code for p, r in first.items()} == dict.fromkeys(first, 200)
    org_vpc_only_set(actor=ACTOR, org=acme.org, vpc_only=True)
    refresher.refresh_once()
    assert _calls(acme, acme.raw)["chat"].status_code == 403
    org_vpc_only_set(actor=ACTOR, org=acme.org, vpc_only=False)
    refresher.refresh_once()
    again = _calls(acme, acme.raw)
    assert {p: r.status_code for p, r in again.items()} == dict.fromkeys(again, 200)


def test_another_org_is_unaffected(acme, refresher, org_b):
    org_models(org_b, "globex-chat")
    _key, raw = services.api_key_create(actor=ACTOR, org=org_b, name="globex-app")
    org_vpc_only_set(actor=ACTOR, org=acme.org, vpc_only=True)
    refresher.refresh_once()
    r = httpx.post(
        f"{acme.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {raw}"},
        json={"model": "globex-chat", "messages": HI},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert _calls(acme, acme.raw)["chat"].status_code == 403
    assert [row.status for row in usage_rows(org_b)] == ["success"]


def test_switching_back_to_the_shared_gateway_serves_the_keys_again(acme, refresher):
    org_vpc_only_set(actor=ACTOR, org=acme.org, vpc_only=True)
    refresher.refresh_once()
    assert _calls(acme, acme.raw)["chat"].status_code == 403
    org_update(actor=ACTOR, org=acme.org, deployment_mode=Organization.DeploymentMode.SHARED)
    refresher.refresh_once()
    assert _calls(acme, acme.raw)["chat"].status_code == 200


def test_a_shared_org_is_never_vpc_only_in_the_snapshot(org_a):
    # A row set behind the services' back (raw SQL, an old restore): the shared gateway is
    # the only place a shared org's keys work, so it serves them.
    Organization.objects.filter(pk=org_a.pk).update(vpc_only=True)
    assert load_orgs([org_a.id])[org_a.id].vpc_only is False
    Organization.objects.filter(pk=org_a.pk).update(deployment_mode="vpc")
    assert load_orgs([org_a.id])[org_a.id].vpc_only is True


def test_the_flag_survives_the_agents_document_and_an_older_one_lacks_it(org_a):
    Organization.objects.filter(pk=org_a.pk).update(deployment_mode="vpc", vpc_only=True)
    info = load_orgs([org_a.id])[org_a.id]
    doc = org_to_dict(info)
    assert doc["vpc_only"] is True and org_from_dict(doc) == info
    del doc["vpc_only"]  # a control plane of an earlier release
    assert org_from_dict(doc).vpc_only is False


def test_the_playground_on_the_shared_gateway_is_refused_too(acme, refresher, alice_client):
    from django.urls import reverse

    org_vpc_only_set(actor=ACTOR, org=acme.org, vpc_only=True)
    refresher.refresh_once()
    response = alice_client.post(
        reverse("playground", args=[acme.org.slug]), {"model": "chat-small", "message": "hi"}
    )
    assert response.status_code == 200
    assert "only through its own VPC agent" in response.content.decode()
    assert acme.fake.requests == []
    assert [(r.status, r.error_type) for r in usage_rows(acme.org)] == [("rejected", "vpc_only")]
