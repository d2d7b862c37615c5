"""Credentials stay in the VPC: read from env vars, a file, AWS Secrets Manager, Azure Key
Vault or GCP Secret Manager, through the official SDKs against fakes at the HTTP level."""

import json
import os
import subprocess
import sys

import pytest

from agents.runtime import credentials as creds
from agents.runtime.credentials import (
    AwsSecretsManagerSource,
    AzureKeyVaultSource,
    Credentials,
    CredentialsError,
    FileSource,
    GcpSecretManagerSource,
)
from agents.tests.fake_clouds import TENANT, FakeClouds
from gateway.tests.external import ROOT

DOC = {"vpc-llm": {"api_key": "sk-from-the-store"}, "other": {"api_key": "sk-other"}}


@pytest.fixture
def clouds(tmp_path, monkeypatch):
    fake = FakeClouds(tmp_path)
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    yield fake
    fake.close()


def test_it_reads_a_json_file_and_env_vars_override_it_by_field(tmp_path):
    path = tmp_path / "creds.json"
    path.write_text(json.dumps(DOC))
    c = Credentials([FileSource(path)], {"BONITO_PROVIDER_VPC_LLM_API_KEY": "sk-env"})
    assert c.load() is True
    assert c.for_deployment("vpc-llm", "openai_compatible") == {"api_key": "sk-env"}
    assert c.for_deployment("other", "openai_compatible") == {"api_key": "sk-other"}
    assert c.for_deployment("unknown", "openai_compatible") == {}
    assert c.load() is False  # nothing changed


def test_a_rewritten_credentials_file_is_noticed_without_a_read(tmp_path):
    """Every worker stats the file each second: a rotation reaches all of them, whether or
    not a provider has refused the old key to that worker yet."""
    path = tmp_path / "creds.json"
    path.write_text(json.dumps(DOC))
    c = Credentials([FileSource(path)], {})
    assert c.files_changed()  # never read
    c.load()
    assert not c.files_changed()
    new = tmp_path / "new.json"
    new.write_text(json.dumps({"vpc-llm": {"api_key": "sk-rotated"}}))
    os.replace(new, path)  # as a mounted secret is swapped
    assert c.files_changed()
    assert c.load() is True and c.for_deployment("vpc-llm", "openai_compatible") == {
        "api_key": "sk-rotated"
    }
    assert not c.files_changed()
    path.unlink()
    assert c.files_changed()  # gone: read again (and kept as it was, with an error)


def test_env_var_names_follow_the_provider_name():
    assert creds.env_name("vpc-llm", "api_key") == "BONITO_PROVIDER_VPC_LLM_API_KEY"
    assert creds.env_name("Azure east.2", "api_key") == "BONITO_PROVIDER_AZURE_EAST_2_API_KEY"


@pytest.mark.parametrize(
    "text",
    ["not json", "[]", '{"p": "flat"}', '{"p": ["x"]}'],
)
def test_a_document_of_the_wrong_shape_is_refused_without_echoing_it(tmp_path, text):
    path = tmp_path / "creds.json"
    path.write_text(text)
    with pytest.raises(CredentialsError) as info:
        FileSource(path).load()
    assert "flat" not in str(info.value)


def test_a_failing_source_keeps_what_it_gave_last_and_reports_why(tmp_path):
    path = tmp_path / "creds.json"
    path.write_text(json.dumps(DOC))
    c = Credentials([FileSource(path)], {})
    c.load()
    path.write_text("{broken")
    assert c.load() is False
    assert c.for_deployment("vpc-llm", "openai_compatible") == {"api_key": "sk-from-the-store"}
    assert c.errors and "not a JSON document" in c.errors[0]


def test_aws_secrets_manager_through_boto3_against_motos_server(monkeypatch):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", f"http://{host}:{port}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        import boto3

        client = boto3.client("secretsmanager", region_name="eu-west-1")
        arn = client.create_secret(Name="bonito-aws", SecretString=json.dumps(DOC))["ARN"]
        assert AwsSecretsManagerSource(arn).load() == DOC
        # Rotated in the store: the next read (after a provider's 401) sees it.
        client.put_secret_value(
            SecretId=arn, SecretString=json.dumps({"vpc-llm": {"api_key": "sk-new"}})
        )
        c = Credentials([AwsSecretsManagerSource(arn)], {})
        c.load()
        assert c.for_deployment("vpc-llm", "openai_compatible") == {"api_key": "sk-new"}
        with pytest.raises(CredentialsError) as info:
            AwsSecretsManagerSource(arn.replace("bonito-aws", "missing")).load()
        assert "ResourceNotFoundException" in str(info.value)
    finally:
        server.stop()


def test_azure_key_vault_with_an_entra_client_secret(clouds, monkeypatch):
    monkeypatch.setenv("AZURE_TENANT_ID", TENANT)
    monkeypatch.setenv("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "entra-client-secret")
    clouds.secrets["bonito-credentials"] = json.dumps(DOC)
    source = AzureKeyVaultSource("https://bonito.vault.azure.net", "bonito-credentials")
    assert source.load() == DOC
    vault = [r for r in clouds.requests if r[0] == "bonito.vault.azure.net"]
    assert vault[-1][3] == "Bearer fake-entra-access-token"  # after the challenge
    assert any(
        r[0] == "login.microsoftonline.com" and r[2].endswith("/token") for r in clouds.requests
    )
    with pytest.raises(CredentialsError):
        AzureKeyVaultSource("https://bonito.vault.azure.net", "missing").load()


def test_gcp_secret_manager_over_rest_with_application_default_credentials(
    clouds, monkeypatch, tmp_path
):
    adc = tmp_path / "adc.json"
    adc.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "bonito-test.apps.googleusercontent.com",
                "client_secret": "gcp-client-secret",
                "refresh_token": "gcp-refresh-token",
            }
        )
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    clouds.secrets["projects/acme/secrets/bonito/versions/latest"] = json.dumps(DOC)
    assert GcpSecretManagerSource("projects/acme/secrets/bonito").load() == DOC
    assert any(r[0] == "oauth2.googleapis.com" for r in clouds.requests)
    with pytest.raises(CredentialsError):
        GcpSecretManagerSource("projects/acme/secrets/missing").load()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setting", "module"),
    [
        ("AWS_SECRETS_MANAGER_ARN", "boto3"),
        ("AZURE_KEY_VAULT_URL", "azure.keyvault.secrets"),
        ("GCP_SECRET_NAME", "google.cloud.secretmanager"),
    ],
)
def test_a_configured_source_whose_sdk_is_missing_stops_the_agent_at_start(
    tmp_path, setting, module
):
    values = {
        "AWS_SECRETS_MANAGER_ARN": "arn:aws:secretsmanager:eu-west-1:1:secret:x",
        "AZURE_KEY_VAULT_URL": "https://bonito.vault.azure.net",
        "GCP_SECRET_NAME": "projects/acme/secrets/bonito",
    }
    from core import keys

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BONITO_")},
        "BONITO_CONTROL_PLANE": "http://127.0.0.1:9",
        "BONITO_ORG_TOKEN": keys.generate("bt-"),
        "BONITO_STATE_DIR": str(tmp_path),
        setting: values[setting],
    }
    # The SDK is made unimportable in that process only (as in an image without the extra).
    code = (
        f"import sys; sys.modules[{module!r}] = None;"
        "from agents.runtime.__main__ import main; sys.exit(main())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "not installed" in result.stderr and "requirements-agent.txt" in result.stderr


# ------------------------------------------------------------------ where they may go
# The control plane names each provider's endpoint; the credentials are the VPC's. An org
# admin (or a control plane not to be trusted) who moved a provider's endpoint to a host of
# their own was sent the key the agent read from its own store.
def _creds(doc: dict, env: dict | None = None, networks=("10.0.0.0/8",)) -> Credentials:
    c = Credentials([], env or {}, networks)
    c.by_provider = doc
    return c


@pytest.mark.parametrize(
    ("kind", "api_base"),
    [
        ("openai", ""),  # the vendor's default
        ("openai", "https://api.openai.com/v1"),
        ("azure_openai", "https://acme.openai.azure.com"),
        ("bedrock", "https://bedrock-runtime.eu-west-1.amazonaws.com"),
        ("openai_compatible", "http://10.1.2.3:8000/v1"),  # in the allowed networks
    ],
)
def test_local_credentials_go_to_the_vendor_or_an_allowed_network(kind, api_base):
    c = _creds({"p": {"api_key": "sk-vpc", "aws_access_key_id": "a"}})
    assert c.for_deployment("p", kind, api_base) and not c.withheld


@pytest.mark.parametrize(
    ("kind", "api_base"),
    [
        ("openai", "https://collector.example/v1"),
        ("openai", "http://api.openai.com/v1"),
        ("azure_openai", "https://collector.eastus.cloudapp.azure.com"),
        ("openai_compatible", "https://collector.example/v1"),
        ("openai_compatible", "http://vllm.internal:8000/v1"),  # a name: could be anywhere
        ("openai_compatible", "http://192.168.1.5:8000/v1"),  # private, not allowed
        ("anthropic", "https://collector.example"),
    ],
)
def test_local_credentials_are_withheld_from_an_endpoint_elsewhere(kind, api_base, caplog):
    c = _creds({"p": {"api_key": "sk-vpc"}})
    assert c.for_deployment("p", kind, api_base) == {}
    assert c.for_deployment("p", kind, api_base) == {}
    said = c.withheld["p"]
    assert "withheld" in said and "BONITO_PROVIDER_P_ENDPOINT" in said and "sk-vpc" not in said
    logged = [r.getMessage() for r in caplog.records if "withheld" in r.getMessage()]
    assert len(logged) == 1 and "sk-vpc" not in logged[0]  # said once, never the secret


def test_a_pinned_endpoint_is_the_only_one_they_go_to():
    doc = {"vllm": {"api_key": "sk-vpc", "endpoint": "http://vllm.internal:8000/v1/"}}
    c = _creds(doc)
    pinned = c.for_deployment("vllm", "openai_compatible", "http://vllm.internal:8000/v1")
    assert pinned == {"api_key": "sk-vpc"}  # the pin itself is not a credential
    assert c.for_deployment("vllm", "openai_compatible", "https://collector.example/v1") == {}
    # Pinned, not even the vendor's own host: the operator said where.
    assert c.for_deployment("vllm", "openai", "") == {}
    # The environment's pin wins over the document's.
    env = {"BONITO_PROVIDER_VLLM_ENDPOINT": "https://llm.acme.example/v1"}
    c = _creds(doc, env)
    assert c.for_deployment("vllm", "openai_compatible", "https://llm.acme.example/v1")
    assert c.for_deployment("vllm", "openai_compatible", "http://vllm.internal:8000/v1") == {}


def test_another_spelling_of_the_name_keeps_the_documents_pin():
    """BONITO_PROVIDER_VPC_LLM_API_KEY is read for "vpc-llm", "vpc_llm" and "VPC.LLM" alike:
    a control plane that named the provider "vpc_llm" got the variable's key with none of
    the pin the operator wrote for "vpc-llm" in the document."""
    doc = {"vpc-llm": {"endpoint": "http://vllm.internal:8000/v1"}}
    c = _creds(doc, {"BONITO_PROVIDER_VPC_LLM_API_KEY": "sk-env"})
    assert c.for_deployment("vpc-llm", "openai_compatible", "http://vllm.internal:8000/v1")
    for alias in ("vpc_llm", "VPC.LLM"):
        assert c.for_deployment(alias, "openai_compatible", "http://10.9.9.9/v1") == {}
        assert c.for_deployment(alias, "openai", "") == {}
        assert "pinned" in c.withheld[alias]
        assert c.for_deployment(alias, "openai_compatible", "http://vllm.internal:8000/v1")


@pytest.mark.parametrize(
    "api_base",
    [
        "http://evil.example\\@10.0.0.5/v1",  # a backslash: a path to WHATWG parsers
        "http://x@10.0.0.5/v1",
        "http://10.0.0.5%2f.evil.example/v1",  # cut at % as a zone id
        "http://[fe80::1%25evil]/v1",
        "ftp://10.0.0.5/v1",
    ],
)
def test_an_allowed_address_is_one_written_plainly(api_base):
    c = _creds({"p": {"api_key": "sk-vpc"}}, networks=("10.0.0.0/8", "fe80::/10"))
    assert c.for_deployment("p", "openai_compatible", api_base) == {}


@pytest.mark.parametrize("api_base", ["http://[::1", "http://evil.example\uff03@10.0.0.5/"])
def test_an_endpoint_that_is_no_url_is_withheld_not_a_crash(api_base):
    """urlsplit raises on these: the whole config was refused ("config document not
    applied") for one provider's endpoint."""
    for doc in ({"p": {"api_key": "k"}}, {"p": {"api_key": "k", "endpoint": "http://a/v1"}}):
        c = _creds(doc)
        assert c.for_deployment("p", "openai_compatible", api_base) == {}
        assert "withheld" in c.withheld["p"]


@pytest.mark.parametrize(
    ("kind", "region", "conf"),
    [
        ("vertex", "evil.example/x?", {}),
        ("vertex", "", {"vertex_location": "evil.example#"}),
        ("bedrock", "", {"aws_region_name": "evil.example/"}),
        ("bedrock", "us-east-1.evil.example", {}),
    ],
)
def test_a_region_that_is_no_regions_name_gets_no_credentials(kind, region, conf):
    doc = {"p": {"service_account_json": "{}", "aws_access_key_id": "a"}}
    c = _creds(doc)
    assert c.for_deployment("p", kind, "", region, conf) == {}
    assert "region" in c.withheld["p"] or "location" in c.withheld["p"]
    assert c.for_deployment("p", kind, "", "europe-west4", conf if region else {})


@pytest.mark.parametrize("kind", ["openai", "anthropic", "azure_openai"])
def test_a_vendors_key_is_not_sent_to_an_allowed_network_unpinned(kind):
    """The allowed networks are for self-hosted servers (openai_compatible): a vendor's key
    goes to the vendor, or to the endpoint pinned for it."""
    c = _creds({"p": {"api_key": "sk-vendor"}})
    assert c.for_deployment("p", kind, "http://10.0.0.5:8000/v1") == {}
    assert "vendor's API hosts" in c.withheld["p"]
    c = _creds({"p": {"api_key": "sk-vendor", "endpoint": "http://10.0.0.5:8000/v1"}})
    assert c.for_deployment("p", kind, "http://10.0.0.5:8000/v1") == {"api_key": "sk-vendor"}
