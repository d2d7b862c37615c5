# The gateway's live-server fixtures, for tests of billing behaviour seen on /v1.
from gateway.tests.conftest import (  # noqa: F401
    acme,
    fake_upstream,
    fake_upstream_server,
    gw,
    live_server_thread,
    loopback_allowed,
)
