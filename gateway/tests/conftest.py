import socket
import threading
import time
from types import SimpleNamespace

import pytest

from gateway import runtime, services
from gateway.dataplane.netpolicy import NetworkPolicy
from gateway.snapshot_builder import build_snapshot
from gateway.tests.fake_upstream import FakeUpstream
from orgs.audit import Actor

ACTOR = Actor(via="test")
# The fake upstreams listen here. Loopback is refused by default (docs/security.md); the
# tests that talk to a fake upstream allow it, as an operator would with
# PROVIDER_ALLOWED_NETWORKS, and the SSRF tests run with the default policy.
FAKE_UPSTREAM_NETWORKS = ["127.0.0.1/32"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def fake_upstream_server():
    return FakeUpstream().start()


@pytest.fixture
def loopback_allowed(settings):
    """Provider URLs and webhooks on the fake upstreams' address may be saved and called."""
    settings.PROVIDER_ALLOWED_NETWORKS = FAKE_UPSTREAM_NETWORKS


@pytest.fixture
def fake_upstream(fake_upstream_server, loopback_allowed):
    fake_upstream_server.reset()
    yield fake_upstream_server
    fake_upstream_server.reset()


class LiveServer:
    """uvicorn serving bonito.asgi in a thread of the test process (shares the test DB)."""

    def __init__(self):
        import uvicorn
        from django.core.handlers.asgi import ASGIHandler
        from django.test.utils import override_settings

        from bonito.asgi import application

        # Middleware reads its settings once, when built: build a plain-HTTP Django for
        # this loopback server (production redirects to HTTPS and sends HSTS).
        with override_settings(SECURE_SSL_REDIRECT=False, SECURE_HSTS_SECONDS=0):
            application.application_mapping["http"].fallback = ASGIHandler()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            application,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            loop="asyncio",
            http="h11",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="live-gateway", daemon=True)
        self.thread.start()
        deadline = time.time() + 15
        while not self.server.started and time.time() < deadline:
            time.sleep(0.02)


@pytest.fixture(scope="session")
def live_server_thread(django_db_setup, django_db_blocker):
    return LiveServer()


def refresh_snapshot():
    """Publish a snapshot of the DB now (tests do not wait for the background poller)."""
    runtime.snapshots().publish(build_snapshot())


@pytest.fixture
def gw(tmp_path):
    """The process's gateway, reset between tests: limits, health, spool, pass-through on."""
    g = runtime.gateway()
    g.sink.spool_dir = tmp_path / "spool"
    from gateway.dataplane.limits import LocalLimiter
    from gateway.dataplane.routing import DeploymentHealth

    g.limiter.local = LocalLimiter()
    g.limiter._down_until = 0.0
    g._rpm_refused.clear()  # the limiter's refusals it remembers (keys' ids recur)
    g.health = DeploymentHealth()
    g.upstreams.passthrough = True
    g.upstreams.network = NetworkPolicy(FAKE_UPSTREAM_NETWORKS)
    g.backoff_s = 0.01
    yield g
    g.sink.flush()
    g.upstreams.passthrough = True
    g.upstreams.network = NetworkPolicy()


@pytest.fixture(params=["passthrough", "litellm"])
def mode(request, gw):
    """Run a test through both provider paths: they must behave the same."""
    gw.upstreams.passthrough = request.param == "passthrough"
    gw.upstreams.prewarm()
    return request.param


def _redis_cleanup():
    from django.conf import settings

    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        for key in client.scan_iter("bonito:*"):
            client.delete(key)


@pytest.fixture
def acme(transactional_db, org_a, alice, fake_upstream, gw, live_server_thread):
    """Alice's org wired to the fake upstream, with a key, served by a live gateway."""
    _redis_cleanup()
    fake = services.provider_save(
        actor=ACTOR,
        org=org_a,
        name="fake",
        kind="openai_compatible",
        api_base=fake_upstream.url,
        credentials={"api_key": "sk-fake-upstream-credential"},
    )
    fake2 = services.provider_save(
        actor=ACTOR,
        org=org_a,
        name="fake2",
        kind="openai_compatible",
        api_base=fake_upstream.url,
        credentials={"api_key": "sk-fake-upstream-credential"},
    )
    deps = {
        "chat-small": services.deployment_save(
            actor=ACTOR,
            org=org_a,
            model_name="chat-small",
            provider=fake,
            upstream_model="gpt-4o-mini",
        ),
        "embed-small": services.deployment_save(
            actor=ACTOR,
            org=org_a,
            model_name="embed-small",
            provider=fake,
            upstream_model="text-embedding-3-small",
        ),
        "ha-primary": services.deployment_save(
            actor=ACTOR,
            org=org_a,
            model_name="ha-chat",
            provider=fake,
            upstream_model="primary-model",
            priority=0,
        ),
        "ha-secondary": services.deployment_save(
            actor=ACTOR,
            org=org_a,
            model_name="ha-chat",
            provider=fake2,
            upstream_model="secondary-model",
            priority=1,
        ),
    }
    key, raw = services.api_key_create(actor=ACTOR, org=org_a, name="app")
    refresh_snapshot()
    yield SimpleNamespace(
        org=org_a,
        alice=alice,
        key=key,
        raw=raw,
        url=live_server_thread.url,
        base_url=live_server_thread.url + "/v1",
        fake=fake_upstream,
        deployments=deps,
        providers={"fake": fake, "fake2": fake2},
    )
    gw.sink.flush()
    _redis_cleanup()


def openai_provider(acme, name: str = "oai"):
    """An ``openai`` connection of acme's org (it has a Responses API, passed through) on
    the fake upstream."""
    return services.provider_save(
        actor=ACTOR,
        org=acme.org,
        name=name,
        kind="openai",
        api_base=acme.fake.url,
        credentials={"api_key": "sk-fake-openai-credential"},
    )


def anthropic_deployment(acme, model_name: str, upstream_model: str, **prices):
    """An Anthropic connection of acme's org (to the fake's Anthropic endpoints) serving
    ``model_name`` as ``upstream_model``; ``prices`` the deployment's overrides."""
    provider = services.provider_save(
        actor=ACTOR,
        org=acme.org,
        name="anth",
        kind="anthropic",
        api_base=acme.fake.url.removesuffix("/v1"),
        credentials={"api_key": "sk-ant-fake-upstream-credential"},
    )
    services.deployment_save(
        actor=ACTOR,
        org=acme.org,
        model_name=model_name,
        provider=provider,
        upstream_model=upstream_model,
        **prices,
    )
    refresh_snapshot()


def smart_tier_deployments(acme, names=("smart-lite", "smart-pro"), prices=None):
    """Deployments of ``names`` on acme's fake upstream, each serving ``<name>-upstream``:
    smart routing's tiers. ``prices``: an (input, output) $/Mtok pair per name."""
    for i, name in enumerate(names):
        overrides = {}
        if prices is not None:
            overrides = {
                "input_price_per_mtok": prices[i][0],
                "output_price_per_mtok": prices[i][1],
            }
        services.deployment_save(
            actor=ACTOR,
            org=acme.org,
            model_name=name,
            provider=acme.providers["fake"],
            upstream_model=f"{name}-upstream",
            **overrides,
        )


def smart_policy_key(acme, name: str, spec: dict, models=("smart-lite", "smart-pro"), **key):
    """A smart routing policy of acme's named ``name`` over ``models`` (its tiers) with the
    smart settings ``spec``, and an rt- key of its (``key``: the key's other fields):
    (the key, its raw secret), the gateway's snapshot refreshed."""
    from governance import services as gov

    policy = gov.routing_policy_save(
        actor=ACTOR, org=acme.org, name=name, strategy="smart", models=list(models), smart=spec
    )
    created = services.api_key_create(
        actor=ACTOR, org=acme.org, name=name, routing_policy=policy, **key
    )
    refresh_snapshot()
    return created


def usage_rows(org=None):
    from billing.models import UsageRecord

    runtime.gateway().sink.flush()
    qs = UsageRecord.objects.order_by("created_at")
    return list(qs.filter(org=org) if org is not None else qs)


def org_providers(org, *names):
    """Provider connections (mock) of ``org`` named ``names``: what a key's
    allowed_providers may name besides the provider kinds."""
    from gateway.models import ProviderConnection

    for name in names:
        if not ProviderConnection.objects.filter(org=org, name=name).exists():
            services.provider_save(actor=ACTOR, org=org, name=name, kind="mock")


def org_models(org, *names):
    """Deployments of ``names`` in ``org`` (on a mock provider): the models a key's
    allowed_models may name (services.api_key_create refuses a name the org has not)."""
    from gateway.models import ProviderConnection

    provider = ProviderConnection.objects.filter(org=org, name="models").first()
    if provider is None:
        provider = services.provider_save(actor=ACTOR, org=org, name="models", kind="mock")
    for name in names:
        services.deployment_save(
            actor=ACTOR, org=org, model_name=name, provider=provider, upstream_model="mock"
        )


def pricey_chat_small_under_a_cap(acme, cap_usd: str):
    """acme's chat-small at $1,000 per million tokens (a request's reservation is cents)
    and the org's monthly spend cap at ``cap_usd``: the spend-cap tests' setting."""
    from decimal import Decimal

    from governance import services as governance_services

    services.deployment_save(
        actor=ACTOR,
        org=acme.org,
        model_name="chat-small",
        provider=acme.providers["fake"],
        upstream_model="gpt-4o-mini",
        input_price_per_mtok=Decimal(1000),
        output_price_per_mtok=Decimal(1000),
        deployment=acme.deployments["chat-small"],
    )
    governance_services.policy_set(
        actor=Actor(via="test"), org=acme.org, monthly_spend_cap_usd=Decimal(cap_usd)
    )


@pytest.fixture(scope="module")
def wire(live_server_thread):
    """The test process's application, served by uvicorn with the project's protocol (the
    live server's Django beside it, built by live_server_thread)."""
    import uvicorn

    from bonito.asgi import application
    from gateway.dataplane.http_protocol import SPEC

    port = free_port()
    config = uvicorn.Config(
        application,
        host="127.0.0.1",
        port=port,
        log_level="error",
        lifespan="off",
        loop="asyncio",
        http=SPEC,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="wire", daemon=True)
    thread.start()
    deadline = time.time() + 15
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
