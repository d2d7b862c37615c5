"""Server-side request forgery: a provider URL or a budget webhook never reaches the
platform's own services, cloud metadata or private networks — refused when saved (dashboard,
REST, apply_config) and again at connect time, whatever DNS answers in between."""

import json
import re
import socket
import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from billing.budgets import budget_alert_deliver, budget_save, budgets_check_all
from billing.models import Budget, BudgetAlert, UsageRecord
from gateway import services
from gateway.dataplane.netpolicy import NetworkPolicy
from gateway.models import ProviderConnection
from gateway.tests.conftest import ACTOR, free_port, refresh_snapshot, usage_rows
from gateway.tests.fake_upstream import Behaviour

PUBLIC = "93.184.216.34"  # what a provider's name resolves to when all is well

INTERNAL_HOSTS = [
    "127.0.0.1:5432",  # the platform's PostgreSQL
    "127.0.0.1:6379",  # Redis
    "127.0.0.1:8000",  # Bonito's own admin
    "localhost:11434",
    "localhost.",
    "LocalHost",
    "admin.localhost",
    "[::1]:8000",
    "0.0.0.0:8000",
    "[::]",
    "169.254.169.254",
    "metadata.google.internal",
    "metadata.google.internal.",
    "[fd00:ec2::254]",
    "100.100.100.200",
    "[fe80::1]",
    "10.0.0.5",
    "172.16.3.4",
    "192.168.1.10",
    "[fc00::1]",
    "100.64.0.1",
    "224.0.0.1",
    "240.0.0.1",
    "2130706433",
    "0x7f000001",
    "0x7f.1",
    "0177.0.0.1",
    "127.1",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[64:ff9b::7f00:1]",
    "[2002:7f00:1::]",
    "loopback.provider.test",  # a name that resolves to loopback, localtest.me-style
    "private.provider.test",
    "mixed.provider.test",
    "v6loopback.provider.test",
]
INTERNAL_URLS = [f"http://{host}/v1" for host in INTERNAL_HOSTS]
OTHER_BAD_URLS = {
    "ftp://api.provider.test/v1": "Only http:// and https://",
    "gopher://127.0.0.1:6379/_INFO": "Only http:// and https://",
    "https://admin:hunter2@api.provider.test/v1": "credentials",
}


class FakeDNS:
    """The resolver boundary: these names resolve to what a test says (an /etc/hosts it
    can rewrite between save and connect); IP literals and localhost go to the system."""

    def __init__(self, real):
        self.real = real
        self.hosts = {
            "api.provider.test": [PUBLIC],
            "loopback.provider.test": ["127.0.0.1"],
            "private.provider.test": ["10.0.0.7"],
            "mixed.provider.test": [PUBLIC, "127.0.0.1"],
            "v6loopback.provider.test": ["::ffff:127.0.0.1"],
        }

    def getaddrinfo(self, host, port, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name.endswith(".test"):
            if name not in self.hosts:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            port = int(port or 0)
            return [
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0))
                if ":" in a
                else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in self.hosts[name]
            ]
        return self.real(host, port, *args, **kwargs)


@pytest.fixture
def dns(monkeypatch):
    fake = FakeDNS(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", fake.getaddrinfo)
    return fake


def _messages(response) -> str:
    return response.content.decode()


# ------------------------------------------------------------------ saved: dashboard, REST, apply_config
@pytest.mark.django_db
@pytest.mark.parametrize("url", INTERNAL_URLS)
def test_the_dashboard_refuses_an_internal_provider_url(alice_client, org_a, dns, url):
    response = alice_client.post(
        reverse("providers", args=[org_a.slug]),
        {
            "name": "p",
            "kind": "openai_compatible",
            "openai_compatible-api_base": url,
            "openai_compatible-api_key": "sk-x",
        },
        follow=True,
    )
    assert "is not allowed" in _messages(response)
    assert not ProviderConnection.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("url", INTERNAL_URLS + list(OTHER_BAD_URLS))
def test_the_rest_api_refuses_an_internal_provider_url(alice_client, org_a, dns, url):
    response = alice_client.post(
        "/api/gateway/providers",
        {"name": "p", "kind": "openai_compatible", "api_base": url},
        content_type="application/json",
    )
    assert response.status_code == 400 and "api_base" in response.json()
    assert "hunter2" not in response.content.decode()
    assert not ProviderConnection.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["http://169.254.169.254/latest", "http://0x7f.1:6379/"])
def test_the_rest_api_refuses_changing_a_provider_to_an_internal_url(alice_client, org_a, dns, url):
    provider = services.provider_save(
        actor=ACTOR,
        org=org_a,
        name="p",
        kind="openai_compatible",
        api_base="https://api.provider.test/v1",
    )
    response = alice_client.patch(
        f"/api/gateway/providers/{provider.id}",
        {"api_base": url},
        content_type="application/json",
    )
    assert response.status_code == 400
    provider.refresh_from_db()
    assert provider.api_base == "https://api.provider.test/v1"


@pytest.mark.django_db
@pytest.mark.parametrize("url", INTERNAL_URLS + list(OTHER_BAD_URLS))
def test_apply_config_refuses_an_internal_provider_url(tmp_path, org_a, dns, url):
    path = tmp_path / "bonito.yaml"
    path.write_text(
        "orgs:\n  - slug: acme\n    name: Acme Corp\n    providers:\n"
        f"      - {{name: p, kind: openai_compatible, api_base: {json.dumps(url)}}}\n"
    )
    with pytest.raises(CommandError) as info:
        call_command("apply_config", str(path))
    assert "hunter2" not in str(info.value)
    assert not ProviderConnection.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(("url", "says"), OTHER_BAD_URLS.items())
def test_the_dashboard_says_why_a_scheme_or_credentials_are_refused(
    alice_client, org_a, dns, url, says
):
    response = alice_client.post(
        reverse("providers", args=[org_a.slug]),
        {"name": "p", "kind": "openai_compatible", "openai_compatible-api_base": url},
        follow=True,
    )
    assert says in _messages(response) and "hunter2" not in _messages(response)
    assert not ProviderConnection.objects.exists()


@pytest.mark.django_db
def test_the_mock_provider_takes_no_url(org_a):
    with pytest.raises(services.ValidationError, match="no network calls"):
        services.provider_save(
            actor=ACTOR, org=org_a, name="m", kind="mock", api_base="http://127.0.0.1:5432/"
        )


@pytest.mark.django_db
def test_provider_allowed_networks_admit_the_operators_private_host(
    alice_client, org_a, dns, settings
):
    url = reverse("providers", args=[org_a.slug])
    form = {
        "name": "vllm",
        "kind": "openai_compatible",
        "openai_compatible-api_base": "http://10.1.2.3:8000/v1",
    }
    assert "is not allowed" in _messages(alice_client.post(url, form, follow=True))
    settings.PROVIDER_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    alice_client.post(url, form, follow=True)
    assert ProviderConnection.objects.get(name="vllm").api_base == "http://10.1.2.3:8000/v1"
    other = {**form, "name": "other", "openai_compatible-api_base": "http://192.168.1.10:8000/v1"}
    assert "is not allowed" in _messages(alice_client.post(url, other, follow=True))
    assert not ProviderConnection.objects.filter(name="other").exists()


# ------------------------------------------------------------------ at connect time: /v1
@pytest.fixture
def default_policy(gw, settings):
    """The shipped policy, for saves and for the gateway's connections."""
    settings.PROVIDER_ALLOWED_NETWORKS = []
    gw.upstreams.network = NetworkPolicy()


@pytest.mark.parametrize("stream", [False, True])
def test_a_name_rebound_to_loopback_after_saving_is_refused_at_connect_time(
    acme, mode, dns, default_policy, stream, caplog
):
    dns.hosts["rebind.provider.test"] = [PUBLIC]
    provider = services.provider_save(
        actor=ACTOR,
        org=acme.org,
        name="rebind",
        kind="openai_compatible",
        api_base=acme.fake.url.replace("127.0.0.1", "rebind.provider.test"),
        credentials={"api_key": "sk-must-not-leave"},
    )
    services.deployment_save(
        actor=ACTOR, org=acme.org, model_name="rebound", provider=provider, upstream_model="m"
    )
    refresh_snapshot()
    dns.hosts["rebind.provider.test"] = ["127.0.0.1"]  # the attacker's DNS changes its answer
    before = UsageRecord.objects.count()
    response = httpx.post(
        acme.base_url + "/chat/completions",
        json={
            "model": "rebound",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": stream,
        },
        headers={"Authorization": f"Bearer {acme.raw}"},
        timeout=30,
    )
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_error" and error["type"] == "server_error"
    assert "could not reach the provider" in error["message"]
    assert acme.fake.requests == []  # nothing, and no key, reached the loopback listener
    rows = usage_rows(acme.org)
    assert len(rows) == before + 1
    assert (rows[-1].status, rows[-1].http_status) == ("error", 502)
    refusals = [r.getMessage() for r in caplog.records if r.name == "bonito.gateway.upstream"]
    assert refusals and all("AddressRefused" in m for m in refusals)
    assert "sk-must-not-leave" not in caplog.text


def _azure_deployment(acme, model: str, api_base: str) -> None:
    """An Azure OpenAI deployment of dall-e-3 named ``model`` at ``api_base``, published."""
    provider = services.provider_save(
        actor=ACTOR,
        org=acme.org,
        name=f"azure-{model}",
        kind="azure_openai",
        api_base=api_base,
        credentials={"api_key": "az-must-not-leave"},
    )
    services.deployment_save(
        actor=ACTOR, org=acme.org, model_name=model, provider=provider, upstream_model="dall-e-3"
    )
    refresh_snapshot()


def _loopback_server(on_accept) -> socket.socket:
    """A listening loopback socket whose connections go to ``on_accept`` in a thread."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            on_accept(conn)

    threading.Thread(target=serve, daemon=True).start()
    return server


@pytest.fixture
def listener():
    """A loopback port that counts the connections made to it (and answers none)."""
    accepted = []
    server = _loopback_server(accepted.append)
    yield server.getsockname()[1], accepted
    server.close()
    for conn in accepted:
        conn.close()


@pytest.mark.parametrize(
    "path,body",
    [
        (
            "/images/generations",
            {"model": "rebound", "prompt": "a fish"},
        ),  # Azure: LiteLLM's own client
        (
            "/chat/completions",
            {"model": "rebound", "messages": [{"role": "user", "content": "hi"}]},
        ),
    ],
)
def test_an_azure_deployment_rebound_to_loopback_is_refused_on_every_endpoint(
    acme, dns, default_policy, listener, path, body
):
    """LiteLLM builds HTTP clients of its own on some paths (Azure's image generation):
    those connect only where the network policy allows, like every other."""
    port, accepted = listener
    dns.hosts["azure-rebind.provider.test"] = [PUBLIC]
    _azure_deployment(acme, "rebound", f"http://azure-rebind.provider.test:{port}")
    dns.hosts["azure-rebind.provider.test"] = ["127.0.0.1"]
    response = httpx.post(
        acme.base_url + path,
        json=body,
        headers={"Authorization": f"Bearer {acme.raw}"},
        timeout=30,
    )
    assert response.status_code == 502, response.text
    assert "could not reach the provider" in response.json()["error"]["message"]
    assert accepted == []  # no connection, so no key, reached the loopback listener


def test_a_redirect_is_not_followed(acme, mode):
    acme.fake.behaviours["gpt-4o-mini"] = Behaviour(redirect_to=acme.fake.url + "/chat/completions")
    response = httpx.post(
        acme.base_url + "/chat/completions",
        json={"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {acme.raw}"},
        timeout=30,
    )
    assert response.status_code == 502 and "error" in response.json()
    assert acme.fake.requests and not any(r["query"] for r in acme.fake.requests)  # not followed


def test_a_redirect_is_not_followed_by_litellms_own_clients(acme, listener):
    """Azure's image generation runs on an HTTP client LiteLLM makes itself, one that
    would follow redirects: a provider's redirect must not carry the key elsewhere."""
    import http.server

    port, accepted = listener  # where the redirect points: it must see no connection

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{port}/steal")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _azure_deployment(acme, "painter", f"http://127.0.0.1:{server.server_address[1]}")
        response = httpx.post(
            acme.base_url + "/images/generations",
            json={"model": "painter", "prompt": "a fish"},
            headers={"Authorization": f"Bearer {acme.raw}"},
            timeout=30,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert response.status_code == 502, response.text
    assert accepted == []


# ------------------------------------------------------------------ Test connection
@pytest.fixture
def not_http():
    """An open port that speaks something else (say, SSH) and hangs up."""

    def banner(conn):
        with conn:
            conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

    server = _loopback_server(banner)
    yield server.getsockname()[1]
    server.close()


@pytest.mark.django_db
def test_test_connection_says_the_same_for_every_network_failure(
    alice_client, org_a, dns, loopback_allowed, not_http
):
    dns.hosts["meta.provider.test"] = [PUBLIC]
    targets = {
        "closed": f"http://127.0.0.1:{free_port()}/v1",
        "nothttp": f"http://127.0.0.1:{not_http}/v1",
        "meta": "http://meta.provider.test/v1",
        "nodns": "http://gone.provider.test/v1",
    }
    for name, api_base in targets.items():
        provider = services.provider_save(
            actor=ACTOR, org=org_a, name=name, kind="openai_compatible", api_base=api_base
        )
        services.deployment_save(
            actor=ACTOR, org=org_a, model_name=name, provider=provider, upstream_model="m"
        )
    dns.hosts["meta.provider.test"] = ["169.254.169.254"]  # disallowed at connect time
    said = {}
    for provider in ProviderConnection.objects.for_org(org_a):
        page = _messages(
            alice_client.post(reverse("provider_test", args=[org_a.slug, provider.id]), follow=True)
        )
        said[provider.name] = re.search(rf"Test of {provider.name}: ([^<]*)", page).group(1)
    assert set(said.values()) == {"m failed: could not reach the provider."}


# ------------------------------------------------------------------ budget webhooks
@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/hook",
        "http://2130706433/hook",
        "http://loopback.provider.test/hook",
        "ftp://hooks.provider.test/x",
        "https://user:pw@hooks.provider.test/x",
    ],
)
def test_a_budget_webhook_must_be_public(alice_client, org_a, dns, url):
    with pytest.raises(services.ValidationError):
        budget_save(actor=ACTOR, org=org_a, amount_usd=10, webhook_url=url)
    alice_client.post(
        reverse("budget_create", args=[org_a.slug]),
        {"amount_usd": "10", "scope": "org", "period": "monthly", "webhook_url": url},
    )
    assert not Budget.objects.exists()


@pytest.mark.django_db
def test_a_budget_webhook_rebound_to_loopback_is_not_called(
    org_a, alice, dns, fake_upstream_server
):
    fake_upstream = fake_upstream_server
    fake_upstream.reset()
    dns.hosts["hooks.provider.test"] = [PUBLIC]
    hook = fake_upstream.url.replace("127.0.0.1", "hooks.provider.test").replace("/v1", "/hooks")
    budget = budget_save(actor=ACTOR, org=org_a, amount_usd=10, webhook_url=hook)
    dns.hosts["hooks.provider.test"] = ["127.0.0.1"]
    UsageRecord.objects.create(
        id=uuid.uuid4(),
        org=org_a,
        created_at=datetime.now(UTC),
        model_requested="chat",
        model_used="chat",
        status="success",
        cost=Decimal("6"),
    )
    budgets_check_all(now=datetime.now(UTC))  # on_commit never runs here: deliver by hand
    alert = BudgetAlert.objects.get(budget=budget)
    with pytest.raises(httpx.ConnectError):
        budget_alert_deliver(alert_id=alert.id, text="50% used")
    assert fake_upstream.hooks == []
