"""The cast every test can use.

alice: admin of Acme (org A); bob: member of Acme; vera: viewer of Acme;
charlie: admin of Globex (org B), the outsider who must never see Acme's objects.
"""

import importlib

import pytest

from orgs import services
from orgs.audit import Actor
from orgs.models import Role

PASSWORD = "correct-horse-battery-staple"
SETUP = Actor(via="test-setup")


def pytest_addoption(parser):
    parser.addoption(
        "--alone",
        choices=["skip", "only"],
        help="skip, or run only, the tests marked alone (make test runs them after the rest)",
    )


def pytest_collection_modifyitems(config, items):
    # `make test` runs the suite in parallel with --alone=skip, then the tests that assert a
    # wall-clock deadline with --alone=only, in one process with nothing running beside them.
    which = config.getoption("--alone")
    if not which:
        return
    keep, drop = [], []
    for item in items:
        alone = item.get_closest_marker("alone") is not None
        (keep if alone == (which == "only") else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_configure(config):
    # Passwords hash with the same algorithm at fewer iterations (core/tests/hashers.py).
    from django.conf import settings
    from django.test.utils import override_settings

    override_settings(
        PASSWORD_HASHERS=[
            "core.tests.hashers.QuickPBKDF2PasswordHasher",
            *settings.PASSWORD_HASHERS,
        ]
    ).enable()
    # A transactional test ends with a flush that empties every table, the rows the migrations
    # seeded included; the flush then sends post_migrate, and this puts those rows back, so no
    # later test in the same process (pytest-xdist runs many modules in one) finds them gone.
    from django.db.models.signals import post_migrate

    post_migrate.connect(_reseed_after_flush, dispatch_uid="bonito-tests-reseed")


def _reseed_after_flush(sender, **kwargs):
    if sender.label != "gateway":
        return  # post_migrate is sent once per app: seed once
    _tier_table()
    from gateway.catalog import model_catalog_sync
    from gateway.models import ModelCatalogEntry

    if not ModelCatalogEntry.objects.exists():
        model_catalog_sync()


@pytest.fixture(scope="session", autouse=True)
def _stop_gateway_threads(django_db_setup, tmp_path_factory):
    # The session's usage journal and dead letters are its own: the journal of an earlier,
    # killed run is never replayed into this run's test database.
    from django.conf import settings

    settings.GATEWAY_USAGE_JOURNAL_DIR = tmp_path_factory.mktemp("usage-journal")
    settings.GATEWAY_DEAD_LETTER_DIR = tmp_path_factory.mktemp("usage-dead")
    # Before the test database is dropped, the gateway's background threads let go of it.
    yield
    from gateway import runtime

    runtime.shutdown()


@pytest.fixture(autouse=True)
def _eager_tasks():
    # Tasks run inline in tests (a real worker on Redis is tested in billing/tests).
    from bonito.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture(autouse=True)
def _plain_http(settings):
    # The suite speaks plain HTTP to the test client; production redirects to HTTPS.
    settings.SECURE_SSL_REDIRECT = False
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False


@pytest.fixture(autouse=True)
def _fresh_throttles(settings):
    # Rate-limit counts live in the cache (Redis in CI's second run): each test counts under a
    # prefix of its own, so no test inherits another's. Sign-in failures live in the test DB.
    import uuid

    settings.RATELIMIT_CACHE_PREFIX = f"rl:{uuid.uuid4().hex}:"


def _tier_table():
    """The tier table as the migrations leave it: what each tier includes, and the per-key
    RPM ceilings, are rows, not constants."""
    from orgs.models import TierLimit

    if not TierLimit.objects.exists():
        seeded = importlib.import_module("billing.migrations.0007_seed_tiers").TIERS
        key_rpm = importlib.import_module("billing.migrations.0011_tierlimit_key_rpm").KEY_RPM
        for tier, requests, spend in seeded:
            TierLimit.objects.create(
                tier=tier,
                monthly_requests=requests,
                monthly_spend_cap_usd=spend,
                key_rpm=key_rpm[tier],
            )


@pytest.fixture
def org_a(db):
    return services.org_create(actor=SETUP, name="Acme Corp", slug="acme", tier="pro")


@pytest.fixture
def org_b(db):
    return services.org_create(actor=SETUP, name="Globex", slug="globex", tier="free")


def _member(org, email, role):
    user = services.user_create(
        actor=SETUP, email=email, password=PASSWORD, name=email.split("@")[0].title()
    )
    services.membership_add(actor=SETUP, org=org, user=user, role=role)
    return user


@pytest.fixture
def alice(org_a):
    return _member(org_a, "alice@acme.test", Role.ADMIN)


@pytest.fixture
def bob(org_a, alice):
    return _member(org_a, "bob@acme.test", Role.MEMBER)


@pytest.fixture
def vera(org_a, alice):
    return _member(org_a, "vera@acme.test", Role.VIEWER)


@pytest.fixture
def charlie(org_b):
    return _member(org_b, "charlie@globex.test", Role.ADMIN)


def _client_for(client_class, user):
    c = client_class()
    c.force_login(user)
    return c


@pytest.fixture
def alice_client(alice):
    from django.test import Client

    return _client_for(Client, alice)


@pytest.fixture
def bob_client(bob):
    from django.test import Client

    return _client_for(Client, bob)


@pytest.fixture
def vera_client(vera):
    from django.test import Client

    return _client_for(Client, vera)


@pytest.fixture
def charlie_client(charlie):
    from django.test import Client

    return _client_for(Client, charlie)


@pytest.fixture
def platform_admin(db):
    from orgs.models import User

    return User.objects.create_superuser(email="root@bonito.test", password=PASSWORD)


@pytest.fixture
def admin_client(platform_admin):
    """A signed-in platform admin posting the real Django admin forms."""
    from django.test import Client

    return _client_for(Client, platform_admin)
