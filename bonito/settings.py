"""Bonito's only settings file. Everything that differs between installs comes from
the environment (see the README's table); defaults are the embedded, no-server setup."""

import ipaddress
import os
import ssl
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from core import redisurl

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"


class _Env(environ.Env):
    def int(self, var, default=environ.Env.NOTSET):
        """A whole number, or a start refused with the variable's name (not a traceback)."""
        try:
            return super().int(var, default=default)
        except ValueError:
            raise ImproperlyConfigured(
                f"{var} is {os.environ.get(var, '')!r}: set a whole number."
            ) from None


env = _Env()

DEBUG = env.bool("DEBUG", default=False)

_DEV_SECRET_KEY = "django-insecure-bonito-dev-key-only-used-when-debug-is-on"  # noqa: S105
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set the SECRET_KEY the server runs with in the "
            "environment (a dev default is only allowed when DEBUG=1: after `make run`, "
            "run commands with DEBUG=1 and no SECRET_KEY, as it does)."
        )
    SECRET_KEY = _DEV_SECRET_KEY

# A foreign Host header gets a 400 from Django itself.
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

ADMIN_EMAILS = [e.strip().lower() for e in env.list("ADMIN_EMAILS", default=[]) if e.strip()]
PORT = env.int("PORT", default=8000)
WEB_CONCURRENCY = env.int("WEB_CONCURRENCY", default=2)
# The public URL customers put in their SDKs; derived from PORT when unset.
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default=f"http://127.0.0.1:{PORT}").rstrip("/")

INSTALLED_APPS = [
    "bonito.apps.BonitoAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "django_ratelimit",
    "channels",
    "csp",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "ninja",  # the agent API's docs page and its vendored Swagger UI (no CDN)
    "core",
    "orgs",
    "governance",
    "gateway",
    "billing",
    "agents",
]

MIDDLEWARE = [
    # Outermost: a sync streamed response (WhiteNoise's static files) streams async on ASGI.
    "bonito.streaming.AsyncStreamingMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Turns a sign-in refused for too many failures into the 429 page (last, as axes asks).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "bonito.urls"
WSGI_APPLICATION = "bonito.wsgi.application"
ASGI_APPLICATION = "bonito.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "orgs.context_processors.dashboard",
                "agents.context_processors.agent_status",
                "bonito.navigation.sections",
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'bonito.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(exist_ok=True)  # a fresh clone has no var/ yet (it is git-ignored)
    # WAL lets the web process, the worker and the usage writer share the file.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    )
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # Behind PgBouncer in transaction mode a session is not ours from one transaction to
    # the next: no server-side prepared statements, no server-side (named) cursors.
    DATABASE_POOLER = env.str("DATABASE_POOLER", default="")
    if DATABASE_POOLER not in ("", "pgbouncer"):
        raise ImproperlyConfigured(
            f"DATABASE_POOLER is {DATABASE_POOLER!r}: use pgbouncer or leave it unset."
        )
    if DATABASE_POOLER == "pgbouncer":
        DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = None
        DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# REDIS_URL: one Redis (redis://, rediss://, unix://) or a Sentinel-watched master
# (redis+sentinel://host:26379[,host:26379…]/service[/db]) serves the cache, the live log
# tail, Celery and the gateway's limits. A Redis Cluster (redis+cluster://host:port[,…]) can
# hold only the gateway's limits (GATEWAY_REDIS_URL): the cache, channels_redis and Celery
# cannot use one. Forms and components: docs/replicas.md.
REDIS_URL = env.str("REDIS_URL", default="")
GATEWAY_REDIS_URL = env.str("GATEWAY_REDIS_URL", default=REDIS_URL)
if env.str("PYTEST_XDIST_WORKER", default="").startswith("gw") and not env.bool(
    "TEST_WORKER_REDIS_MOVED", default=False
):
    # The test suite in parallel (pytest-xdist): pytest-django gives each worker process a
    # test database of its own, and so does this for Redis (worker gwN: database d + N).
    # The servers and workers a test starts inherit the moved URLs and do not move them again.
    _worker = int(env.str("PYTEST_XDIST_WORKER")[2:])
    REDIS_URL = redisurl.with_db_offset(REDIS_URL, _worker)
    GATEWAY_REDIS_URL = redisurl.with_db_offset(GATEWAY_REDIS_URL, _worker)
    os.environ["TEST_WORKER_REDIS_MOVED"] = "1"
    for _name, _url in (("REDIS_URL", REDIS_URL), ("GATEWAY_REDIS_URL", GATEWAY_REDIS_URL)):
        if _name in os.environ:
            os.environ[_name] = _url
for _name, _url in (("REDIS_URL", REDIS_URL), ("GATEWAY_REDIS_URL", GATEWAY_REDIS_URL)):
    try:
        _redis = redisurl.parse(_url) if _url else None
    except ValueError as _exc:
        raise ImproperlyConfigured(f"{_name}: {_exc}") from None
    if _redis and _redis.kind == redisurl.CLUSTER and _name == "REDIS_URL":
        raise ImproperlyConfigured(
            "REDIS_URL: a Redis Cluster holds only the gateway's limits. Set "
            "GATEWAY_REDIS_URL to the redis+cluster:// URL and REDIS_URL to one Redis or a "
            "Sentinel (redis+sentinel://) for the cache, the live log tail and Celery."
        )
_redis = redisurl.parse(REDIS_URL) if REDIS_URL else None

if _redis:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            # A list: Django splits a LOCATION string at commas, which a Sentinel URL has.
            "LOCATION": [REDIS_URL],
            "TIMEOUT": 300,
        }
    }
    if _redis.kind == redisurl.SENTINEL:
        CACHES["default"]["OPTIONS"] = {"pool_class": "core.redisurl.SentinelPool"}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# The live log tail: in-memory on embedded defaults (one process serves all sockets), Redis
# when configured, so a request served by one worker reaches sockets held by any other.
if _redis:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
    if _redis.kind == redisurl.SENTINEL:
        _host = {"master_name": _redis.service, "sentinels": list(_redis.hosts)}
        _host.update({"db": _redis.db, **_redis.auth()})
        _host["sentinel_kwargs"] = redisurl.sentinel_kwargs(_redis)
        if _redis.tls:  # rediss+sentinel://: TLS to the master, as the cache and gateway
            _host["ssl"] = True
        CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = [_host]
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Celery: Redis in production; a filesystem transport otherwise, so a real worker and
# beat still run on the embedded defaults without any server.
BROKER_DIR = VAR_DIR / "broker"
_broker_default = REDIS_URL or "filesystem://"
if _redis and _redis.kind == redisurl.SENTINEL:  # kombu's own form: one URL per sentinel
    _auth = ":".join(quote(x, safe="") for x in (_redis.username or "", _redis.password or ""))
    _broker_default = ";".join(
        f"sentinel://{_auth + '@' if _redis.password else ''}{h}:{p}/{_redis.db}"
        for h, p in _redis.hosts
    )
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=_broker_default)
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR),
        "data_folder_out": str(BROKER_DIR),
        "processed_folder": str(BROKER_DIR / "processed"),
        # Exchange tables (broadcasts) under var/ too, not a control/ folder in the checkout.
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
    if CELERY_BROKER_URL.startswith("sentinel://") and _redis and _redis.service:
        CELERY_BROKER_TRANSPORT_OPTIONS["master_name"] = _redis.service
        if _redis.sentinel_password:
            CELERY_BROKER_TRANSPORT_OPTIONS["sentinel_kwargs"] = {
                "password": _redis.sentinel_password
            }
# TLS to the broker when REDIS_URL says rediss:// or rediss+sentinel://, with the server's
# certificate verified as redis-py does for the cache and the gateway (kombu alone would
# use no TLS for sentinel:// and skip the verification for rediss://).
if (
    _redis
    and _redis.tls
    and _broker_default == CELERY_BROKER_URL
    and "ssl_cert_reqs" not in REDIS_URL
):
    CELERY_BROKER_USE_SSL = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
# Hours that ended this long before a rollup run count as complete (a request's row is
# written when it ends; a longer request marks its hour for recomputation).
USAGE_ROLLUP_GRACE_S = env.int("USAGE_ROLLUP_GRACE_S", default=900)
# A rollup watermark far behind (first run over old rows, a worker down for days) catches
# up this many days per run, one committed day at a time; the next runs go on.
USAGE_ROLLUP_CATCH_UP_DAYS = env.int("USAGE_ROLLUP_CATCH_UP_DAYS", default=7)
if USAGE_ROLLUP_CATCH_UP_DAYS < 1:
    raise ImproperlyConfigured(
        f"USAGE_ROLLUP_CATCH_UP_DAYS is {USAGE_ROLLUP_CATCH_UP_DAYS}: use 1 or more."
    )
# gateway_requests on PostgreSQL: one partition per month (default) or day; raw rows older
# than the retention are dropped a partition at a time once rolled up (unset: kept forever).
# Every query not pruned by time locks each partition and its indexes, so `day` is only for
# installs that bound the partitions with a retention (docs/usage-data.md, *Locks*).
USAGE_PARTITION_INTERVAL = env.str("USAGE_PARTITION_INTERVAL", default="month")
if USAGE_PARTITION_INTERVAL not in ("day", "month"):
    raise ImproperlyConfigured(
        f"USAGE_PARTITION_INTERVAL is {USAGE_PARTITION_INTERVAL!r}: use day or month."
    )
USAGE_RETENTION_DAYS = env.int("USAGE_RETENTION_DAYS", default=None)
if USAGE_RETENTION_DAYS is not None and USAGE_RETENTION_DAYS < 35:
    raise ImproperlyConfigured(
        f"USAGE_RETENTION_DAYS is {USAGE_RETENTION_DAYS}: keep at least 35 days (a month of"
        " logs and exports, and time for the rollups to catch up after an outage)."
    )
if USAGE_RETENTION_DAYS is not None and USAGE_RETENTION_DAYS > 36500:
    raise ImproperlyConfigured(
        f"USAGE_RETENTION_DAYS is {USAGE_RETENTION_DAYS}: at most 36500 (100 years);"
        " leave it unset to keep raw rows forever."
    )
USAGE_DAY_PARTITIONS_MAX_RETENTION = 120
if USAGE_PARTITION_INTERVAL == "day" and (
    USAGE_RETENTION_DAYS is None or USAGE_RETENTION_DAYS > USAGE_DAY_PARTITIONS_MAX_RETENTION
):
    raise ImproperlyConfigured(
        "USAGE_PARTITION_INTERVAL=day needs USAGE_RETENTION_DAYS set to at most"
        f" {USAGE_DAY_PARTITIONS_MAX_RETENTION}: a partition a day kept forever runs PostgreSQL"
        " out of locks (max_locks_per_transaction) within two years. Use month, or set a"
        " retention (docs/usage-data.md)."
    )
# Beat's record of when each periodic task last ran: under var/ (a plain `celery beat` would
# otherwise write celerybeat-schedule into the current directory, the checkout).
CELERY_BEAT_SCHEDULE_FILENAME = env.str(
    "CELERY_BEAT_SCHEDULE_FILENAME", default=str(VAR_DIR / "celerybeat-schedule")
)
CELERY_BEAT_SCHEDULE = {
    "usage-rollups": {"task": "billing.tasks.usage_rollup_recent", "schedule": 300.0},
    "usage-partitions": {
        "task": "billing.tasks.usage_partitions_maintain",
        "schedule": crontab(minute=17),
    },
    "budgets": {"task": "billing.tasks.budgets_check", "schedule": 60.0},
    "agent-heartbeats": {"task": "agents.tasks.agent_heartbeats_check", "schedule": 60.0},
    "weekly-digests": {
        "task": "billing.tasks.weekly_digests",
        "schedule": crontab(minute=0, hour=8, day_of_week=1),
    },
}

EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Bonito <bonito@localhost>")

AUTH_USER_MODEL = "orgs.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = ["orgs.throttle.LoginThrottleBackend", "orgs.backends.PasswordBackend"]
# Sign-in throttling (orgs/throttle.py, docs/security.md). django-axes counts failed password
# checks (the sign-in page, the admin's) in the database, so the counts hold across processes
# and replicas. The Nth failure within the cool-off locks the account or the client address
# out until LOGIN_COOLOFF_MINUTES after the last counted failure; a success clears the
# account's count.
LOGIN_FAILURES_PER_ACCOUNT = env.int("LOGIN_FAILURES_PER_ACCOUNT", default=5)
LOGIN_FAILURES_PER_ADDRESS = env.int("LOGIN_FAILURES_PER_ADDRESS", default=20)
LOGIN_COOLOFF_MINUTES = env.int("LOGIN_COOLOFF_MINUTES", default=15)
if min(LOGIN_FAILURES_PER_ACCOUNT, LOGIN_FAILURES_PER_ADDRESS, LOGIN_COOLOFF_MINUTES) < 1:
    raise ImproperlyConfigured(
        "LOGIN_FAILURES_PER_ACCOUNT, LOGIN_FAILURES_PER_ADDRESS and LOGIN_COOLOFF_MINUTES "
        "must be at least 1."
    )
AXES_HANDLER = "orgs.throttle.LoginThrottleHandler"
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # the handler reads them in this order
AXES_FAILURE_LIMIT = LOGIN_FAILURES_PER_ACCOUNT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_COOLOFF_MINUTES)
AXES_RESET_ON_SUCCESS = True
# Tries during a lockout are refused without being counted: the lockout ends on time.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_CLIENT_IP_CALLABLE = "orgs.throttle.client_address"
AXES_USERNAME_FORM_FIELD = "username"
AXES_USERNAME_CALLABLE = "orgs.throttle.login_username"
AXES_LOCKOUT_CALLABLE = "orgs.throttle.lockout_response"
AXES_DISABLE_ACCESS_LOG = True  # a row per successful sign-in would grow without end
# django-ratelimit counts password-reset and invitation requests per hour in the cache
# (Redis when set); 0 turns a limit off. A cache that is down lets requests through.
PASSWORD_RESET_EMAIL_PER_HOUR = env.int("PASSWORD_RESET_EMAIL_PER_HOUR", default=5)
PASSWORD_RESET_ADDRESS_PER_HOUR = env.int("PASSWORD_RESET_ADDRESS_PER_HOUR", default=20)
INVITATION_ADDRESS_PER_HOUR = env.int("INVITATION_ADDRESS_PER_HOUR", default=30)
INVITATION_TOKEN_PER_HOUR = env.int("INVITATION_TOKEN_PER_HOUR", default=10)
# Resending one invitation (dashboard and REST): each resend is an email to its address.
INVITATION_RESEND_PER_HOUR = env.int("INVITATION_RESEND_PER_HOUR", default=5)
# Invitation emails sent (new invitations and resends) per user, and per org, and hour.
INVITATION_SENDS_PER_USER_PER_HOUR = env.int("INVITATION_SENDS_PER_USER_PER_HOUR", default=30)
INVITATION_SENDS_PER_ORG_PER_HOUR = env.int("INVITATION_SENDS_PER_ORG_PER_HOUR", default=100)
RATELIMIT_FAIL_OPEN = True
# The management API (/api/…): requests per user (or personal access token) and minute.
API_REQUESTS_PER_MINUTE = env.int("API_REQUESTS_PER_MINUTE", default=600)
# SAML single sign-on (orgs/sso.py, docs/sso.md).
SSO_MAX_RESPONSE_BYTES = env.int("SSO_MAX_RESPONSE_BYTES", default=256 * 1024)
SSO_REQUEST_TTL_S = env.int("SSO_REQUEST_TTL_S", default=600)
SSO_ACS_PER_MINUTE = env.int("SSO_ACS_PER_MINUTE", default=30)
SSO_SP_CERT_GRACE_DAYS = env.int("SSO_SP_CERT_GRACE_DAYS", default=30)
# Who verifies that an org owns the email domains its IdP may sign in: "admin" (a platform
# admin or apply_config) or "trust" (an org admin's claim counts: only where every org
# admin is trusted, e.g. a single-tenant install). docs/sso.md, "Email domains".
SSO_DOMAIN_VERIFICATION = env.str("SSO_DOMAIN_VERIFICATION", default="admin").strip().lower()
if SSO_DOMAIN_VERIFICATION not in ("admin", "trust"):
    raise ImproperlyConfigured("SSO_DOMAIN_VERIFICATION must be admin or trust.")
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
PASSWORD_RESET_TIMEOUT = 60 * 60 * 24
INVITATION_TTL_DAYS = env.int("INVITATION_TTL_DAYS", default=7)
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=60 * 60 * 12)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# Serve files from static/ even before collectstatic (tests, a fresh clone); make serve
# still runs collectstatic so production gets compressed files.
WHITENOISE_USE_FINDERS = True


# WhiteNoise answers before the CSP and X-Frame-Options middleware: it adds them itself
# (imported when called: the helper reads these settings).
def WHITENOISE_ADD_HEADERS_FUNCTION(headers, path, url):  # noqa: N802 - a setting's name
    from bonito.static_headers import add_security_headers

    add_security_headers(headers, path, url)


STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Production hardening; each can be relaxed by env for a plain-HTTP lab install.
BEHIND_PROXY = env.bool("BEHIND_PROXY", default=False)
if BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True
# The proxies whose X-Forwarded-For hops are believed (core/client_ip.py): the client is the
# right-most address outside these networks.
TRUSTED_PROXIES = env.list(
    "TRUSTED_PROXIES",
    default=["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"],
)
# Provider URLs and webhooks may only reach public addresses; these CIDRs are allowed too
# (a self-hosted vLLM or Ollama on the private network). Checked when saved and at connect.
PROVIDER_ALLOWED_NETWORKS = env.list("PROVIDER_ALLOWED_NETWORKS", default=[])
for _network in PROVIDER_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network.strip(), strict=False)
    except ValueError as _exc:
        raise ImproperlyConfigured(f"PROVIDER_ALLOWED_NETWORKS: {_exc}") from _exc
# Whether a provider saved without credentials may use the process's own (the AWS instance
# role, Google's application-default credentials, OPENAI_API_KEY…). Off: every org brings its
# own, so no org spends on the operator's account (gateway/dataplane/credentials.py).
PROVIDER_AMBIENT_CREDENTIALS = env.bool("PROVIDER_AMBIENT_CREDENTIALS", default=False)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
# Content-Security-Policy on every response (django-csp; docs/security.md). No inline
# script and no eval anywhere: behaviour lives in static/js and reads data- attributes, so
# text a user typed can never run as script even if a template forgets to escape it.
# Inline *styles* stay allowed: the vendored Swagger UI and a few style attributes use them,
# and a style cannot run script. form-action is left open: SAML sign-in and sign-out
# redirect a form post to the org's IdP.
_csp_report_uri = env.str("CSP_REPORT_URI", default="")
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        # 'self' covers ws(s):// to this host: the Logs live tail.
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        **({"report-uri": [_csp_report_uri]} if _csp_report_uri else {}),
    },
}
# Probes and API clients are never redirected: a redirected POST loses its body.
SECURE_REDIRECT_EXEMPT = [r"^api/health$", r"^api/ready$", r"^v1/"]

SILENCED_SYSTEM_CHECKS = env.list("SILENCED_SYSTEM_CHECKS", default=["security.W021"])
# django-ratelimit's list of caches predates Django's own RedisCache, which increments
# atomically. Without Redis its counts are per process: right for the embedded default (one
# process serves); a production install with several workers sets REDIS_URL.
SILENCED_SYSTEM_CHECKS += ["django_ratelimit.W001"] + (
    [] if REDIS_URL else ["django_ratelimit.E003"]
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {"client_errors": {"()": "bonito.log_filters.ClientErrorsInOneLine"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["client_errors"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # Django's own console handler (DEBUG) printed every record a second time, a 403's
        # traceback included: Django's records go to the one root handler only.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.db.backends": {"level": "WARNING"},
        # Axes logs every sign-in at INFO; its warnings (failures, lockouts) are what matter.
        "axes": {"level": "WARNING"},
    },
}

# Keys are stored as HMAC-SHA256 under this secret; changing it invalidates every key.
KEY_HASH_SECRET = env.str("KEY_HASH_SECRET", default=SECRET_KEY)
# Fernet keys (comma-separated, newest first) that encrypt provider credentials at rest.
# Unset: one key derived from SECRET_KEY. Generate one with
#   python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"
ENCRYPTION_KEYS = env.list("ENCRYPTION_KEYS", default=[])

# Gateway (/v1) data plane.
GATEWAY_MAX_BODY_BYTES = env.int("GATEWAY_MAX_BODY_BYTES", default=10 * 1024 * 1024)
GATEWAY_PASSTHROUGH = env.bool("GATEWAY_PASSTHROUGH", default=True)
GATEWAY_RETRY_ROUNDS = env.int("GATEWAY_RETRY_ROUNDS", default=2)
GATEWAY_REQUEST_TIMEOUT_S = env.float("GATEWAY_REQUEST_TIMEOUT_S", default=120.0)
GATEWAY_SNAPSHOT_POLL_S = env.float("GATEWAY_SNAPSHOT_POLL_S", default=0.5)
# Whether the process that commits a config change builds and stores its delta once for
# every worker (docs/gateway.md, "A delta is built once"); off, each worker builds it.
GATEWAY_SHARE_DELTAS = env.bool("GATEWAY_SHARE_DELTAS", default=True)
# How often each worker refreshes billing facts (month spend, spent budgets) in its snapshot.
GATEWAY_FACTS_REFRESH_S = env.float("GATEWAY_FACTS_REFRESH_S", default=60.0)
# Config change-log rows kept; a worker further behind than this does a full build.
CONFIG_CHANGES_KEPT = env.int("CONFIG_CHANGES_KEPT", default=10000)
# How long the usage writer waits for more records after the first of a batch: one insert
# for what would be many at moderate rates (records are in the journal meanwhile).
GATEWAY_USAGE_LINGER_S = env.float("GATEWAY_USAGE_LINGER_S", default=0.05)
GATEWAY_SPOOL_DIR = Path(env.str("GATEWAY_SPOOL_DIR", default=str(VAR_DIR / "spool" / "usage")))
# Limits on Redis: how long a request waits for it (a free connection and the script's
# answer) before a 503, how many connections a worker opens, and the share of every limit
# and of what is left of a spend cap that one process may use while Redis is unreachable
# (1 / the number of gateway processes across all replicas).
GATEWAY_REDIS_TIMEOUT_S = env.float("GATEWAY_REDIS_TIMEOUT_S", default=2.0)
GATEWAY_REDIS_MAX_CONNECTIONS = env.int("GATEWAY_REDIS_MAX_CONNECTIONS", default=64)
GATEWAY_FALLBACK_SHARE = env.float("GATEWAY_FALLBACK_SHARE", default=1 / max(1, WEB_CONCURRENCY))
# A process killed mid-request leaves its spend reservations on the cap's counter in Redis
# until this long after its last heartbeat (a live process beats every quarter of it).
GATEWAY_SPEND_LEASE_S = env.float("GATEWAY_SPEND_LEASE_S", default=60.0)
# A live process beats every quarter of its lease, each beat bounded by the Redis timeout:
# a shorter lease would let a slow beat lapse and a live process's reservations be swept.
if not GATEWAY_SPEND_LEASE_S >= 4 * (GATEWAY_REDIS_TIMEOUT_S + 0.5):
    raise ImproperlyConfigured(
        "GATEWAY_SPEND_LEASE_S must be at least 4 x (GATEWAY_REDIS_TIMEOUT_S + 0.5) = "
        f"{4 * (GATEWAY_REDIS_TIMEOUT_S + 0.5):g} seconds, not {GATEWAY_SPEND_LEASE_S:g}."
    )
# Usage records are appended to a per-process journal before their response completes
# (a killed process loses none); journals of stopped processes are replayed at the next start.
GATEWAY_USAGE_JOURNAL = env.bool("GATEWAY_USAGE_JOURNAL", default=True)
GATEWAY_USAGE_JOURNAL_DIR = Path(
    env.str("GATEWAY_USAGE_JOURNAL_DIR", default=str(GATEWAY_SPOOL_DIR.parent / "journal"))
)
# Usage records the database refuses for their content are set aside here.
GATEWAY_DEAD_LETTER_DIR = Path(
    env.str("GATEWAY_DEAD_LETTER_DIR", default=str(GATEWAY_SPOOL_DIR.parent / "dead"))
)
# Django itself must not refuse /v1 bodies below the gateway's own cap.
DATA_UPLOAD_MAX_MEMORY_SIZE = GATEWAY_MAX_BODY_BYTES + 1024

# VPC agents (docs/agent.md). A rotated bt- org token keeps working this long at most (less
# once every agent calls with the new one).
AGENT_TOKEN_GRACE_HOURS = env.float("AGENT_TOKEN_GRACE_HOURS", default=24.0)
# What one POST /api/agent/ingest may hold (each refused with a 413 stating it).
AGENT_INGEST_MAX_BYTES = env.int("AGENT_INGEST_MAX_BYTES", default=1024 * 1024)
AGENT_INGEST_MAX_DECOMPRESSED_BYTES = env.int(
    "AGENT_INGEST_MAX_DECOMPRESSED_BYTES", default=16 * 1024 * 1024
)
AGENT_INGEST_MAX_RECORDS = env.int("AGENT_INGEST_MAX_RECORDS", default=5000)
# Records older than this are refused (a 422 the agent sets aside), never silently dropped.
AGENT_INGEST_MAX_AGE_DAYS = env.int("AGENT_INGEST_MAX_AGE_DAYS", default=7)
# The intervals suggested to agents in their config (their own environment overrides them).
AGENT_POLL_S = env.int("AGENT_POLL_S", default=30)
AGENT_HEARTBEAT_S = env.int("AGENT_HEARTBEAT_S", default=60)
AGENT_INGEST_BATCH_S = env.int("AGENT_INGEST_BATCH_S", default=10)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "orgs.rest_auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    # A service's (Django) ValidationError is a 400 with DRF's field -> messages body.
    "EXCEPTION_HANDLER": "orgs.rest_base.exception_handler",
    # API_REQUESTS_PER_MINUTE per user (orgs.throttle.ApiUserThrottle)
    "DEFAULT_THROTTLE_CLASSES": ["orgs.throttle.ApiUserThrottle"],
    "DEFAULT_PARSER_CLASSES": [
        "orgs.rest_parsers.JSONParser",  # a too-deep body is a 400, not a RecursionError
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Bonito management API",
    "DESCRIPTION": "Keys, usage, logs, policies, routing, providers and team of an org. Authenticate with the "
    "dashboard session or a personal access token (Authorization: Bearer pat-…).",
    "VERSION": "1",
    # Swagger UI from the vendored sidecar package: no CDN (Bonito runs inside customers' VPCs).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "SERVE_INCLUDE_SCHEMA": False,
    # Gateway defaults and routing policies share one set of strategies.
    "ENUM_NAME_OVERRIDES": {"RoutingStrategyEnum": "core.strategies.choices"},
}
