"""A provider's stored credentials go only to the endpoint they were entered for: changing
where a connection sends them (its endpoint, or its kind, which decides the default host)
without entering them again is refused naming the field, from REST, the dashboard and
apply_config alike, and changes nothing; with the credentials typed again, or for a
connection that holds none, the change is saved (adversarial review: a PATCH of api_base
alone kept the key and sent it to the new host)."""

import json
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse

from gateway import services
from gateway.models import ProviderConnection
from gateway.tests.conftest import ACTOR
from gateway.tests.test_provider_credentials import SERVICE_ACCOUNT

pytestmark = pytest.mark.django_db

HOME = "https://llm.acme.example.com/v1"
ATTACKER = "https://attacker.example.net/v1"
KEY = "sk-stored-secret-0123456789"


def _provider(org, kind="openai_compatible", api_base=HOME, credentials=None):
    return services.provider_save(
        actor=ACTOR,
        org=org,
        name="llm",
        kind=kind,
        api_base=api_base,
        credentials={"api_key": KEY} if credentials is None else credentials,
    )


def _unchanged(provider, api_base=HOME, kind="openai_compatible"):
    stored = ProviderConnection.objects.get(pk=provider.pk)
    assert (stored.api_base, stored.kind) == (api_base, kind)
    assert stored.get_credentials() == {"api_key": KEY}


@pytest.mark.parametrize(
    "kind,home",
    [("openai_compatible", HOME), ("openai", ""), ("anthropic", ""), ("azure_openai", HOME)],
)
@pytest.mark.parametrize("elsewhere", [ATTACKER, "https://llm.acme.example.com/v2", ""])
def test_the_service_refuses_a_new_endpoint_with_the_stored_credentials(
    org_a, kind, home, elsewhere
):
    provider = _provider(org_a, kind=kind, api_base=home)
    if elsewhere == home or (kind in ("openai_compatible", "azure_openai") and not elsewhere):
        return  # no move (or an endpoint the kind requires: refused for that already)
    with pytest.raises(ValidationError) as info:
        services.provider_save(actor=ACTOR, org=org_a, name="llm", kind=kind, api_base=elsewhere)
    assert info.value.message_dict == {"api_base": [services.CREDENTIALS_AGAIN]}
    _unchanged(provider, api_base=home, kind=kind)


def test_the_same_endpoint_other_fields_or_no_stored_credentials_still_save(org_a):
    provider = _provider(org_a)
    # The same endpoint (a trailing slash is the same), other fields: the key stays.
    services.provider_save(
        actor=ACTOR,
        org=org_a,
        name="llm",
        kind="openai_compatible",
        api_base=HOME + "/",
        is_active=False,
    )
    provider.refresh_from_db()
    assert provider.get_credentials() == {"api_key": KEY} and not provider.is_active
    # Typed again with the move: saved, and those are what the new host gets.
    services.provider_save(
        actor=ACTOR,
        org=org_a,
        name="llm",
        kind="openai_compatible",
        api_base=ATTACKER,
        credentials={"api_key": "sk-new"},
    )
    provider.refresh_from_db()
    assert (provider.api_base, provider.get_credentials()) == (ATTACKER, {"api_key": "sk-new"})
    # A connection holding no credentials has nothing to hand over: it moves freely.
    bare = services.provider_save(
        actor=ACTOR, org=org_a, name="bare", kind="openai_compatible", api_base=HOME
    )
    services.provider_save(
        actor=ACTOR, org=org_a, name="bare", kind="openai_compatible", api_base=ATTACKER
    )
    bare.refresh_from_db()
    assert bare.api_base == ATTACKER and not bare.has_credentials


def test_rest_patch_of_the_endpoint_alone_is_a_400_naming_it(alice_client, org_a):
    provider = _provider(org_a)
    url = f"/api/gateway/providers/{provider.pk}"
    response = alice_client.patch(url, {"api_base": ATTACKER}, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["api_base"] == [services.CREDENTIALS_AGAIN]
    assert KEY not in response.content.decode()
    _unchanged(provider)
    response = alice_client.patch(
        url,
        {"api_base": ATTACKER, "credentials": {"api_key": "sk-new"}},
        content_type="application/json",
    )
    assert response.status_code == 200 and response.json()["has_credentials"] is True
    provider.refresh_from_db()
    assert (provider.api_base, provider.get_credentials()) == (ATTACKER, {"api_key": "sk-new"})
    # Unrelated fields still patch alone.
    response = alice_client.patch(url, {"is_active": False}, content_type="application/json")
    assert response.status_code == 200


def test_the_dashboard_edit_form_refuses_it_and_sends_only_what_is_typed(alice_client, org_a):
    provider = _provider(org_a)
    url = reverse("provider_edit", args=[org_a.slug, provider.pk])
    form = {"openai_compatible-api_base": ATTACKER, "is_active": "on"}
    response = alice_client.post(url, form)
    assert response.status_code == 400
    [message] = [str(m) for m in response.context["messages"]]
    assert "Enter the credentials again" in message and message.startswith("Endpoint: ")
    _unchanged(provider)
    response = alice_client.post(url, {**form, "openai_compatible-api_key": "sk-new"})
    assert response.status_code == 302
    provider.refresh_from_db()
    assert (provider.api_base, provider.get_credentials()) == (ATTACKER, {"api_key": "sk-new"})


def test_a_bedrock_move_with_one_secret_typed_does_not_send_the_others(alice_client, org_a):
    """The form merges typed secrets into the stored ones only while the endpoint stays:
    typing just the session token with a new endpoint must not send the stored keys."""
    creds = {"aws_access_key_id": "AKIASTORED", "aws_secret_access_key": "stored-secret"}
    provider = services.provider_save(
        actor=ACTOR, org=org_a, name="br", kind="bedrock", credentials=creds
    )
    url = reverse("provider_edit", args=[org_a.slug, provider.pk])
    response = alice_client.post(
        url,
        {"bedrock-api_base": ATTACKER, "bedrock-aws_session_token": "tok", "is_active": "on"},
    )
    assert response.status_code == 400
    provider.refresh_from_db()
    assert provider.api_base == "" and provider.get_credentials() == creds


def _apply(tmp_path, provider_line):
    path = tmp_path / "bonito.yaml"
    path.write_text(
        "orgs:\n  - slug: acme\n    name: Acme\n    providers:\n      - " + provider_line + "\n"
    )
    call_command("apply_config", str(path), stdout=StringIO(), stderr=StringIO())


def test_apply_config_refuses_a_new_endpoint_or_kind_without_the_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_KEY", KEY)
    _apply(
        tmp_path,
        f"{{name: llm, kind: openai_compatible, api_base: '{HOME}', api_key: env:LLM_KEY}}",
    )
    provider = ProviderConnection.objects.get(name="llm")
    _unchanged(provider)
    for line, field in (
        (f"{{name: llm, kind: openai_compatible, api_base: '{ATTACKER}'}}", "api_base"),
        ("{name: llm, kind: openai}", "kind"),
    ):
        with pytest.raises(CommandError) as info:
            _apply(tmp_path, line)
        assert f"orgs[0].providers[0].{field}: Enter the credentials again" in str(info.value)
        _unchanged(provider)
    _apply(tmp_path, f"{{name: llm, kind: openai_compatible, api_base: '{HOME}'}}")  # same: kept
    _unchanged(provider)
    _apply(
        tmp_path,
        f"{{name: llm, kind: openai_compatible, api_base: '{ATTACKER}', api_key: env:LLM_KEY}}",
    )
    provider.refresh_from_db()
    assert provider.api_base == ATTACKER and provider.get_credentials() == {"api_key": KEY}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "kind,field,credentials",
    [
        ("bedrock", "aws_region_name", {"aws_access_key_id": "AKIA", "aws_secret_access_key": "S"}),
        ("vertex", "vertex_location", {"service_account_json": json.dumps(SERVICE_ACCOUNT)}),
    ],
)
def test_a_region_is_a_region_s_name(org_a, kind, field, credentials):
    """A region goes into the host a signed call is sent to; "evil.com#" was saved (only
    LiteLLM's own check stopped the call): refused where it is saved, the deployment's
    region (which stands in for it) included (an outside check)."""
    provider = services.provider_save(
        actor=ACTOR, org=org_a, name="cloud", kind=kind, credentials=credentials
    )
    for bad in ("evil.com#", "us-east-1.evil.com", "US-EAST-1", "a/b", "x" * 60):
        with pytest.raises(ValidationError, match="must be a region's name"):
            services.provider_save(
                actor=ACTOR, org=org_a, name="cloud", kind=kind, settings={field: bad}
            )
        with pytest.raises(ValidationError, match="must be a region's name"):
            services.deployment_save(
                actor=ACTOR,
                org=org_a,
                model_name="m",
                provider=provider,
                upstream_model="u",
                region=bad,
            )
    services.provider_save(
        actor=ACTOR, org=org_a, name="cloud", kind=kind, settings={field: "eu-west-1"}
    )
    services.deployment_save(
        actor=ACTOR,
        org=org_a,
        model_name="m",
        provider=provider,
        upstream_model="u",
        region="europe-west4",
    )
