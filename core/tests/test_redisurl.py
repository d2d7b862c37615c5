"""REDIS_URL's forms: one server, a Sentinel set, a Cluster; bad ones are named, never
with their password."""

import pytest

from core import redisurl


def test_it_reads_a_sentinel_url_with_every_part():
    target = redisurl.parse(
        "redis+sentinel://app:s%40cret@10.0.0.1:26380,sentinel-b,[::1]:26381/mymaster/2"
        "?sentinel_password=sp"
    )
    assert target.kind == redisurl.SENTINEL
    assert target.hosts == (("10.0.0.1", 26380), ("sentinel-b", 26379), ("::1", 26381))
    assert (target.service, target.db) == ("mymaster", 2)
    assert target.auth() == {"username": "app", "password": "s@cret"}
    assert target.sentinel_password == "sp" and target.tls is False


def test_it_reads_a_cluster_url_and_its_default_port():
    target = redisurl.parse("rediss+cluster://:pw@node-a:7000,node-b")
    assert target.kind == redisurl.CLUSTER and target.tls is True
    assert target.hosts == (("node-a", 7000), ("node-b", 6379))
    assert target.auth() == {"password": "pw"} and target.db == 0


@pytest.mark.parametrize(
    ("url", "tls"),
    [
        ("redis://h:6379/0", False),
        ("rediss://:pw@h/1", True),
        ("unix:///run/redis.sock?db=3", False),
        ("redis://u:p%40ss@[::1]:6380/2?db=2&ssl_cert_reqs=none", False),
        ("redis://h?socket_timeout=2", False),
        ("redis://h:6379/0/", False),
        ("redis://h/%31", False),
        ("redis:///0", False),
        ("redis://:pw@/0", False),
        ("redis://localhost", False),
        ("redis://user@h", False),
    ],
)
def test_one_server_urls_are_left_to_redis_py(url, tls):
    assert redisurl.parse(url) == redisurl.RedisTarget(redisurl.SINGLE, url, tls=tls)


def test_spaces_around_hosts_are_dropped_and_ipv6_is_read_in_brackets():
    target = redisurl.parse("redis+sentinel://:pw@h1:26379, h2 ,[::1]:26380,[fe80::2]/m")
    assert target.hosts == (("h1", 26379), ("h2", 26379), ("::1", 26380), ("fe80::2", 26379))


@pytest.mark.parametrize("tail", ["?db=3", "/3", "/3?db=3", "?sentinel_password=sp&db=3"])
def test_a_sentinel_url_takes_its_database_from_the_path_or_db(tail):
    assert redisurl.parse(f"redis+sentinel://h/m{tail}").db == 3


def test_the_sentinel_password_is_read_decoded():
    target = redisurl.parse("redis+sentinel://h/m?sentinel_password=a%26b%3Dc")
    assert target.sentinel_password == "a&b=c"


def test_the_repr_of_a_target_carries_no_secret():
    target = redisurl.parse("rediss+sentinel://app:hunter2@h1,h2/m?sentinel_password=hunter3")
    assert "hunter2" not in repr(target) and "hunter3" not in repr(target)
    assert "h1" in repr(target)  # still says where it points


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("h:6379", "starts with"),
        ("http://:hunter2@h", "scheme"),
        ("redis+replica://:hunter2@h", "scheme"),
        ("redis+sentinel://:hunter2@h1,h2", "service"),
        ("redis+sentinel://:hunter2@/mymaster", "at least one host"),
        ("redis+sentinel://:hunter2@h:port/mymaster", "host:port"),
        ("redis+sentinel://:hunter2@h/mymaster/zero", "unexpected path"),
        ("redis+cluster://:hunter2@h:7000/1", "only database 0"),
        ("redis+sentinel://:hunter2@::1/m", "IPv6 address in brackets"),
        ("redis+sentinel://:hunter2@h1,fe80::1:26379/m", "IPv6 address in brackets"),
        ("redis+sentinel://:hunter2@[::1/m", "IPv6 address in brackets"),
        ("redis+sentinel://:hunter2@[::1]x/m", "IPv6 address in brackets"),
        ("redis+sentinel://:hunter2@h:0/m", "between 1 and 65535"),
        ("redis+sentinel://:hunter2@h:65536/m", "between 1 and 65535"),
        ("redis+cluster://:hunter2@h:99999", "between 1 and 65535"),
        ("redis+sentinel://:hunter2@h1:\u0663/m", "host:port"),
        ("redis+sentinel://:hunter2@h1:/m", "host:port"),
        ("redis+sentinel://:hunter2@h1:+1/m", "host:port"),
        ("redis+sentinel://:hunter2@h1: 1/m", "host:port"),
        ("redis+sentinel://:hunter2@h/m/\u0663", "unexpected path"),
        ("redis+sentinel://:hunter2@h/m?db=x", "database number"),
        ("redis+sentinel://:hunter2@h/m?db=\u0663", "database number"),
        ("redis+sentinel://:hunter2@h/m/1?db=2", "database twice"),
        ("redis+sentinel://:hunter2@h/m?sentinel_password=a&sentinel_password=b", "twice"),
        ("redis+sentinel://:hunter2@h/m?db=1&db=1", "twice"),
        ("redis+sentinel://:hunter2@h/m?ssl_cert_reqs=none", "unknown option"),
        ("redis+sentinel://:hunter2@h/m?sentinel_pasword=hunter2", "unknown option"),
        ("redis+cluster://:hunter2@h?db=0", "unknown option"),
        ("redis://:hunter2@h:99999", "from 1 to 65535"),
        ("redis://:hun/ter2@h/0", "%2F"),
        ("redis://:hunter2@h?health_check_interval=x", "cannot read an option"),
        ("rediss://:hunter2@h:0/1", "between 1 and 65535"),
        ("redis://:hunter2@h:abc", "host[:port]"),
        ("redis://:hunter2@::1:6379", "IPv6 address in brackets"),
        ("redis://:hunter2@[::1/0", "IPv6 address in brackets"),
        ("redis://:hunter2@h/1?db=2", "database twice"),
        ("redis://:hunter2@h/abc", "database number"),
        ("redis://:hunter2@h/1/2", "database number"),
        ("redis://:hunter2@h?db=x", "database number"),
        ("redis://:hunter2#x@h/0", "%23"),
    ],
)
def test_a_bad_url_is_refused_naming_the_problem_not_the_password(url, says):
    with pytest.raises(ValueError) as exc:
        redisurl.parse(url)
    assert says in str(exc.value)
    assert "hunter2" not in str(exc.value)
