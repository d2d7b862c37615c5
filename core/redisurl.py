"""The forms REDIS_URL takes (one server, Sentinel, Cluster) and a client for each.

    redis://[[user]:password@]host[:port][/db]          one server (also rediss://, unix://)
    redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/service[/db]
    redis+cluster://[[user]:password@]host[:port][,host[:port]…]

The `+sentinel` hosts are the sentinels (port 26379 unless given) and `service` the master's
name they watch; the password is the master's (`?sentinel_password=` for sentinels that ask
for one). The `+cluster` hosts are any of the cluster's nodes (port 6379 unless given).
`rediss+sentinel://` and `rediss+cluster://` speak TLS to the data nodes.
"""

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

SINGLE, SENTINEL, CLUSTER = "single", "sentinel", "cluster"
_QUERY_KEYS = {SENTINEL: {"sentinel_password", "db"}, CLUSTER: set()}


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _host_port(item: str, kind: str, default_port: int) -> tuple[str, int] | None:
    """One `host[:port]` or `[v6 address][:port]` of a sentinel or cluster URL."""
    if not item:
        return None
    if item.startswith("["):
        address, bracket, rest = item[1:].partition("]")
        if not bracket or not address or (rest and not rest.startswith(":")):
            raise ValueError(f"a {kind} URL writes an IPv6 address in brackets: [::1]:26379")
        host, colon, port = address, rest[:1], rest[1:]
    else:
        host, colon, port = item.partition(":")
        if ":" in port:
            raise ValueError(f"a {kind} URL writes an IPv6 address in brackets: [::1]:26379")
    if not host or (colon and not _is_number(port)):
        raise ValueError(f"a {kind} URL lists host:port pairs separated by commas")
    number = int(port) if port else default_port
    if not 1 <= number <= 65535:
        raise ValueError(f"a port in a {kind} URL is between 1 and 65535")
    return host, number


def _query_db(value: str, path_db: int | None, kind: str) -> int:
    """A URL's ?db=, which must be a number and agree with the path's database if any."""
    if not _is_number(value):
        raise ValueError(f"db in a {kind} URL is a database number: ?db=2")
    if path_db is not None and int(value) != path_db:
        raise ValueError(f"a {kind} URL names its database twice (path and ?db=)")
    return int(value)


def _check_single(url: str) -> None:
    """What redis-py would refuse only at the first connection, or take wrongly without a
    word, refused at start: a host:port it cannot read, port 0 (read as the default), a path
    that is not a database number (read as database 0), two different databases (the query
    wins), a `#` (an unencoded one in a password cuts the URL short). The rest of the URL
    (its other options: ssl_cert_reqs=, socket_timeout=…) is redis-py's."""
    from redis.connection import parse_url

    form = (
        "a redis:// URL is redis://[[user]:password@]host[:port][/db]: a port from 1 to"
        " 65535, an IPv6 address in brackets ([::1]), and / # @ in a password written"
        " %2F %23 %40"
    )
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError(form) from None
    if parts.fragment or url.endswith("#"):
        raise ValueError("a redis:// URL has no #fragment: write a # in a password as %23")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(form) from None
    if port == 0:
        raise ValueError("a port in a redis:// URL is between 1 and 65535")
    path = unquote(parts.path).strip("/")
    db = None
    if path:
        if not _is_number(path):
            raise ValueError("the path of a redis:// URL is a database number: redis://host:6379/2")
        db = int(path)
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "db":
            db = _query_db(value, db, "redis://")
    try:
        parse_url(url)
    except ValueError:  # its messages may quote a part of the URL: none is repeated here
        raise ValueError(
            "redis-py cannot read an option of this redis:// URL (ssl_cert_reqs=,"
            " socket_timeout=…: see redis-py's from_url)"
        ) from None


@dataclass(frozen=True, slots=True)
class RedisTarget:
    kind: str  # SINGLE, SENTINEL or CLUSTER
    url: str = field(repr=False)
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
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
        if scheme != "unix":
            _check_single(url)
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
    hosts = [_host_port(item.strip(), kind, default_port) for item in hostlist.split(",")]
    hosts = [h for h in hosts if h]
    if not hosts:
        raise ValueError(f"a {kind} URL names at least one host")
    parts = [p for p in path.split("/") if p]
    service, db = "", None
    if kind == SENTINEL:
        if not parts:
            raise ValueError(
                "a sentinel URL names the master's service: "
                "redis+sentinel://host:26379/mymaster[/db]"
            )
        service = unquote(parts.pop(0))
    if parts:
        if kind == CLUSTER or len(parts) > 1 or not _is_number(parts[0]):
            raise ValueError(
                f"unexpected path in a {kind} URL"
                + (" (a cluster has only database 0)" if kind == CLUSTER else "")
            )
        db = int(parts[0])
    options = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in _QUERY_KEYS[kind]:
            allowed = ", ".join(sorted(_QUERY_KEYS[kind])) or "none"
            raise ValueError(f"unknown option {key!r} in a {kind} URL (allowed: {allowed})")
        if key in options:
            raise ValueError(f"option {key!r} given twice in a {kind} URL")
        options[key] = value
    if "db" in options:
        db = _query_db(options["db"], db, kind)
    sentinel_password = options.get("sentinel_password") or None
    return RedisTarget(
        kind,
        url,
        tuple(hosts),
        service,
        db or 0,
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


def with_db_offset(url: str, offset: int) -> str:
    """redis://host[:port][/db][?query] with its database number moved by offset (the test
    suite's parallel workers, one database each). Other forms are returned as given:
    a Cluster has database 0 only, and the suite's Sentinels are its own servers."""
    m = re.match(r"^(rediss?://[^/?]*)(?:/(\d*))?(\?.*)?$", url)
    if not m or not offset:
        return url
    return f"{m.group(1)}/{int(m.group(2) or 0) + offset}{m.group(3) or ''}"
