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
    ],
)
def test_one_server_urls_are_left_to_redis_py(url, tls):
    assert redisurl.parse(url) == redisurl.RedisTarget(redisurl.SINGLE, url, tls=tls)


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
    ],
)
def test_a_bad_url_is_refused_naming_the_problem_not_the_password(url, says):
    with pytest.raises(ValueError) as exc:
        redisurl.parse(url)
    assert says in str(exc.value)
    assert "hunter2" not in str(exc.value)
