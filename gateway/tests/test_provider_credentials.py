"""No org spends on the platform's own cloud account: a provider call carries the org's own
credentials (unless the operator allows ambient ones), and a Vertex key cannot send
google-auth to a URL of its choosing."""

import json

import httpx
import pytest
from django.core.exceptions import ValidationError

from gateway import services
from gateway.models import ProviderConnection
from gateway.tests.conftest import ACTOR, refresh_snapshot, usage_rows


def _chat(acme, model: str) -> httpx.Response:
    """A chat request to ``model`` through the live gateway with acme's key."""
    return httpx.post(
        f"{acme.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {acme.raw}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )


SERVICE_ACCOUNT = {
    "type": "service_account",
    "project_id": "acme-ai",
    "private_key_id": "0",
    "private_key": "-----BEGIN PRIVATE KEY-----\nnot-a-real-key\n-----END PRIVATE KEY-----\n",
    "client_email": "gateway@acme-ai.iam.gserviceaccount.com",
    "token_uri": "https://oauth2.googleapis.com/token",
}

REFUSED_CREDENTIALS = [
    ("bedrock", {}),
    ("bedrock", {"aws_access_key_id": "AKIDEXAMPLE"}),
    ("vertex", {}),
    ("vertex", {"service_account_json": "not json"}),
    (
        "vertex",
        {
            "service_account_json": json.dumps(
                {**SERVICE_ACCOUNT, "token_uri": "http://169.254.169.254/token"}
            )
        },
    ),
    (
        "vertex",
        {
            "service_account_json": json.dumps(
                {
                    "type": "external_account",
                    "audience": "//iam.googleapis.com/x",
                    "token_url": "https://sts.googleapis.com/v1/token",
                    "credential_source": {"url": "http://169.254.169.254/latest/meta-data/"},
                }
            )
        },
    ),
    ("vertex", {"service_account_json": json.dumps({"type": "authorized_user"})}),
]


@pytest.mark.parametrize(("kind", "credentials"), REFUSED_CREDENTIALS)
def test_a_cloud_provider_without_its_own_credentials_is_refused_when_saved(
    org_a, kind, credentials
):
    with pytest.raises(ValidationError) as refused:
        services.provider_save(
            actor=ACTOR, org=org_a, name="cloud", kind=kind, credentials=credentials
        )
    assert "credentials" in refused.value.message_dict
    assert not ProviderConnection.objects.filter(name="cloud").exists()


def test_the_rest_api_says_why(alice_client):
    answer = alice_client.post(
        "/api/gateway/providers",
        {"name": "aws", "kind": "bedrock"},
        content_type="application/json",
    )
    assert answer.status_code == 400
    assert "AWS access key" in json.dumps(answer.json())


def test_a_provider_with_its_own_credentials_is_saved(org_a):
    services.provider_save(
        actor=ACTOR,
        org=org_a,
        name="aws",
        kind="bedrock",
        credentials={"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "s3cr3t"},
    )
    services.provider_save(
        actor=ACTOR,
        org=org_a,
        name="gcp",
        kind="vertex",
        credentials={"service_account_json": json.dumps(SERVICE_ACCOUNT)},
    )
    assert ProviderConnection.objects.for_org(org_a).count() == 2


def test_an_operator_may_allow_ambient_credentials(org_a, settings):
    settings.PROVIDER_AMBIENT_CREDENTIALS = True
    services.provider_save(actor=ACTOR, org=org_a, name="aws", kind="bedrock")
    # ...but never a Google credential that names its own token endpoint
    with pytest.raises(ValidationError):
        services.provider_save(
            actor=ACTOR,
            org=org_a,
            name="gcp",
            kind="vertex",
            credentials={
                "service_account_json": json.dumps(
                    {**SERVICE_ACCOUNT, "token_uri": "http://10.0.0.1/"}
                )
            },
        )


@pytest.mark.parametrize("kind", ["bedrock", "vertex"])
def test_a_stored_provider_without_credentials_is_never_called_with_the_platforms(
    acme, gw, monkeypatch, kind
):
    # A provider saved before this rule (or by an operator who since turned ambient off).
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "platform-own-access-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "platform-secret")
    provider = ProviderConnection.objects.create(org=acme.org, name="cloud", kind=kind)
    services.deployment_save(
        actor=ACTOR, org=acme.org, model_name="cloud-chat", provider=provider, upstream_model="m"
    )
    refresh_snapshot()
    answer = _chat(acme, "cloud-chat")
    assert answer.status_code == 502
    error = answer.json()["error"]
    assert "no credentials of its own" in error["message"]
    assert "platform-secret" not in answer.text and "platform-own-access" not in answer.text
    rows = [r for r in usage_rows(acme.org) if r.model_requested == "cloud-chat"]
    assert len(rows) == 1 and rows[0].status != "success"


def test_a_keyless_openai_compatible_provider_never_sends_the_platforms_key(acme, gw, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-platform-own-openai-key-0000000000")
    gw.upstreams.passthrough = False  # LiteLLM reads OPENAI_API_KEY when a call has no key
    gw.upstreams.prewarm()
    keyless = services.provider_save(
        actor=ACTOR,
        org=acme.org,
        name="vllm",
        kind="openai_compatible",
        api_base=acme.fake.url,
    )
    services.deployment_save(
        actor=ACTOR, org=acme.org, model_name="local", provider=keyless, upstream_model="llama"
    )
    refresh_snapshot()
    acme.fake.reset()
    answer = _chat(acme, "local")
    assert answer.status_code == 200
    sent = [r["headers"] for r in acme.fake.requests]
    assert sent and all("sk-platform-own" not in json.dumps(h) for h in sent)


# Lent, the platform's credentials go only to the vendor's own hosts: an org admin who
# points a provider without credentials at a host of their own gets nothing of the server's.
PLATFORM_ENV = {
    "OPENAI_API_KEY": "sk-platform-own-openai-key-0000000000",
    "ANTHROPIC_API_KEY": "sk-ant-platform-own-key-000000000000",
    "AZURE_API_KEY": "platform-own-azure-key-0000000000000",
    "AWS_ACCESS_KEY_ID": "platform-own-access-key-id-0",
    "AWS_SECRET_ACCESS_KEY": "platform-own-aws-secret-000000000000000",
}
LENDING_KINDS = ["openai", "anthropic", "azure_openai", "bedrock", "vertex"]


@pytest.mark.parametrize("kind", LENDING_KINDS)
@pytest.mark.parametrize(
    "api_base",
    [
        "https://collector.example/v1",
        "https://api.openai.com.collector.example",
        "http://api.openai.com/v1",  # the right host, in the clear
        "https://collector.example\\@api.openai.com",
    ],
)
def test_lent_credentials_are_not_saved_for_an_endpoint_elsewhere(org_a, settings, kind, api_base):
    settings.PROVIDER_AMBIENT_CREDENTIALS = True
    with pytest.raises(ValidationError) as refused:
        services.provider_save(actor=ACTOR, org=org_a, name="p", kind=kind, api_base=api_base)
    assert "api_base" in refused.value.message_dict
    assert not ProviderConnection.objects.filter(name="p").exists()


@pytest.mark.parametrize(
    ("kind", "api_base"),
    [
        # Hosts anyone can have under the vendor's domain, with a valid certificate (a VM's
        # name, an API Gateway, Azure API Management), or another of its APIs.
        ("azure_openai", "https://collector.eastus.cloudapp.azure.com"),
        ("azure_openai", "https://collector.azure-api.net"),
        ("azure_openai", "https://collector.azurewebsites.net"),
        ("bedrock", "https://abc123.execute-api.us-east-1.amazonaws.com"),
        ("bedrock", "https://collector.s3.amazonaws.com"),
        ("bedrock", "https://bedrock-runtime.us-east-1.amazonaws.com.collector.example"),
        ("vertex", "https://storage.googleapis.com"),
        ("vertex", "https://storage-collector.p.googleapis.com"),
        ("openai", "https://collector.openai.com"),
        ("anthropic", "https://collector.anthropic.com"),
    ],
)
def test_lent_credentials_go_to_the_vendors_api_hosts_only(org_a, settings, kind, api_base):
    settings.PROVIDER_AMBIENT_CREDENTIALS = True
    with pytest.raises(ValidationError) as refused:
        services.provider_save(actor=ACTOR, org=org_a, name="p", kind=kind, api_base=api_base)
    assert "needs credentials of its own" in str(refused.value.message_dict["api_base"])


@pytest.mark.parametrize(
    ("kind", "api_base"),
    [
        ("openai", ""),
        ("openai", "https://eu.api.openai.com/v1"),
        ("azure_openai", "https://acme.openai.azure.com"),
        ("azure_openai", "https://acme.privatelink.openai.azure.com"),
        ("azure_openai", "https://acme.cognitiveservices.azure.com"),
        ("azure_openai", "https://acme.openai.azure.us"),
        ("bedrock", "https://bedrock-runtime.eu-west-1.amazonaws.com"),
        ("bedrock", "https://bedrock-runtime-fips.us-east-1.amazonaws.com"),
        ("bedrock", "https://vpce-1.bedrock-runtime.us-east-1.vpce.amazonaws.com"),
        ("vertex", "https://us-central1-aiplatform.googleapis.com"),
        ("vertex", "https://aiplatform.googleapis.com"),
        ("vertex", "https://us-central1-aiplatform-mypsc.p.googleapis.com"),
        ("vertex", "https://1234.us-central1-5678.prediction.vertexai.goog"),
        ("anthropic", "https://api.anthropic.com"),
    ],
)
def test_lent_credentials_may_go_to_the_vendors_own_hosts(org_a, settings, kind, api_base):
    settings.PROVIDER_AMBIENT_CREDENTIALS = True
    services.provider_save(actor=ACTOR, org=org_a, name="p", kind=kind, api_base=api_base)
    assert ProviderConnection.objects.get(name="p").api_base == api_base


def test_an_endpoint_elsewhere_with_its_own_credentials_is_saved(org_a, settings):
    settings.PROVIDER_AMBIENT_CREDENTIALS = True
    services.provider_save(
        actor=ACTOR,
        org=org_a,
        name="p",
        kind="openai",
        api_base="https://proxy.example/v1",
        credentials={"api_key": "sk-org-own"},
    )
    assert ProviderConnection.objects.get(name="p").has_credentials


@pytest.mark.parametrize("kind", [*LENDING_KINDS, "openai_compatible"])
def test_a_provider_saved_before_never_sends_lent_credentials_elsewhere(
    acme, gw, monkeypatch, kind
):
    # Saved before the rule (or by the admin, or with ambient off then): the call itself
    # refuses, whatever the database holds. The endpoint is the fake upstream, which
    # records every request that reaches it.
    for name, value in PLATFORM_ENV.items():
        monkeypatch.setenv(name, value)
    gw.upstreams.passthrough = False  # LiteLLM is what reads the environment
    monkeypatch.setattr(gw.upstreams.litellm, "ambient_credentials", True)
    gw.upstreams.prewarm()
    provider = ProviderConnection.objects.create(
        org=acme.org, name="lent", kind=kind, api_base=acme.fake.url
    )
    services.deployment_save(
        actor=ACTOR, org=acme.org, model_name="lent-chat", provider=provider, upstream_model="m"
    )
    refresh_snapshot()
    acme.fake.reset()
    answer = _chat(acme, "lent-chat")
    sent = json.dumps([r["headers"] for r in acme.fake.requests])
    assert all(value not in sent for value in PLATFORM_ENV.values())
    if kind == "openai_compatible":  # never lends: a keyless call carries the placeholder
        assert answer.status_code == 200
        assert "bonito-no-key" in sent
    else:
        assert answer.status_code == 502
        assert "needs credentials of its own" in answer.json()["error"]["message"]
        assert not acme.fake.requests


@pytest.fixture
def recorder():
    """A catch-all HTTP server recording every request (any path: Bedrock's too)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from gateway.tests.conftest import free_port

    seen = []

    class Recording(BaseHTTPRequestHandler):
        def do_POST(self):
            size = int(self.headers.get("Content-Length") or 0)
            seen.append({"path": self.path, "headers": dict(self.headers)})
            self.rfile.read(size)
            out = b'{"message": "recorded"}'
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Recording)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("ambient", [False, True])
@pytest.mark.parametrize("env", ["AWS_BEARER_TOKEN_BEDROCK", "AWS_SESSION_TOKEN"])
def test_a_provider_with_its_own_aws_keys_takes_nothing_of_the_servers(
    acme, gw, monkeypatch, settings, recorder, ambient, env
):
    # Its own keys (any: the org admin's dummy ones) skip the vendor-hosts rule, so its
    # endpoint may be anywhere; LiteLLM sent the server's AWS_BEARER_TOKEN_BEDROCK there in
    # place of their signature, or its AWS_SESSION_TOKEN beside them.
    url, seen = recorder
    secret = f"platform-own-{env.lower()}-0000000000"
    monkeypatch.setenv(env, secret)
    settings.PROVIDER_AMBIENT_CREDENTIALS = ambient
    monkeypatch.setattr(gw.upstreams.litellm, "ambient_credentials", ambient)
    gw.upstreams.prewarm(("bedrock",))
    provider = services.provider_save(
        actor=ACTOR,
        org=acme.org,
        name="aws",
        kind="bedrock",
        api_base=url,
        credentials={"aws_access_key_id": "AKIAORGOWN", "aws_secret_access_key": "org-own"},
    )
    services.deployment_save(
        actor=ACTOR,
        org=acme.org,
        model_name="aws-chat",
        provider=provider,
        upstream_model="anthropic.claude-3-5-haiku-20241022-v1:0",
    )
    refresh_snapshot()
    _chat(acme, "aws-chat")
    assert seen, "the call reached the endpoint"
    sent = json.dumps(seen)
    assert secret not in sent
    assert "Credential=AKIAORGOWN/" in sent  # signed with the connection's own keys
