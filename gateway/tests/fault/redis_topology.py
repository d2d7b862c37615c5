"""A private Redis Cluster (3 masters) and a Sentinel set (master, replica, 3 sentinels)
on spare ports, for tests that run the limiter against the URL forms production uses."""

import shutil
import subprocess
import time
from pathlib import Path

import redis

from gateway.tests.fault.redis_server import free_port


def _server(dir: Path, port: int, *extra: str) -> subprocess.Popen:
    dir.mkdir(parents=True, exist_ok=True)
    log = open(dir / "redis.log", "a")  # noqa: SIM115 - kept open for the process
    args = [shutil.which("redis-server") or "redis-server"]
    args += ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(dir), *extra]
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)


def _wait(port: int, dir: Path, ready=lambda c: c.ping()) -> None:
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            if ready(redis.Redis(port=port, socket_timeout=2, decode_responses=True)):
                return
        except redis.RedisError:
            pass
        time.sleep(0.05)
    raise AssertionError((dir / "redis.log").read_text())


class RedisClusterServers:
    def __init__(self, tmp: Path, masters: int = 3):
        self.dir = tmp / "cluster"
        self.ports = [free_port() for _ in range(masters)]
        self.procs: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2])

    def start(self) -> "RedisClusterServers":
        try:
            return self._start()
        except BaseException:
            self.stop()  # no server outlives a failed start
            raise

    def _start(self) -> "RedisClusterServers":
        for port in self.ports:
            node = self.dir / str(port)
            # The bus port is set too: by default it is port + 10000, which may be taken.
            self.procs.append(
                _server(
                    node,
                    port,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "n.conf",
                    "--cluster-port",
                    str(free_port()),
                )
            )
        for port in self.ports:
            _wait(port, self.dir / str(port))
        subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports]]
            + ["--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for port in self.ports:
            _wait(port, self.dir / str(port), lambda c: c.cluster("info")["cluster_state"] == "ok")
        return self

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(10)
        self.procs = []


class RedisSentinelServers:
    """A master and its replica, watched by three sentinels (quorum 2) that fail over
    within about a second of the master going away."""

    SERVICE = "bonito"

    def __init__(self, tmp: Path):
        self.dir = tmp / "sentinel"
        self.data_ports = [free_port(), free_port()]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.data: dict[int, subprocess.Popen] = {}
        self.sentinels: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.SERVICE}/0"

    def start(self) -> "RedisSentinelServers":
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> "RedisSentinelServers":
        master, replica = self.data_ports
        self.data[master] = _server(self.dir / str(master), master)
        self.data[replica] = _server(
            self.dir / str(replica), replica, "--replicaof", "127.0.0.1", str(master)
        )
        for port in self.data_ports:
            _wait(port, self.dir / str(port))
        _wait(
            replica,
            self.dir / str(replica),
            lambda c: c.info("replication")["master_link_status"] == "up",
        )
        for port in self.sentinel_ports:
            folder = self.dir / f"s{port}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "sentinel.conf").write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {master} 2\n"
                f"sentinel down-after-milliseconds {self.SERVICE} 500\n"
                f"sentinel failover-timeout {self.SERVICE} 3000\n"
            )
            log = open(folder / "redis.log", "a")  # noqa: SIM115
            self.sentinels.append(
                subprocess.Popen(
                    [shutil.which("redis-server") or "redis-server", str(folder / "sentinel.conf")]
                    + ["--sentinel"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for port in self.sentinel_ports:
            _wait(
                port,
                self.dir / f"s{port}",
                lambda c: c.sentinel_master(self.SERVICE)["num-other-sentinels"] == 2,
            )
        return self

    def master_port(self) -> int:
        c = redis.Redis(port=self.sentinel_ports[0], decode_responses=True)
        return int(c.sentinel_get_master_addr_by_name(self.SERVICE)[1])

    def kill_master(self) -> int:
        """SIGKILL the master; returns the port the sentinels promote to (the replica)."""
        old = self.master_port()
        self.data.pop(old).kill()
        return next(p for p in self.data_ports if p != old)

    def wait_promoted(self, port: int, timeout: float = 20) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.master_port() == port:
                return
            time.sleep(0.1)
        raise AssertionError("the sentinels promoted no replica")

    def stop(self) -> None:
        for proc in [*self.data.values(), *self.sentinels]:
            proc.kill()
            proc.wait(10)
        self.data, self.sentinels = {}, []
