import pytest
from django.test import RequestFactory

from core.client_ip import client_ip


def _request(remote, forwarded=None):
    meta = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **meta)


def test_it_ignores_forwarded_for_unless_behind_a_proxy(settings):
    settings.BEHIND_PROXY = False
    assert client_ip(_request("10.0.0.5", "203.0.113.9")) == "10.0.0.5"


@pytest.mark.parametrize(
    ("remote", "forwarded", "client"),
    [
        ("10.0.0.5", "203.0.113.9", "203.0.113.9"),
        # a client cannot choose its address by writing its own header: the left is theirs
        ("10.0.0.5", "1.2.3.4, 203.0.113.9", "203.0.113.9"),
        ("10.0.0.5", "127.0.0.1, 203.0.113.9", "203.0.113.9"),
        # two proxies of ours in a row
        ("10.0.0.5", "198.51.100.7, 192.168.1.2", "198.51.100.7"),
        ("10.0.0.5", "2001:db8::1, 10.1.1.1", "2001:db8::1"),
        ("10.0.0.5", "[2001:db8::2]:4431", "2001:db8::2"),
        ("10.0.0.5", "203.0.113.9:5555", "203.0.113.9"),
        # nothing forwarded, or only our own proxies: the nearest address we know
        ("10.0.0.5", None, "10.0.0.5"),
        ("10.0.0.5", "192.168.0.9", "192.168.0.9"),
        # junk that no proxy of ours wrote is never taken as an address
        ("10.0.0.5", "<script>, not-an-ip", "10.0.0.5"),
        ("10.0.0.5", "junk, 192.168.3.3", "192.168.3.3"),
        # a request that reached us directly from the internet: its header is not believed
        ("198.51.100.1", "203.0.113.9", "198.51.100.1"),
    ],
)
def test_it_takes_the_rightmost_untrusted_hop(settings, remote, forwarded, client):
    settings.BEHIND_PROXY = True
    assert client_ip(_request(remote, forwarded)) == client


def test_trusted_proxies_are_configurable(settings):
    settings.BEHIND_PROXY = True
    settings.TRUSTED_PROXIES = ["203.0.113.0/24"]
    assert client_ip(_request("203.0.113.1", "10.9.9.9, 203.0.113.2")) == "10.9.9.9"


# An IPv4 address in IPv6 form (IPv4-mapped, `::ffff:a.b.c.d`, in any spelling) is that IPv4
# address: it is checked against IPv4 proxy networks and returned in IPv4 form.
MAPPED_SPELLINGS = ["::ffff:{v4}", "::FFFF:{v4}", "0:0:0:0:0:ffff:{v4}", "[::ffff:{v4}]:443"]


@pytest.mark.parametrize("spelling", MAPPED_SPELLINGS)
def test_a_mapped_client_is_returned_as_ipv4(settings, spelling):
    settings.BEHIND_PROXY = True
    forwarded = spelling.format(v4="203.0.113.9")
    assert client_ip(_request("10.0.0.5", forwarded)) == "203.0.113.9"


@pytest.mark.parametrize("spelling", MAPPED_SPELLINGS[:3])
def test_a_mapped_trusted_proxy_is_trusted(settings, spelling):
    settings.BEHIND_PROXY = True
    proxy = spelling.format(v4="10.0.0.5")
    assert client_ip(_request(proxy, "203.0.113.9")) == "203.0.113.9"
    assert client_ip(_request("10.0.0.5", f"203.0.113.9, {spelling.format(v4='10.1.1.1')}")) == (
        "203.0.113.9"
    )


@pytest.mark.parametrize("behind_proxy", [False, True])
def test_a_mapped_remote_addr_is_returned_as_ipv4(settings, behind_proxy):
    settings.BEHIND_PROXY = behind_proxy
    assert client_ip(_request("::ffff:198.51.100.1")) == "198.51.100.1"
    # the hex spelling of the same address
    assert client_ip(_request("::ffff:c633:6401")) == "198.51.100.1"


def test_plain_ipv6_is_left_alone(settings):
    settings.BEHIND_PROXY = True
    assert client_ip(_request("::1", "2001:db8::7")) == "2001:db8::7"
