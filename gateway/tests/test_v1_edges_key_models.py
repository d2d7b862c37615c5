"""A key scoped to a model name the org does not have (a typo: `--model gpt4o`) is refused
when it is made or edited, with a 400 listing the valid names; it was accepted, and the key
then got a 403 on /v1 for every model. The org's models and its smart routing alias are
valid; a name a key already holds stays valid after its model is gone."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from gateway import services
from gateway.models import ApiKey, GatewayConfig
from gateway.tests.conftest import ACTOR
from orgs import services as org_services

pytestmark = pytest.mark.django_db


@pytest.fixture
def models(org_a):
    provider = services.provider_save(actor=ACTOR, org=org_a, name="mock", kind="mock")
    for name in ("chat-small", "chat-big"):
        services.deployment_save(
            actor=ACTOR, org=org_a, model_name=name, provider=provider, upstream_model="m"
        )
    return provider


def _create(client, **body):
    return client.post("/api/gateway/keys", {"name": "k", **body}, content_type="application/json")


def test_an_unknown_model_is_a_400_that_lists_the_valid_ones(alice_client, models):
    response = _create(alice_client, allowed_models=["chat-small", "nosuch"])
    assert response.status_code == 400, response.content
    message = " ".join(response.json()["allowed_models"])
    assert "'nosuch' is not a model" in message
    assert "Valid: auto, chat-big, chat-small." in message
    assert not ApiKey.objects.exists()


def test_the_orgs_models_and_its_smart_alias_are_accepted(alice_client, models, org_a):
    response = _create(alice_client, allowed_models=["chat-small", "auto"])
    assert response.status_code == 201, response.content
    assert response.json()["allowed_models"] == ["auto", "chat-small"]
    # an org that renamed its alias: the new name is the valid one
    GatewayConfig.objects.update_or_create(org=org_a, defaults={"auto_model_alias": "smart"})
    assert _create(alice_client, allowed_models=["smart"]).status_code == 201
    assert _create(alice_client, allowed_models=["auto"]).status_code == 400


def test_another_orgs_model_is_unknown_here(alice_client, models, org_b):
    provider = services.provider_save(actor=ACTOR, org=org_b, name="mock", kind="mock")
    services.deployment_save(
        actor=ACTOR, org=org_b, model_name="globex-only", provider=provider, upstream_model="m"
    )
    response = _create(alice_client, allowed_models=["globex-only"])
    assert response.status_code == 400
    assert "globex-only" not in response.json()["allowed_models"][0].split("Valid:")[1]


def test_an_edit_adding_an_unknown_model_is_refused_and_changes_nothing(alice_client, models):
    key_id = _create(alice_client, allowed_models=["chat-small"]).json()["id"]
    response = alice_client.patch(
        f"/api/gateway/keys/{key_id}",
        {"allowed_models": ["chat-small", "chat-bgi"]},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "'chat-bgi' is not a model" in response.json()["allowed_models"][0]
    assert ApiKey.objects.get(pk=key_id).allowed_models == ["chat-small"]


def test_a_name_whose_model_is_gone_does_not_block_an_edit(alice_client, models, org_a):
    key_id = _create(alice_client, allowed_models=["chat-small", "chat-big"]).json()["id"]
    for dep in org_a.deployments.filter(model_name="chat-big"):
        services.deployment_delete(actor=ACTOR, deployment=dep)
    response = alice_client.patch(
        f"/api/gateway/keys/{key_id}", {"name": "renamed"}, content_type="application/json"
    )
    assert response.status_code == 200
    response = alice_client.patch(
        f"/api/gateway/keys/{key_id}",
        {"allowed_models": ["chat-big"]},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    assert ApiKey.objects.get(pk=key_id).allowed_models == ["chat-big"]


def test_the_service_refuses_it_for_every_way_in(org_a, models):
    with pytest.raises(ValidationError) as refused:
        services.api_key_create(actor=ACTOR, org=org_a, name="k", allowed_models=["nosuch"])
    assert "allowed_models" in refused.value.message_dict


def test_the_cli_says_why(transactional_db, org_a, alice, models, live_server_thread, tmp_path):
    _pat, token = org_services.pat_create(actor=ACTOR, user=alice, org=org_a, name="cli")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "BONITO_CONFIG_DIR": str(tmp_path / "cfg"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "cli"),
    }

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "bonito_cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    url = live_server_thread.url
    login = cli("--url", url, "auth", "login", "--token", token)
    assert login.returncode == 0, login.stderr
    refused = cli("keys", "create", "--name", "ci", "--model", "nosuch", "--json")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "'nosuch' is not a model" in refused.stderr + refused.stdout
    assert "chat-small" in refused.stderr + refused.stdout
    made = cli("keys", "create", "--name", "ci", "--model", "chat-small", "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["allowed_models"] == ["chat-small"]


# ------------------------------------------------------------------ allowed_providers too
def test_an_unknown_provider_is_a_400_that_lists_the_valid_ones(alice_client, models):
    response = _create(alice_client, allowed_providers=["mock", "bedrokc"])
    assert response.status_code == 400, response.content
    message = response.json()["allowed_providers"][0]
    assert "'bedrokc' is not a provider" in message
    assert "bedrock" in message and "mock" in message.split("Valid:")[1]
    assert not ApiKey.objects.exists()


def test_connection_names_and_kinds_are_accepted(alice_client, models):
    response = _create(alice_client, allowed_providers=["mock", "bedrock", "openai"])
    assert response.status_code == 201, response.content
    key_id = response.json()["id"]
    response = alice_client.patch(
        f"/api/gateway/keys/{key_id}",
        {"allowed_providers": ["mock", "nosuch", "other"]},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "'nosuch', 'other' are not providers" in response.json()["allowed_providers"][0]
