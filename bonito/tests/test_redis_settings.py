"""REDIS_URL reaches every component the same way: with rediss:// or rediss+sentinel://, the
gateway's limits, the cache, the live log tail (channels_redis) and the Celery broker (kombu)
all speak TLS to Redis (the master, for a Sentinel) and verify its certificate.

Each URL is loaded by a fresh process through the real settings, and each component's
connection pool is built as the component builds it (nothing connects: the hosts do not
exist)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, ssl
from collections import OrderedDict
import django
django.setup()
from django.conf import settings
from django.core.cache import caches
from channels_redis.utils import create_pool
from bonito.celery import app
from gateway.dataplane.limits import Limiter

def describe(pool_class, kwargs):
    reqs = kwargs.get("ssl_cert_reqs")
    return {
        "tls": "SSL" in pool_class.__name__,
        "verify": reqs in (None, "required", ssl.CERT_REQUIRED),
        "db": kwargs.get("db", 0),
        "password": kwargs.get("password"),
    }

out = {}
pool = caches["default"]._cache._get_connection_pool(write=True)
out["cache"] = describe(pool.connection_class, pool.connection_kwargs)

host = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]
pool = create_pool(host if isinstance(host, dict) else {"address": host})
out["channels"] = describe(pool.connection_class, pool.connection_kwargs)

pool = Limiter(settings.GATEWAY_REDIS_URL)._new_client().connection_pool
out["gateway"] = describe(pool.connection_class, pool.connection_kwargs)

# kombu's channel pings Redis when it is made: build its pool with the channel's own
# methods, from the transport and options Celery hands it.
conn = app.connection_for_write()
transport = conn.transport
channel = transport.Channel.__new__(transport.Channel)
channel.connection = transport
channel._seen_fanout_tags = OrderedDict()
for key, value in conn.transport_options.items():
    setattr(channel, key, value)
if conn.transport_cls == "sentinel":
    pool = channel._sentinel_managed_pool()
    params = pool.connection_kwargs
    out["sentinel_password"] = channel.sentinel_kwargs.get("password")
    out["celery"] = describe(pool.connection_class, params)
else:
    params = channel._connparams()
    out["celery"] = describe(params["connection_class"], params)
print(json.dumps(out))
"""


def _components(redis_url: str) -> dict:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DJANGO_SETTINGS_MODULE": "bonito.settings",
    }
    env.pop("GATEWAY_REDIS_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


COMPONENTS = ("cache", "channels", "gateway", "celery")


@pytest.mark.parametrize(
    ("url", "tls"),
    [
        ("rediss+sentinel://app:pw@s1:26379,s2/mymaster/2?sentinel_password=sp", True),
        ("redis+sentinel://app:pw@s1:26379,s2/mymaster/2?sentinel_password=sp", False),
        ("rediss://app:pw@r1:6380/2", True),
        ("redis://app:pw@r1:6380/2", False),
    ],
)
def test_every_component_speaks_tls_when_the_url_says_so(url, tls):
    components = _components(url)
    for name in COMPONENTS:
        got = components[name]
        assert got["tls"] is tls, (name, got)
        assert got["verify"], (name, got)  # a certificate is checked, never skipped
        assert (got["db"], got["password"]) == (2, "pw"), (name, got)
    if "sentinel" in url:
        assert components["sentinel_password"] == "sp"
