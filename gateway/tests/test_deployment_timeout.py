"""A deployment's own timeout (docs/gateway.md, "Time per attempt"): one attempt on it may
take that long (to a stream's first output) before the request fails over, in place of its
share of the org's deadline, last candidate or not, always within the deadline. Set over
REST, the config file and the dashboard's Edit page; exported; 0 refused everywhere."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from gateway import services
from gateway.models import Deployment
from gateway.tests.conftest import ACTOR, refresh_snapshot, usage_rows
from gateway.tests.fake_upstream import Behaviour
from gateway.tests.test_failover_deadline import _answered, _called, _timeout, post

JSON = "application/json"


def _own_timeout(acme, upstream, seconds):
    Deployment.objects.filter(org=acme.org, upstream_model=upstream).update(timeout_s=seconds)
    refresh_snapshot()


@pytest.mark.parametrize("stream", [False, True])
def test_a_hanging_deployment_with_its_own_timeout_fails_over_after_it(acme, gw, stream):
    """Deadline 20 s: its share would be 10 s; its own timeout of 1 s moves on after 1 s."""
    _timeout(acme, 20)
    _own_timeout(acme, "primary-model", 1)
    acme.fake.behaviours["primary-model"] = Behaviour(hang=True)
    status, text, _headers, took = post(acme, "/v1/chat/completions", "ha-chat", stream)
    _answered(status, text, stream)
    assert 0.9 < took < 4, took
    assert _called(acme) == ["primary-model", "secondary-model"]


def test_a_slow_answer_within_its_own_timeout_is_not_cut_at_its_share(acme, gw):
    """Deadline 3 s, two candidates: the first's share is 1.5 s, and an answer that takes
    2 s was cut there and failed over. With its own timeout of 3 s it answers."""
    _timeout(acme, 3)
    acme.fake.behaviours["primary-model"] = Behaviour(latency=2.0)
    status, text, _headers, _took = post(acme, "/v1/chat/completions", "ha-chat", False)
    _answered(status, text, False)
    assert _called(acme) == ["primary-model", "secondary-model"]  # cut at its share
    acme.fake.requests.clear()
    _own_timeout(acme, "primary-model", 3)
    status, text, _headers, _took = post(acme, "/v1/chat/completions", "ha-chat", False)
    _answered(status, text, False)
    assert _called(acme) == ["primary-model"]
    rows = [r for r in usage_rows(acme.org) if r.endpoint == "chat"]
    assert sorted(r.deployment for r in rows) == ["fake/primary-model", "fake2/secondary-model"]


def test_the_last_candidate_s_own_timeout_ends_the_request_before_the_deadline(acme, gw):
    _timeout(acme, 30)
    _own_timeout(acme, "primary-model", 1)
    _own_timeout(acme, "secondary-model", 1)
    gw.retry_rounds = 1
    try:
        acme.fake.behaviours["primary-model"] = Behaviour(hang=True)
        acme.fake.behaviours["secondary-model"] = Behaviour(hang=True)
        status, text, _headers, took = post(acme, "/v1/chat/completions", "ha-chat", False)
    finally:
        gw.retry_rounds = 2
    assert status == 504, text
    assert 1.8 < took < 5, took
    # Their own timeouts ended it, not the org's 30 s deadline, and the message says so.
    message = json.loads(text)["error"]["message"]
    assert message.startswith("Every deployment of this model timed out (last: "), message
    assert "no answer within 1.0 s, its own timeout" in message and "30 s" not in message
    [row] = [r for r in usage_rows(acme.org) if r.endpoint == "chat"]
    assert (row.http_status, row.error_type) == (504, "upstream_timeout")


# ------------------------------------------------------------------------------ setting it
def test_rest_sets_shows_and_clears_it_and_refuses_0(alice_client, acme):
    dep = Deployment.objects.get(org=acme.org, upstream_model="primary-model")
    url = f"/api/gateway/deployments/{dep.id}"
    assert alice_client.get(url).json()["timeout_s"] is None
    response = alice_client.patch(url, {"timeout_s": 7}, content_type=JSON)
    assert response.status_code == 200, response.content
    assert response.json()["timeout_s"] == 7 == Deployment.objects.get(pk=dep.id).timeout_s
    for bad in (0, -1, 1.5, "x"):
        response = alice_client.patch(url, {"timeout_s": bad}, content_type=JSON)
        assert response.status_code == 400, (bad, response.content)
        assert "timeout_s" in response.json()
    assert Deployment.objects.get(pk=dep.id).timeout_s == 7
    response = alice_client.patch(url, {"priority": 3}, content_type=JSON)  # kept by a PATCH
    assert Deployment.objects.get(pk=dep.id).timeout_s == 7
    response = alice_client.patch(url, {"timeout_s": None}, content_type=JSON)
    assert response.status_code == 200 and Deployment.objects.get(pk=dep.id).timeout_s is None


def test_the_config_file_sets_it_and_the_export_writes_it(tmp_path, db):
    head = (
        "orgs:\n  - slug: acme\n    name: Acme\n    providers:\n      - {name: mock, kind: mock}\n"
        "    deployments:\n"
    )
    path = tmp_path / "bonito.yaml"
    path.write_text(head + "      - {model: m, provider: mock, upstream_model: u, timeout_s: 9}\n")
    call_command("apply_config", str(path), stdout=StringIO(), stderr=StringIO())
    assert Deployment.objects.get().timeout_s == 9
    from gateway.config import org_config_export
    from orgs.models import Organization

    [org] = org_config_export(Organization.objects.get(slug="acme"))["orgs"]
    [exported] = org["deployments"]
    assert exported["timeout_s"] == 9
    path.write_text(head + "      - {model: m, provider: mock, upstream_model: u, timeout_s: 0}\n")
    with pytest.raises(CommandError) as refused:
        call_command("apply_config", str(path), stdout=StringIO(), stderr=StringIO())
    assert "deployments[0].timeout_s" in str(refused.value)
    assert Deployment.objects.get().timeout_s == 9


def test_the_edit_page_sets_it_and_empty_clears_it(alice_client, acme):
    dep = Deployment.objects.get(org=acme.org, upstream_model="primary-model")
    url = f"/o/{acme.org.slug}/providers/deployments/{dep.id}/"
    page = alice_client.get(url)
    assert page.status_code == 200 and 'name="timeout_s"' in page.content.decode()
    fields = {
        "provider": dep.provider_id,
        "model_name": dep.model_name,
        "upstream_model": dep.upstream_model,
        "region": "",
        "priority": dep.priority,
        "weight": dep.weight,
        "is_active": "on",
    }
    assert alice_client.post(url, {**fields, "timeout_s": "12"}).status_code == 302
    assert Deployment.objects.get(pk=dep.id).timeout_s == 12
    refused = alice_client.post(url, {**fields, "timeout_s": "0"})
    assert refused.status_code != 302
    assert Deployment.objects.get(pk=dep.id).timeout_s == 12
    assert alice_client.post(url, {**fields, "timeout_s": ""}).status_code == 302
    assert Deployment.objects.get(pk=dep.id).timeout_s is None


def test_the_service_refuses_0_naming_the_field(acme):
    dep = Deployment.objects.get(org=acme.org, upstream_model="primary-model")
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as refused:
        services.deployment_save(
            actor=ACTOR,
            org=acme.org,
            deployment=dep,
            model_name=dep.model_name,
            provider=dep.provider,
            upstream_model=dep.upstream_model,
            timeout_s=0,
        )
    assert "timeout_s" in refused.value.message_dict
