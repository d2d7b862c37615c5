"""N gateway replicas behind nginx, as a multi-host install runs them: each replica is
`make serve` (uvicorn, `workers` processes, lifespan on) with a journal and spool folder of
its own, as separate hosts have; all share one PostgreSQL and one Redis (private servers on
spare ports here). nginx balances /v1 across the replicas (its config, pid and logs live in
the harness's folder). A replica can be killed (its whole process group) and restarted on
the same folders."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from gateway.tests.external import HEAD_DEADLINE, ROOT
from gateway.tests.fault.postgres_server import PostgresServer, free_port
from gateway.tests.fault.redis_server import RedisServer

NGINX_CONF = """
{user}
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  upstream bonito {{
{servers}
    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://bonito;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_buffering off;
      proxy_read_timeout 120s;
      # Which replica answered (the last address when nginx had to try another): the
      # tests tell the killed replica's requests from the others' by it.
      add_header X-Upstream $upstream_addr always;
    }}
  }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


class Replica:
    def __init__(self, harness: "Replicas", index: int):
        self.harness, self.index = harness, index
        self.dir = harness.dir / f"replica-{index}"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.env = {
            **harness.env,
            # Per host: what a replica writes before the database has it.
            "GATEWAY_SPOOL_DIR": str(self.dir / "spool"),
            "GATEWAY_USAGE_JOURNAL_DIR": str(self.dir / "journal"),
            "GATEWAY_DEAD_LETTER_DIR": str(self.dir / "dead"),
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Replica":
        """As `make serve` runs uvicorn; its own session, so a kill takes the whole group."""
        self.dir.mkdir(parents=True, exist_ok=True)
        log = open(self.dir / "server.log", "a")  # noqa: SIM115 - kept open for the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bonito.asgi:application"]
            + ["--host", "127.0.0.1", "--port", str(self.port)]
            + ["--workers", str(self.harness.workers), "--lifespan", "on", "--no-access-log"]
            + ["--loop", "uvloop", "--http", HEAD_DEADLINE, "--log-level", "warning"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
            assert self.proc.poll() is None, (self.dir / "server.log").read_text()[-3000:]
        raise AssertionError((self.dir / "server.log").read_text()[-3000:])

    def answered(self, upstream: str) -> bool:
        """Whether nginx's X-Upstream header (`addr[, addr…]`) names this replica last."""
        return upstream.rpartition(", ")[2] == f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL to every process of the replica at once: a lost host."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None


class Replicas:
    """`n` replicas of `workers` processes on one private PostgreSQL and Redis, behind nginx."""

    def __init__(self, tmp: Path, n: int = 3, workers: int = 2, env: dict | None = None):
        self.dir, self.workers = tmp, workers
        self.pg = PostgresServer().start()
        self.redis = RedisServer(tmp).start()
        self.database_url = self.pg.url.rsplit("/", 1)[0] + "/bonito"
        import psycopg

        with psycopg.connect(self.pg.url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bonito")
        self.env = {
            **os.environ,
            "SECRET_KEY": "replica-test-secret-key-0123456789abcdefghijklmnop",
            "DEBUG": "0",
            "SECURE_SSL_REDIRECT": "0",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis.url,
            "PROVIDER_ALLOWED_NETWORKS": "127.0.0.1/32",  # the fake upstream is on loopback
            "MALLOC_ARENA_MAX": "2",
            # Each process's share of every limit while Redis is unreachable: one of n*workers.
            "GATEWAY_FALLBACK_SHARE": str(1 / (n * workers)),
            **(env or {}),
        }
        self.env.pop("CELERY_BROKER_URL", None)
        self.replicas = [Replica(self, i) for i in range(n)]
        self.nginx: subprocess.Popen | None = None
        self.port = free_port()

    @property
    def url(self) -> str:
        """The balancer's address: what clients use."""
        return f"http://127.0.0.1:{self.port}"

    def manage(self, *args) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def shell(self, code: str):
        """Runs code in `manage.py shell` (as an admin's action would, through the services);
        returns the JSON its last printed line holds."""
        return json.loads(self.manage("shell", "-c", code).strip().splitlines()[-1])

    def start(self) -> "Replicas":
        """Migrated (as `make serve` does first), then the replicas, then the balancer."""
        self.manage("migrate", "--noinput", "-v0")
        for replica in self.replicas:
            replica.start()
        self._start_nginx()
        return self

    def _start_nginx(self) -> None:
        binary = nginx_binary()
        assert binary, "nginx is not installed (make bench-deps)"
        folder = self.dir / "nginx"
        folder.mkdir(exist_ok=True)
        servers = "\n".join(
            f"    server 127.0.0.1:{r.port} max_fails=1 fail_timeout=2s;" for r in self.replicas
        )
        conf = folder / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                # As root, nginx's workers would switch to a user who cannot enter tmp folders.
                user="user root;" if os.geteuid() == 0 else "",
                dir=folder,
                servers=servers,
                port=self.port,
            )
        )
        log = open(folder / "stdout.log", "a")  # noqa: SIM115 - kept open for the process
        self.nginx = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(folder), "-e", str(folder / "nginx-error.log")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/api/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise AssertionError((folder / "nginx-error.log").read_text())

    def rows(self, prefix: str) -> dict[str, int]:
        """request_id -> number of usage rows, for the request ids starting with prefix."""
        import psycopg

        with psycopg.connect(self.database_url.replace("postgres://", "postgresql://")) as conn:
            return dict(
                conn.execute(
                    "SELECT request_id, count(*) FROM gateway_requests"
                    " WHERE request_id LIKE %s GROUP BY request_id",
                    (prefix + "%",),
                ).fetchall()
            )

    def hold_usage_table(self, seconds: float) -> None:
        """A slow database: inserts into gateway_requests wait behind a lock for a while,
        so the records of answered requests are only in the replicas' memory and journals."""
        import psycopg

        with psycopg.connect(self.database_url.replace("postgres://", "postgresql://")) as conn:
            conn.execute("LOCK TABLE gateway_requests IN SHARE MODE")
            time.sleep(seconds)

    def spent(self, org_slug: str) -> tuple[int, float]:
        """An org's usage rows: how many, and their cost."""
        import psycopg

        with psycopg.connect(self.database_url.replace("postgres://", "postgresql://")) as conn:
            count, total = conn.execute(
                "SELECT count(*), coalesce(sum(r.cost), 0) FROM gateway_requests r "
                "JOIN orgs_organization o ON o.id = r.org_id WHERE o.slug = %s",
                (org_slug,),
            ).fetchone()
        return count, total

    def close(self) -> None:
        if self.nginx is not None:
            self.nginx.terminate()
            try:
                self.nginx.wait(10)
            except subprocess.TimeoutExpired:
                self.nginx.kill()
        for replica in self.replicas:
            replica.stop()
        self.redis.stop()
        self.pg.close()
