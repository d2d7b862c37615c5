"""Provider kinds live in one place, gateway/dataplane/provider_kinds.py: every entry is
complete, every way in (dashboard, REST, apply_config, services) and the data plane read it,
a kind added to the table at run time flows everywhere with nothing else touched, and the
dashboard configures every kind's credentials without ever showing one back."""

import ast
import html
import json
import re
from pathlib import Path

import orjson
import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse

from gateway import services
from gateway.dataplane import credentials, provider_kinds
from gateway.dataplane.netpolicy import NetworkPolicy
from gateway.dataplane.provider_kinds import (
    CREDENTIALS,
    ENDPOINT,
    SETTINGS,
    Field,
    Probe,
    ProviderKind,
)
from gateway.dataplane.snapshot import DeploymentInfo
from gateway.dataplane.upstream import PATHS, LiteLLMAdapter, UpstreamError, Upstreams
from gateway.dataplane.validation import parse_body
from gateway.forms import ProviderForm
from gateway.models import ProviderConnection
from gateway.tests.conftest import ACTOR
from gateway.tests.test_provider_credentials import SERVICE_ACCOUNT

ROOT = Path(__file__).resolve().parents[2]
KIND_NAMES = provider_kinds.names()
INPUTS = {"text", "password", "textarea", "url"}
# A valid value for each field whose entry checks its values (others take any text).
SAMPLES = {
    "service_account_json": json.dumps(SERVICE_ACCOUNT),
    # A region names the host a signed call goes to: a region's name only.
    "aws_region_name": "us-west-2",
    "vertex_location": "europe-west4",
}


def sample(kind: ProviderKind, field: Field, tag: str = "") -> str:
    """A value the kind accepts for this field, distinct per field (and per ``tag``)."""
    if field.name in SAMPLES:
        return SAMPLES[field.name]
    if field.store == ENDPOINT:
        return f"https://{kind.name.replace('_', '-')}{tag}.provider.test/v1"
    return f"{kind.name}-{field.name}-value{tag}"


def form_data(kind: ProviderKind, name: str, values: dict) -> dict:
    return {
        "name": name,
        "kind": kind.name,
        **{f"{kind.name}-{field}": value for field, value in values.items()},
    }


def page(response) -> str:
    return html.unescape(response.content.decode())


# ------------------------------------------------------------------ the table is complete
@pytest.mark.parametrize("name", KIND_NAMES)
def test_every_kind_is_complete(name):
    kind = provider_kinds.get(name)
    assert kind.name == name and re.fullmatch(r"[a-z][a-z0-9_]*", name)
    assert len(name) <= ProviderConnection._meta.get_field("kind").max_length
    assert (name, kind.label) in ProviderConnection._meta.get_field("kind").choices
    assert kind.label
    # Called in process, or through LiteLLM (and then maybe directly too).
    assert kind.builtin != bool(kind.litellm_prefix)
    if kind.builtin:
        assert not kind.fields and not kind.passthrough
    if kind.passthrough:
        # Called directly with the OpenAI wire format, at its endpoint or a default one.
        assert kind.openai_shaped
        endpoint = kind.field("api_base")
        assert kind.default_api_base or (endpoint and endpoint.required)
    names = [f.name for f in kind.fields]
    assert len(names) == len(set(names))
    for field in kind.fields:
        assert field.label and field.input in INPUTS
        assert field.store in (ENDPOINT, SETTINGS, CREDENTIALS)
        assert (field.store == ENDPOINT) == (field.name == "api_base")
        assert field.litellm, "every value a kind takes is given to the call"
        assert not (field.region and field.store != SETTINGS)
        assert not (field.secret and field.default), "a secret has no default"
        if field.check:
            assert field.name in SAMPLES, "add a valid sample of it to SAMPLES"
            assert field.check(SAMPLES[field.name]) is None
    # What Test connection sends is a request /v1 itself would accept.
    assert kind.probe.endpoint in PATHS
    parse_body(orjson.dumps({**kind.probe.request(), "model": "m"}), kind.probe.endpoint)
    assert kind.model_hint, "the deployment form says what an upstream model is for it"
    # The platform's own credentials stand in for a field only where the kind names the
    # vendor's hosts they may be sent to (an endpoint elsewhere needs its own).
    if any(f.ambient and f.secret for f in kind.fields):
        assert kind.ambient_hosts
    for host in kind.ambient_hosts:
        assert re.fullmatch(r"[a-z0-9*-]+(\.[a-z0-9*-]+)+", host), "a host, no scheme or dot"


def test_every_kind_and_its_fields_are_documented():
    table = (ROOT / "docs" / "config.md").read_text()
    for kind in provider_kinds.KINDS.values():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{kind.name}`"))
        for field in kind.fields_in(CREDENTIALS) + kind.fields_in(SETTINGS):
            assert f"`{field.name}`" in row, (kind.name, field.name)


def test_kind_names_are_written_only_in_the_registry():
    """No module outside provider_kinds.py branches on a kind's name; the two below only
    use one (the demo org's mock provider; the default of prewarm)."""
    uses = {("gateway/demo.py", "mock"), ("gateway/dataplane/upstream.py", "openai")}
    found = set()
    for app in ("core", "orgs", "governance", "gateway", "billing", "agents", "bonito"):
        for path in (ROOT / app).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if "/tests/" in rel or "/migrations/" in rel or rel.endswith("provider_kinds.py"):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in provider_kinds.KINDS:
                    found.add((rel, node.value))
    assert found <= uses, f"kind-specific code outside the registry: {found - uses}"


def test_the_dashboard_form_offers_every_kind_and_its_fields(alice_client, org_a):
    content = alice_client.get(reverse("providers", args=[org_a.slug])).content.decode()
    for kind in provider_kinds.KINDS.values():
        assert f'id="kind-{kind.name}"' in content and html.escape(kind.label) in content
        for field in kind.fields:
            assert f'name="{kind.name}-{field.name}"' in content
    assert "<script>" not in content and " onclick" not in content  # CSP: no inline script


# ------------------------------------------------------------------ the dashboard, per kind
@pytest.mark.parametrize("name", KIND_NAMES)
def test_the_dashboard_saves_each_kinds_credentials_encrypted_and_never_shows_them(
    alice_client, org_a, name
):
    kind = provider_kinds.get(name)
    values = {f.name: sample(kind, f) for f in kind.fields}
    posted = form_data(kind, "p1", values)
    for other in provider_kinds.KINDS.values():  # other kinds' fieldsets are not read
        for field in other.fields:
            posted.setdefault(f"{other.name}-{field.name}", sample(other, field, "-unread"))
    response = alice_client.post(reverse("providers", args=[org_a.slug]), posted)
    assert response.status_code == 302, page(response)

    provider = ProviderConnection.objects.get(org=org_a, name="p1")
    secrets = {f.name: values[f.name] for f in kind.fields_in(CREDENTIALS)}
    assert provider.kind == name and provider.get_credentials() == secrets
    assert provider.settings == {f.name: values[f.name] for f in kind.fields_in(SETTINGS)}
    assert provider.api_base == values.get("api_base", "")
    for secret in secrets.values():
        assert secret not in provider.credentials_encrypted
    assert "-unread" not in json.dumps([provider.api_base, provider.settings, secrets])

    edit_url = reverse("provider_edit", args=[org_a.slug, provider.id])
    for url in (reverse("providers", args=[org_a.slug]), edit_url):
        shown = page(alice_client.get(url))
        assert not [s for s in secrets.values() if s in shown]
    shown = page(alice_client.get(edit_url))
    for field in kind.fields:
        tag = re.search(rf'<(input|textarea)[^>]*name="{name}-{field.name}"[^>]*>', shown)[0]
        if field.secret:
            assert 'placeholder="stored — leave blank to keep"' in tag and "value=" not in tag
        else:
            assert f'value="{values[field.name]}"' in tag

    # Edit: a secret left blank keeps the stored one (while the endpoint stays: a new one
    # needs them typed again, test_provider_endpoint_credentials); settings are replaced.
    changed = {
        f.name: values[f.name] if f.store == ENDPOINT else sample(kind, f, "-2")
        for f in kind.fields
        if not f.secret
    }
    response = alice_client.post(edit_url, {**form_data(kind, "", changed), "is_active": "on"})
    assert response.status_code == 302, page(response)
    provider.refresh_from_db()
    assert provider.get_credentials() == secrets
    assert provider.settings == {f.name: changed[f.name] for f in kind.fields_in(SETTINGS)}
    if kind.fields_in(CREDENTIALS):
        first = kind.fields_in(CREDENTIALS)[0]
        new = {first.name: sample(kind, first, "-new")}
        if first.name in SAMPLES:
            new[first.name] = json.dumps({**SERVICE_ACCOUNT, "client_email": "b@x.test"})
        alice_client.post(edit_url, {**form_data(kind, "", {**changed, **new}), "is_active": "on"})
        provider.refresh_from_db()
        assert provider.get_credentials() == {**secrets, **new}
    # Unticking Active switches it off; the name and kind never change from this page.
    alice_client.post(edit_url, {**form_data(kind, "other-name", changed), "kind": "mock"})
    provider.refresh_from_db()
    assert not provider.is_active and provider.name == "p1" and provider.kind == name


@pytest.mark.parametrize("name", KIND_NAMES)
@pytest.mark.parametrize("ambient", [False, True])
def test_the_dashboard_names_each_missing_required_field(
    alice_client, org_a, settings, name, ambient
):
    settings.PROVIDER_AMBIENT_CREDENTIALS = ambient
    kind = provider_kinds.get(name)
    required = [f for f in kind.fields if f.required and not (f.ambient and ambient)]
    response = alice_client.post(
        reverse("providers", args=[org_a.slug]), {"name": "p", "kind": name}
    )
    saved = ProviderConnection.objects.filter(name="p").exists()
    if not required:
        assert response.status_code == 302 and saved
        return
    assert response.status_code == 400 and not saved
    for field in required:
        assert f"{field.label} ({field.name}) is required" in page(response)


BAD_FORMS = [
    ({"name": "p", "kind": "no-such-kind"}, "Select a valid choice"),
    ({"name": "p", "kind": 'openai"><b>'}, "Select a valid choice"),
    ({"name": "not a slug!", "kind": "mock"}, "Name:"),
    ({"name": "p" * 64, "kind": "mock"}, "at most 63"),
    ({"name": "p\x00", "kind": "mock"}, "Null characters"),
    ({"kind": "mock"}, "Name: This field is required"),
    ({"name": "p", "kind": "openai", "openai-api_base": "ftp://x.test/"}, "Endpoint"),
    ({"name": "p", "kind": "openai", "openai-api_key": "k" * 3000}, "at most 2000"),
    ({"name": "p", "kind": "openai", "openai-api_key": "sk-\x00"}, "Null characters"),
    (
        {"name": "p", "kind": "vertex", "vertex-service_account_json": "not json"},
        "Service account key (JSON) (service_account_json) is not JSON",
    ),
    (
        {
            "name": "p",
            "kind": "vertex",
            "vertex-service_account_json": json.dumps(
                {**SERVICE_ACCOUNT, "token_uri": "http://169.254.169.254/"}
            ),
        },
        "token_uri that is not Google's",
    ),
    (
        {"name": "p", "kind": "bedrock", "bedrock-aws_secret_access_key": "wJalr-the-secret"},
        "AWS access key ID (aws_access_key_id) is required",
    ),
    (
        {"name": "p", "kind": "azure_openai", "azure_openai-api_key": "az-key-secret-value"},
        "Endpoint",
    ),
]


@pytest.mark.parametrize(("form", "says"), BAD_FORMS)
def test_a_wrong_form_is_the_forms_error_never_a_500(alice_client, org_a, form, says):
    response = alice_client.post(reverse("providers", args=[org_a.slug]), form)
    assert response.status_code == 400
    assert says in page(response)
    assert not ProviderConnection.objects.exists()
    for name, value in form.items():  # no credential typed comes back in the page
        if name.endswith(("api_key", "secret_access_key", "service_account_json")):
            assert value not in page(response)


def test_the_form_refuses_an_existing_name_instead_of_overwriting_it(alice_client, org_a):
    first = services.provider_save(
        actor=ACTOR, org=org_a, name="p", kind="openai", credentials={"api_key": "sk-first"}
    )
    response = alice_client.post(
        reverse("providers", args=[org_a.slug]),
        {"name": "p", "kind": "anthropic", "anthropic-api_key": "sk-second"},
    )
    assert response.status_code == 400 and "exists" in page(response)
    first.refresh_from_db()
    assert first.kind == "openai" and first.get_credentials() == {"api_key": "sk-first"}


def test_only_the_orgs_admins_edit_its_providers(
    alice_client, bob_client, charlie_client, org_a, org_b
):
    provider = services.provider_save(actor=ACTOR, org=org_a, name="p", kind="mock")
    url = reverse("provider_edit", args=[org_a.slug, provider.id])
    assert bob_client.get(url).status_code == 403
    assert bob_client.post(url, {}).status_code == 403
    assert (
        charlie_client.get(reverse("provider_edit", args=[org_b.slug, provider.id])).status_code
        == 404
    )
    assert alice_client.get(url).status_code == 200


def test_a_stored_provider_of_a_kind_no_longer_known_is_explained(alice_client, org_a):
    gone = ProviderConnection.objects.create(org=org_a, name="old", kind="retired_kind")
    response = alice_client.get(reverse("provider_edit", args=[org_a.slug, gone.id]), follow=True)
    assert response.status_code == 200 and "'retired_kind' is not a provider kind" in page(response)
    response = alice_client.post(reverse("provider_test", args=[org_a.slug, gone.id]), follow=True)
    assert "'retired_kind' is not a provider kind" in page(response)


# ------------------------------------------------------------------ every other way in
def test_every_way_in_refuses_an_unknown_kind_clearly(alice_client, org_a, tmp_path):
    with pytest.raises(ValidationError) as refused:
        services.provider_save(actor=ACTOR, org=org_a, name="p", kind="nope")
    assert "'nope' is not a provider kind" in refused.value.message_dict["kind"][0]
    for kind in ("nope", ["openai"], 7):
        with pytest.raises(ValidationError):
            services.provider_save(actor=ACTOR, org=org_a, name="p", kind=kind)
    answer = alice_client.post(
        "/api/gateway/providers", {"name": "p", "kind": "nope"}, content_type="application/json"
    )
    assert answer.status_code == 400 and "not a provider kind" in answer.json()["kind"][0]
    path = tmp_path / "bonito.yaml"
    path.write_text("orgs:\n  - slug: acme\n    providers:\n      - {name: p, kind: nope}\n")
    with pytest.raises(CommandError, match=r"providers\[0\]\.kind: 'nope' is not a provider kind"):
        call_command("apply_config", str(path))
    assert not ProviderConnection.objects.exists()


WRONG_VALUES = [
    (
        "openai",
        {"credentials": {"aws_access_key_id": "x"}},
        "credentials",
        "take no 'aws_access_key_id'",
    ),
    ("bedrock", {"settings": {"region": "eu-west-1"}}, "settings", "take no 'region'"),
    ("bedrock", {"settings": ["eu-west-1"]}, "settings", "must be a mapping"),
    ("azure_openai", {"settings": {"api_version": 2024}}, "settings", "must be text"),
    # PostgreSQL's JSON cannot store a NUL: refused before the save (a 500 there before).
    ("azure_openai", {"settings": {"api_version": "2024\x00"}}, "settings", "NUL"),
    ("openai", {"credentials": {"api_key": "sk-\x00"}}, "credentials", "NUL"),
    ("mock", {"api_base": "https://x.test"}, "api_base", "no network calls"),
    ("mock", {"credentials": {"api_key": "x"}}, "credentials", "they take: none"),
]


@pytest.mark.parametrize(("kind", "given", "where", "says"), WRONG_VALUES)
def test_a_value_the_kind_does_not_take_is_refused_naming_it(org_a, kind, given, where, says):
    with pytest.raises(ValidationError) as refused:
        services.provider_save(actor=ACTOR, org=org_a, name="p", kind=kind, **given)
    assert says in " ".join(refused.value.message_dict[where])
    assert not ProviderConnection.objects.exists()


def test_rest_and_apply_config_say_which_field_is_wrong(alice_client, org_a, tmp_path):
    answer = alice_client.post(
        "/api/gateway/providers",
        {"name": "p", "kind": "openai", "settings": ["not", "a", "mapping"]},
        content_type="application/json",
    )
    assert answer.status_code == 400 and "must be a mapping" in json.dumps(answer.json())
    answer = alice_client.post(
        "/api/gateway/providers",
        {"name": "p", "kind": "azure_openai", "settings": {"api_version": "v\x00"}},
        content_type="application/json",
    )
    assert answer.status_code == 400 and "NUL" in json.dumps(answer.json())
    answer = alice_client.post(
        "/api/gateway/providers",
        {"name": "p", "kind": "bedrock", "credentials": {"aws_secret_access_key": "s"}},
        content_type="application/json",
    )
    assert answer.status_code == 400
    assert "aws_access_key_id" in json.dumps(answer.json()) and '"s"' not in answer.content.decode()
    path = tmp_path / "bonito.yaml"
    path.write_text(
        "orgs:\n  - slug: acme\n    providers:\n"
        "      - {name: p, kind: azure_openai, api_key: k, settings: {api_version: 2024}}\n"
    )
    with pytest.raises(
        CommandError, match=r"providers\[0\]\.settings: API version .* must be text"
    ):
        call_command("apply_config", str(path))


# ------------------------------------------------------------------ the data plane reads it
def _dep(kind, *, api_base="", region="", settings=None, creds=None):
    return DeploymentInfo(
        id=1,
        model="m",
        provider="p",
        kind=kind,
        upstream_model="up",
        api_base=api_base,
        region=region,
        settings=settings or {},
        credentials=creds or {},
    )


LITELLM_CALLS = [
    # (deployment, ambient credentials allowed, the LiteLLM arguments it must produce)
    (_dep("openai", creds={"api_key": "sk-1"}), False, {"model": "openai/up", "api_key": "sk-1"}),
    (_dep("openai"), False, {"model": "openai/up", "api_key": credentials.NO_KEY}),
    (_dep("anthropic"), True, {"model": "anthropic/up"}),
    (
        _dep("azure_openai", api_base="https://a.test", creds={"api_key": "k"}),
        False,
        {
            "model": "azure/up",
            "api_base": "https://a.test",
            "api_key": "k",
            "api_version": "2024-10-21",
        },
    ),
    (
        _dep("azure_openai", api_base="https://a.test", settings={"api_version": "2025-01-01"}),
        False,
        {
            "model": "azure/up",
            "api_base": "https://a.test",
            "api_key": credentials.NO_KEY,
            "api_version": "2025-01-01",
        },
    ),
    (
        _dep("bedrock", creds={"aws_access_key_id": "AK", "aws_secret_access_key": "S"}),
        False,
        {
            "model": "bedrock/up",
            "aws_access_key_id": "AK",
            "aws_secret_access_key": "S",
            "aws_region_name": "us-east-1",
            # stated, so LiteLLM reads neither from the server's environment
            "api_key": "",
            "aws_session_token": "",
        },
    ),
    (
        _dep(
            "bedrock",
            region="eu-west-3",
            settings={"aws_region_name": "eu-west-1"},
            creds={
                "aws_access_key_id": "AK",
                "aws_secret_access_key": "S",
                "aws_session_token": "T",
            },
        ),
        False,
        {
            "model": "bedrock/up",
            "aws_access_key_id": "AK",
            "aws_secret_access_key": "S",
            "aws_session_token": "T",
            "aws_region_name": "eu-west-3",
            "api_key": "",  # no AWS_BEARER_TOKEN_BEDROCK in place of the keys' signature
        },
    ),
    (
        _dep("bedrock", settings={"aws_region_name": "eu-west-1"}),
        True,
        {"model": "bedrock/up", "aws_region_name": "eu-west-1"},
    ),
    (
        _dep(
            "vertex",
            settings={"vertex_project": "acme"},
            creds={"service_account_json": SAMPLES["service_account_json"]},
        ),
        False,
        {
            "model": "vertex_ai/up",
            "vertex_project": "acme",
            "vertex_location": "us-central1",
            "vertex_credentials": SAMPLES["service_account_json"],
        },
    ),
    (
        _dep("openai_compatible", api_base="https://llm.test/v1"),
        False,
        {"model": "openai/up", "api_base": "https://llm.test/v1", "api_key": credentials.NO_KEY},
    ),
]


@pytest.mark.parametrize(("dep", "ambient", "expected"), LITELLM_CALLS)
def test_each_kinds_credentials_become_its_litellm_arguments(dep, ambient, expected):
    adapter = LiteLLMAdapter(NetworkPolicy(), ambient_credentials=ambient)
    kwargs = adapter._kwargs("chat", dep, {"model": "m", "messages": []}, 30.0)
    fixed = {"timeout": 30.0, "num_retries": 0, "messages": []}
    kind = provider_kinds.get(dep.kind)
    if not kind.openai_shaped:
        fixed["client"] = LiteLLMAdapter._handler  # litellm's own client, guarded
    assert kwargs == {**fixed, **expected}


@pytest.mark.parametrize("kind", ["retired_kind", "mock"])
def test_a_kind_litellm_cannot_call_is_a_502_not_a_crash(kind):
    with pytest.raises(UpstreamError) as failed:
        LiteLLMAdapter(NetworkPolicy())._kwargs("chat", _dep(kind), {"messages": []}, 30.0)
    assert failed.value.status == 502 and kind in str(failed.value)


def test_the_adapter_follows_the_kinds_entry():
    upstreams = Upstreams(passthrough=True)
    for name, kind in provider_kinds.KINDS.items():
        adapter = upstreams.for_deployment(_dep(name))
        expected = (
            upstreams.mock
            if kind.builtin
            else upstreams.http
            if kind.passthrough
            else upstreams.litellm
        )
        assert adapter is expected, name
    assert upstreams.for_deployment(_dep("retired_kind")) is upstreams.litellm
    upstreams.passthrough = False
    assert not any(upstreams.for_deployment(_dep(name)) is upstreams.http for name in KIND_NAMES)


# ------------------------------------------------------------------ a kind added at run time
FAKE_CLOUD = ProviderKind(
    "fakecloud",
    "Fake Cloud",
    litellm_prefix="openai",
    passthrough=True,
    openai_shaped=True,
    fields=(
        Field(
            "api_base",
            "Gateway URL",
            store=ENDPOINT,
            required=True,
            input="url",
            litellm="api_base",
        ),
        Field(
            "api_key",
            "Token",
            store=CREDENTIALS,
            required=True,
            input="password",
            litellm="api_key",
        ),
        Field("zone", "Zone", litellm="zone", help="Where the fake cloud runs."),
    ),
    probe=Probe("embeddings", {"input": "ping"}),
    model_hint="any",
)


@pytest.fixture
def fake_cloud(monkeypatch):
    monkeypatch.setitem(provider_kinds.KINDS, FAKE_CLOUD.name, FAKE_CLOUD)
    return FAKE_CLOUD


def test_a_kind_added_to_the_registry_flows_everywhere(
    alice_client, org_a, fake_cloud, fake_upstream
):
    providers = reverse("providers", args=[org_a.slug])
    content = alice_client.get(providers).content.decode()
    assert 'id="kind-fakecloud"' in content and 'name="fakecloud-zone"' in content
    assert "Where the fake cloud runs." in content

    # Its required fields are required, by name, with nothing written for it but its entry.
    response = alice_client.post(providers, {"name": "fc", "kind": "fakecloud"})
    assert response.status_code == 400
    assert "Token (api_key) is required" in page(response)
    assert "Gateway URL (api_base) is required" in page(response)

    response = alice_client.post(
        providers,
        form_data(
            fake_cloud,
            "fc",
            {"api_base": fake_upstream.url, "api_key": "tok-fake-cloud", "zone": "z1"},
        ),
    )
    assert response.status_code == 302, page(response)
    provider = ProviderConnection.objects.get(name="fc")
    assert provider.get_kind_display() == "Fake Cloud" and provider.settings == {"zone": "z1"}
    assert provider.get_credentials() == {"api_key": "tok-fake-cloud"}
    provider.full_clean()  # the model's choices are the registry's

    # REST takes it and lists it; apply_config too (through the same service).
    answer = alice_client.post(
        "/api/gateway/providers",
        {
            "name": "fc2",
            "kind": "fakecloud",
            "api_base": fake_upstream.url,
            "credentials": {"api_key": "t"},
        },
        content_type="application/json",
    )
    assert answer.status_code == 201, answer.content
    assert {p["kind"] for p in alice_client.get("/api/gateway/providers").json()["results"]} == {
        "fakecloud"
    }

    # Test connection sends the kind's own probe, directly (it is a pass-through kind).
    services.deployment_save(
        actor=ACTOR,
        org=org_a,
        model_name="emb",
        provider=provider,
        upstream_model="text-embedding-3-small",
    )
    response = alice_client.post(
        reverse("provider_test", args=[org_a.slug, provider.id]), follow=True
    )
    assert "Test of fc: text-embedding-3-small answered" in page(response)
    sent = fake_upstream.requests[-1]
    assert sent["endpoint"] == "embeddings" and sent["body"]["input"] == "ping"
    assert sent["headers"]["Authorization"] == "Bearer tok-fake-cloud"


def test_a_kind_added_at_run_time_is_read_by_apply_config(org_a, fake_cloud, tmp_path):
    path = tmp_path / "bonito.yaml"
    path.write_text(
        "orgs:\n  - slug: acme\n    providers:\n"
        "      - {name: fc, kind: fakecloud, api_base: 'https://fc.provider.test', api_key: t,"
        " settings: {zone: z9}}\n"
    )
    call_command("apply_config", str(path))
    provider = ProviderConnection.objects.get(name="fc")
    assert provider.settings == {"zone": "z9"} and provider.get_credentials() == {"api_key": "t"}
    form = ProviderForm(provider=provider)
    assert [s["kind"].name for s in form.sections()] == ["fakecloud"]
