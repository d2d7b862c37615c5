"""The network policy on its own (no database): which addresses provider calls and webhooks
may reach, every spelling of an internal address included."""

import pytest

from gateway.dataplane.netpolicy import (
    AddressRefused,
    NetworkPolicy,
    UnresolvableHost,
    check_url,
    split_url,
)

DNS = {
    "api.provider.test": ["93.184.216.34"],
    "loopback.provider.test": ["127.0.0.1"],
    "private.provider.test": ["10.0.0.7"],
    "mixed.provider.test": ["93.184.216.34", "127.0.0.1"],  # one bad answer is enough
    "v6.provider.test": ["::ffff:127.0.0.1"],
}


def hosts(name, port):
    if name not in DNS:
        raise UnresolvableHost(name)
    return DNS[name]


REFUSED = [
    "127.0.0.1",
    "127.9.9.9",
    "localhost",
    "LOCALHOST.",
    "app.localhost",
    "::1",
    "[::1]",
    "0.0.0.0",  # noqa: S104 - an address to refuse, not to bind
    "::",
    "169.254.169.254",
    "169.254.170.2",
    "metadata.google.internal",
    "metadata.google.internal.",
    "fd00:ec2::254",
    "100.100.100.200",
    "fe80::1",
    "10.0.0.5",
    "172.16.3.4",
    "192.168.1.10",
    "fc00::1",
    "100.64.0.1",
    "224.0.0.1",
    "ff02::1",
    "240.0.0.1",
    "255.255.255.255",
    "2130706433",
    "0x7f000001",
    "0x7f.1",
    "0177.0.0.1",
    "127.1",
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "::ffff:169.254.169.254",
    "64:ff9b::7f00:1",
    "2002:7f00:1::",
    "::127.0.0.1",
    "loopback.provider.test",
    "private.provider.test",
    "mixed.provider.test",
    "v6.provider.test",
]


@pytest.mark.parametrize("host", REFUSED)
def test_it_refuses_internal_addresses_in_every_spelling(host):
    with pytest.raises(AddressRefused):
        NetworkPolicy(resolver=hosts).resolve(host, 443)


@pytest.mark.parametrize("host", ["api.provider.test", "93.184.216.34", "2606:4700::1111"])
def test_it_allows_public_addresses(host):
    assert NetworkPolicy(resolver=hosts).resolve(host, 443)


def test_allowed_networks_admit_a_private_host_and_nothing_else():
    policy = NetworkPolicy(["10.0.0.0/8"], resolver=hosts)
    assert policy.resolve("private.provider.test", 8000) == ["10.0.0.7"]
    assert policy.resolve("10.20.30.40", 8000) == ["10.20.30.40"]
    for host in ("192.168.1.10", "127.0.0.1", "loopback.provider.test"):
        with pytest.raises(AddressRefused):
            policy.resolve(host, 8000)


def test_metadata_and_any_addresses_are_refused_even_inside_allowed_networks():
    policy = NetworkPolicy(["0.0.0.0/0", "::/0"], resolver=hosts)
    assert policy.resolve("127.0.0.1", 80) == ["127.0.0.1"]  # the operator asked for it
    for host in ("169.254.169.254", "fd00:ec2::254", "0.0.0.0", "::", "metadata.google.internal"):  # noqa: S104
        with pytest.raises(AddressRefused):
            policy.resolve(host, 80)


def test_a_bad_network_in_the_setting_is_named():
    with pytest.raises(ValueError, match="'10.0.0.0/33'"):
        NetworkPolicy(["10.0.0.0/33"])


@pytest.mark.parametrize(
    "url",
    [
        "ftp://api.provider.test/v1",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_INFO",
        "redis://127.0.0.1:6379/0",
        "dict://127.0.0.1:11211/stats",
        "api.provider.test/v1",
    ],
)
def test_only_http_and_https_urls_are_allowed(url):
    with pytest.raises(ValueError, match="Only http:// and https://"):
        split_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://user:secret@api.provider.test/v1",
        "https://sk-live-123@api.provider.test/v1",
        "https://:secret@api.provider.test/v1",
    ],
)
def test_credentials_in_the_url_are_refused(url):
    with pytest.raises(ValueError, match="credentials") as info:
        check_url(url, NetworkPolicy(resolver=hosts))
    assert "secret" not in str(info.value) and "sk-live" not in str(info.value)


def test_a_name_that_does_not_resolve_yet_is_accepted_and_checked_at_connect_time():
    check_url("https://not-yet.provider.test/v1", NetworkPolicy(resolver=hosts))
    with pytest.raises(UnresolvableHost):
        NetworkPolicy(resolver=hosts).resolve("not-yet.provider.test", 443)


def test_outbound_clients_share_one_verifying_tls_context():
    # Building a context reads the whole CA bundle; every outbound client (an alert delivery,
    # a worker's event loop for LiteLLM) shares the process's one, and it still verifies.
    import ssl

    from gateway.dataplane.egress import guarded_client, tls_context

    with guarded_client(NetworkPolicy()) as a, guarded_client(NetworkPolicy()) as b:
        contexts = {id(c._transport._pool._ssl_context) for c in (a, b)}
    assert contexts == {id(tls_context())}
    assert tls_context().verify_mode == ssl.CERT_REQUIRED and tls_context().check_hostname
