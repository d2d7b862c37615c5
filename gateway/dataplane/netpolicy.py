"""Which addresses Bonito may send a request to (provider URLs, webhooks): the SSRF guard.

One implementation for the control plane (checked when a URL is saved) and the data plane
(checked again by the resolver of every connection, so DNS cannot change the answer in
between). Pure Python: the allowed networks and the resolver are passed in.
"""

import ipaddress
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

SCHEMES = ("http", "https")
# Never allowed, whatever the operator lists: cloud instance metadata (it hands out the
# platform's own credentials) and the "any" addresses, which connect to this host.
ALWAYS_REFUSED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "::/128",
        "169.254.169.254/32",  # AWS, GCP, Azure, OpenStack, …
        "169.254.170.2/32",  # AWS ECS task metadata
        "169.254.169.123/32",  # AWS time sync
        "fd00:ec2::254/128",  # AWS IMDS over IPv6
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "224.0.0.0/4",
        "ff00::/8",
    )
)
# Names that mean this host (RFC 6761), whatever DNS says.
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
# Names of metadata services: never allowed.
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class AddressRefused(OSError):
    """The host is, or resolves to, an address outside the policy. An OSError, so HTTP
    clients treat it like any other failure to connect."""


class UnresolvableHost(OSError):
    """The host name does not resolve (now)."""


def parse_networks(values: Iterable[str]) -> tuple:
    """CIDRs (or single addresses) from a setting; raises ValueError naming a bad one."""
    networks = []
    for value in values:
        value = value.strip()
        if not value:
            continue
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not a network (expected a CIDR such as 10.0.0.0/8)"
            ) from exc
    return tuple(networks)


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for a name (what a connection would use)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvableHost(f"{host} does not resolve") from exc
    return list(dict.fromkeys(info[4][0] for info in infos))


def normalize_host(host: str) -> str:
    """Lower case, no brackets, no trailing dots, no IPv6 zone: the name a resolver sees."""
    host = (host or "").strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.split("%", 1)[0].rstrip(".")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4, Teredo, compatible)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if any(ip in net for net in NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if int(ip) >> 32 == 0 and int(ip) > 1:  # deprecated ::a.b.c.d
        return ipaddress.IPv4Address(int(ip))
    return None


def ip_literal(name: str) -> Address | None:
    """The address a host string denotes by itself, legacy IPv4 spellings included
    (2130706433, 0x7f.1, 0177.0.0.1, 127.1: C libraries accept them all)."""
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        pass
    if name and all(c in "0123456789abcdefx." for c in name) and name[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(name))
        except OSError:
            return None
    return None


class NetworkPolicy:
    """Public addresses only, plus the operator's ``allowed_networks``; never metadata,
    unspecified or multicast addresses. ``resolver(host, port)`` returns address strings."""

    def __init__(self, allowed_networks: Iterable = (), resolver: Resolver | None = None):
        self.allowed = parse_networks(str(n) for n in allowed_networks)
        self.resolver = resolver or system_resolver

    def __repr__(self):
        return f"NetworkPolicy(allowed={[str(n) for n in self.allowed]})"

    def address_allowed(self, ip: Address) -> bool:
        if any(ip in net for net in ALWAYS_REFUSED if net.version == ip.version):
            return False
        if any(ip in net for net in self.allowed if net.version == ip.version):
            return True
        if ip.version == 6:
            inner = _embedded_ipv4(ip)
            if inner is not None and not self.address_allowed(inner):
                return False
        return ip.is_global and not ip.is_multicast and not ip.is_reserved

    def resolve(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for ``host``, all of them allowed; else AddressRefused
        (UnresolvableHost when the name does not resolve)."""
        name = normalize_host(host)
        if not name:
            raise AddressRefused("no host")
        if name in METADATA_NAMES:
            raise AddressRefused(f"{host} is a metadata service")
        literal = ip_literal(name)
        if literal is not None:
            addresses = [str(literal)]
        elif name in LOOPBACK_NAMES or name.endswith(".localhost"):
            addresses = ["127.0.0.1"]
        else:
            addresses = self.resolver(name, port)
            if not addresses:
                raise UnresolvableHost(f"{host} does not resolve")
        for address in addresses:
            if not self.address_allowed(ipaddress.ip_address(normalize_host(address))):
                raise AddressRefused(f"{host} resolves to {address}, which is not allowed")
        return addresses

    def check_literal(self, host: str) -> None:
        """For clients that skip the resolver for IP literals: refuse a literal outside the
        policy (names are left to the resolver)."""
        literal = ip_literal(normalize_host(host))
        if literal is not None and not self.address_allowed(literal):
            raise AddressRefused(f"{host} is not allowed")


def split_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL without credentials; ValueError says what is
    wrong, in words for the person who typed it."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError("This is not a valid URL.") from exc
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError("Only http:// and https:// URLs are allowed.")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError(
            "Put credentials in the API key field, not in the URL: a user:password@ in the "
            "address would be stored and shown in clear."
        )
    if not parts.hostname:
        raise ValueError("The URL has no host.")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


def check_url(url: str, policy: NetworkPolicy, *, unresolvable_ok: bool = True) -> None:
    """Refuse (ValueError) a URL Bonito must not call. A name that does not resolve now is
    accepted unless ``unresolvable_ok`` is false: every connection checks again."""
    _scheme, host, port = split_url(url)
    try:
        policy.resolve(host, port)
    except UnresolvableHost as exc:
        if not unresolvable_ok:
            raise ValueError(f"{host} does not resolve.") from exc
    except AddressRefused as exc:
        raise ValueError(
            f"{host} is not allowed: it is (or resolves to) a loopback, private, link-local, "
            "metadata or otherwise internal address. Bonito only calls public addresses; the "
            "platform operator can allow private networks with PROVIDER_ALLOWED_NETWORKS."
        ) from exc
