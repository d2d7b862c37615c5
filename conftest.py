"""The cast every test can use.

alice: admin of Acme (org A); bob: member of Acme; vera: viewer of Acme;
charlie: admin of Globex (org B), the outsider who must never see Acme's objects.
"""

import contextlib
import importlib
import os

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
    _longest_first(items)
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


def _longest_first(items):
    """The order in which `make test`'s workers take the test files (it runs xdist with
    --no-loadscope-reorder): the files marked `slow` (servers and subprocesses: the longest,
    most with a few tests) first, then the rest by number of tests. xdist's own order (by
    number of tests alone) left the 1-2-test files that run a minute each to the end, where
    one worker ran them while the others had nothing left."""
    count, slow = {}, set()
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        count[path] = count.get(path, 0) + 1
        if item.get_closest_marker("slow") is not None:
            slow.add(path)
    items.sort(key=lambda item: _cost_rank(item.nodeid.split("::", 1)[0], count, slow))


def _cost_rank(path, count, slow):
    return (path not in slow, -count[path], path)


def pytest_configure(config):
    # Passwords hash with the same algorithm at fewer iterations (core/tests/hashers.py).
    from django.conf import settings
    from django.test.utils import override_settings

    # A test's setup makes a dozen config changes in a row and its one in-process worker
    # reads them at once: the writer's delta per change (docs/gateway.md, "A delta is built
    # once") is off, as GATEWAY_SHARE_DELTAS=0 runs; billing/tests/test_config_deltas.py
    # and the tests of separate server processes run it on.
    override_settings(
        PASSWORD_HASHERS=[
            "core.tests.hashers.QuickPBKDF2PasswordHasher",
            *settings.PASSWORD_HASHERS,
        ],
        GATEWAY_SHARE_DELTAS=False,
    ).enable()
    _share_tls_context()
    _scan_static_files_once()
    # A transactional test ends with a flush that empties the tables: _flush (below).
    from django.test import TransactionTestCase

    TransactionTestCase._fixture_teardown = _flush


def _share_tls_context():
    """httpx builds a verifying TLS context for every client it makes (reading the whole CA
    bundle: ~25 ms of CPU), even for one that only speaks plain HTTP to a test server, and
    the suite's tests and SDK clients make thousands. The default one is built once and
    shared: the one Bonito's own outbound clients share (gateway/dataplane/egress.py
    tls_context). A context asked for with other arguments is built as before."""
    import httpx._config
    import httpx._transports.default

    from gateway.dataplane.egress import tls_context

    build = httpx._config.create_ssl_context

    def create_ssl_context(verify=True, cert=None, trust_env=True):
        if verify is True and cert is None and trust_env is True:
            return tls_context()
        return build(verify=verify, cert=cert, trust_env=trust_env)

    httpx._transports.default.create_ssl_context = create_ssl_context


def _scan_static_files_once():
    """Django's test client loads the middleware anew for every client, and WhiteNoise's
    middleware lists and stats every static file the finders know (the admin's, DRF's,
    django-ninja's: ~17 % of the CPU of a test file that makes a client a test). The list
    is made once per process and each new middleware gets the same entries; static files
    do not change during a run. A setting changed by a test (the headers a file is served
    with follow the settings) makes it anew."""
    from django.test.signals import setting_changed
    from whitenoise.middleware import WhiteNoiseMiddleware

    scan = WhiteNoiseMiddleware.add_files_from_finders
    found: dict[str, dict] = {}

    def add_files_from_finders(self):
        if self.static_prefix not in found:
            before, self.files = self.files, {}
            scan(self)
            found[self.static_prefix], self.files = self.files, before
        self.files.update(found[self.static_prefix])

    WhiteNoiseMiddleware.add_files_from_finders = add_files_from_finders
    setting_changed.connect(lambda **_: found.clear(), weak=False)


# Tables whose rows only the migrations write and no test changes: a flush keeps them.
_STATIC_TABLES = {"django_content_type", "auth_permission"}


def _flush(case):
    """What Django's flush after a transactional test does, at a tenth of the cost: every
    table emptied (but the static ones above), then the rows the migrations seeded put back,
    so no later test in the same process (pytest-xdist runs many modules in one) finds them
    gone. Django's flush costs a TRUNCATE of every table on PostgreSQL (0.15-0.45 s, a new
    file per table and index) and rebuilds content types, permissions and the 4,500-row
    catalog through post_migrate; on tables of a few rows, DELETE is a fraction of that."""
    from django.core.management.color import no_style
    from django.db import connections, transaction

    for alias in case._databases_names(include_mirrors=False):
        connection = connections[alias]
        tables = [
            t
            for t in connection.introspection.django_table_names(
                only_existing=True, include_views=False
            )
            if t not in _STATIC_TABLES
        ]
        if connection.vendor == "postgresql" and _superuser(connection):
            # Foreign keys are not checked while every table is emptied in one transaction,
            # sent as one string (a round trip, not one a table).
            qn = connection.ops.quote_name
            deletes = "".join(f"DELETE FROM {qn(t)};" for t in tables)  # noqa: S608 model tables
            with transaction.atomic(using=alias), connection.cursor() as cursor:
                cursor.execute("SET LOCAL session_replication_role = replica;" + deletes)
        else:
            connection.ops.execute_sql_flush(
                connection.ops.sql_flush(no_style(), tables, reset_sequences=False)
            )
        if alias == "default":  # the seeds are written through the default connection
            _tier_table()
            _model_catalog()


_superusers = {}


def _superuser(connection) -> bool:
    """Whether the test database's role may turn foreign-key triggers off (CI's may)."""
    if connection.alias not in _superusers:
        with connection.cursor() as cursor:
            cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            row = cursor.fetchone()
        _superusers[connection.alias] = bool(row and row[0])
    return _superusers[connection.alias]


_CATALOG_COPY = "test_model_catalog_copy"
_catalog_copied = set()  # the database aliases whose copy this process made


def _model_catalog():
    """The model catalog as the migrations leave it. Building it from LiteLLM's price map
    costs a third of a second (4,500 rows through the ORM), after every transactional test;
    so the first build is copied into a plain table of the test database (the flush empties
    only the models' tables) and later flushes put the rows back in one statement."""
    from django.db import connection

    from gateway.catalog import model_catalog_sync
    from gateway.models import ModelCatalogEntry

    if ModelCatalogEntry.objects.exists():
        return
    table = connection.ops.quote_name(ModelCatalogEntry._meta.db_table)
    with connection.cursor() as cursor:
        if connection.alias in _catalog_copied:
            cursor.execute(f"INSERT INTO {table} SELECT * FROM {_CATALOG_COPY}")  # noqa: S608
            return
        model_catalog_sync()
        cursor.execute(f"DROP TABLE IF EXISTS {_CATALOG_COPY}")
        cursor.execute(f"CREATE TABLE {_CATALOG_COPY} AS SELECT * FROM {table}")  # noqa: S608
    _catalog_copied.add(connection.alias)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """Each test process's database starts as a copy of one this run migrated once
    (gateway/tests/external.py, the template its servers start from too): a migrate from
    scratch costs ~8 s of CPU in every process. PostgreSQL: Django creates the test database
    with TEMPLATE; SQLite: the template is copied into the empty test database just before
    Django's migrate, which then finds every migration applied."""
    from django.conf import settings

    from gateway.tests import external

    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.postgresql":
        url = os.environ["DATABASE_URL"]
        db.setdefault("TEST", {})["TEMPLATE"] = external.pg_template(url)
    elif db["ENGINE"] == "django.db.backends.sqlite3":
        _first_migrate_from(external.sqlite_template())


def _first_migrate_from(template):
    """The next `migrate` of an empty SQLite database copies ``template`` into it first."""
    import sqlite3

    from django.core.management.commands import migrate
    from django.db import connections

    original = migrate.Command.handle

    def handle(self, *args, **options):
        migrate.Command.handle = original  # once: the test database's creation
        connection = connections[options["database"]]
        if "django_migrations" not in connection.introspection.table_names():
            connection.ensure_connection()
            with contextlib.closing(sqlite3.connect(template)) as src:
                src.backup(connection.connection)
        return original(self, *args, **options)

    migrate.Command.handle = handle


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
        quotas = importlib.import_module("orgs.migrations.0010_tierlimit_quotas").QUOTAS
        for tier, requests, spend in seeded:
            TierLimit.objects.create(
                tier=tier,
                monthly_requests=requests,
                monthly_spend_cap_usd=spend,
                key_rpm=key_rpm[tier],
                **dict(
                    zip(("max_keys", "max_providers", "max_deployments"), quotas[tier], strict=True)
                ),
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
