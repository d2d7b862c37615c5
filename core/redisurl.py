"""The forms REDIS_URL takes (one server, Sentinel, Cluster) and a client for each.

    redis://[[user]:password@]host[:port][/db]          one server (also rediss://, unix://)
    redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/service[/db]
    redis+cluster://[[user]:password@]host[:port][,host[:port]…]

The `+sentinel` hosts are the sentinels (port 26379 unless given) and `service` the master's
name they watch; the password is the master's (`?sentinel_password=` for sentinels that ask
for one). The `+cluster` hosts are any of the cluster's nodes (port 6379 unless given).
`rediss+sentinel://` and `rediss+cluster://` speak TLS to the data nodes.
"""

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

SINGLE, SENTINEL, CLUSTER = "single", "sentinel", "cluster"


@dataclass(frozen=True, slots=True)
class RedisTarget:
    kind: str  # SINGLE, SENTINEL or CLUSTER
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    tls: bool = False

    def auth(self) -> dict:
        out = {}
        if self.username:
            out["username"] = self.username
        if self.password:
            out["password"] = self.password
        return out


def parse(url: str) -> RedisTarget:
    """Raises ValueError naming what is wrong (never the password)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(
            "a Redis URL starts with redis://, rediss://, unix://, "
            "redis+sentinel:// or redis+cluster://"
        )
    base, _, kind = scheme.partition("+")
    if not kind:
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"unknown Redis URL scheme {scheme!r}")
        return RedisTarget(SINGLE, url, tls=scheme == "rediss")
    if base not in ("redis", "rediss") or kind not in (SENTINEL, CLUSTER):
        raise ValueError(f"unknown Redis URL scheme {scheme!r}")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    if not at:
        hostlist = netloc
    username = password = None
    if userinfo:
        user, colon, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
    default_port = 26379 if kind == SENTINEL else 6379
    hosts = []
    for item in filter(None, hostlist.split(",")):
        host, colon, port = item.rpartition(":") if not item.endswith("]") else (item, "", "")
        if not colon:
            host, port = item, ""
        if not host or (port and not port.isdigit()):
            raise ValueError(f"a {kind} URL lists host:port pairs separated by commas")
        hosts.append((host.strip("[]"), int(port) if port else default_port))
    if not hosts:
        raise ValueError(f"a {kind} URL names at least one host")
    parts = [p for p in path.split("/") if p]
    service, db = "", 0
    if kind == SENTINEL:
        if not parts:
            raise ValueError(
                "a sentinel URL names the master's service: "
                "redis+sentinel://host:26379/mymaster[/db]"
            )
        service = unquote(parts.pop(0))
    if parts:
        if kind == CLUSTER or len(parts) > 1 or not parts[0].isdigit():
            raise ValueError(
                f"unexpected path in a {kind} URL"
                + (" (a cluster has only database 0)" if kind == CLUSTER else "")
            )
        db = int(parts[0])
    options = parse_qs(query)
    sentinel_password = options.get("sentinel_password", [None])[0]
    return RedisTarget(
        kind,
        url,
        tuple(hosts),
        service,
        db,
        username,
        password,
        sentinel_password,
        tls=base == "rediss",
    )


def sentinel_kwargs(target: RedisTarget, **socket) -> dict:
    out = dict(socket)
    if target.sentinel_password:
        out["password"] = target.sentinel_password
    return out


def sync_client(url: str, **kwargs):
    """A redis-py client for any form (health checks, scripts)."""
    import redis
    from redis.cluster import ClusterNode, RedisCluster
    from redis.sentinel import Sentinel

    target = parse(url)
    if target.kind == SINGLE:
        return redis.Redis.from_url(url, **kwargs)
    socket = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    if target.kind == SENTINEL:
        sentinel = Sentinel(target.hosts, sentinel_kwargs=sentinel_kwargs(target, **socket))
        return sentinel.master_for(
            target.service, db=target.db, ssl=target.tls, **target.auth(), **kwargs
        )
    return RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in target.hosts],
        ssl=target.tls,
        **target.auth(),
        **kwargs,
    )


class SentinelPool:
    """Django's RedisCache `pool_class` for a redis+sentinel:// LOCATION."""

    @classmethod
    def from_url(cls, url: str, **options):
        from redis.sentinel import Sentinel, SentinelConnectionPool

        target = parse(url)
        socket = {k: v for k, v in options.items() if k.startswith("socket_")}
        sentinel = Sentinel(target.hosts, sentinel_kwargs=sentinel_kwargs(target, **socket))
        return SentinelConnectionPool(
            target.service, sentinel, db=target.db, ssl=target.tls, **target.auth(), **options
        )
