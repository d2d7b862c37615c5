"""The address of the client that sent a request, read through the proxies we trust.

Behind a proxy (`BEHIND_PROXY`), REMOTE_ADDR is the proxy's address and the client's is in
`X-Forwarded-For`, where every proxy appends the address it saw. Only the right-hand end
of that header is trustworthy: a client can put anything on the left. So the client is the
right-most address that is not one of our own proxies (`TRUSTED_PROXIES`).

An IPv4 address written in IPv6 form (`::ffff:203.0.113.9`, as dual-stack sockets and some
proxies write it) is read as the IPv4 address it is, so it matches IPv4 proxy networks and
is counted as that one client, not as the IPv6 block `::/64` shared by every IPv4 client."""

import ipaddress
from functools import lru_cache

from django.conf import settings


@lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]):
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _trusted(ip, networks) -> bool:
    return any(ip in net for net in networks if ip.version == net.version)


def _normalise(ip):
    return getattr(ip, "ipv4_mapped", None) or ip


def _parse(value: str):
    value = value.strip()
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        return _normalise(ipaddress.ip_address(value))
    except ValueError:
        return None


def client_ip(request) -> str | None:
    """The client's IP address as a string (None when the request came over no network)."""
    remote = request.META.get("REMOTE_ADDR") or None
    if remote is not None:
        parsed = _parse(remote)
        remote = str(parsed) if parsed is not None else remote
    if not settings.BEHIND_PROXY or remote is None:
        return remote
    networks = _networks(tuple(settings.TRUSTED_PROXIES))
    hops = [h for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
    nearest = remote
    for value in reversed([*hops, remote]):
        ip = _parse(value)
        if ip is None:  # not an address: no proxy of ours wrote it
            return nearest
        if not _trusted(ip, networks):
            return str(ip)
        nearest = str(ip)
    return nearest  # every hop is one of our proxies: the left-most is the client
