"""Bonito in separate processes, on a database of its own, for tests that need real
worker processes or a database that goes away."""

import asyncio
import contextlib
import fcntl
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
# The HTTP protocol `make serve` and the container run uvicorn with (a deadline on heads).
HEAD_DEADLINE = "gateway.dataplane.http_protocol:HeadDeadlineProtocol"
TEMPLATES = Path(tempfile.gettempdir()) / "bonito-test-templates"


# What a template is migrated with, and the base of every server's environment (nothing a
# migration writes depends on the other settings).
BUILD_ENV = {
    "SECRET_KEY": "external-test-secret-key-0123456789abcdefghijklmnop",
    "DEBUG": "0",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
}


def _migrations_hash() -> str:
    """Names a migrated template (with the UTC day: the migration makes the partitions
    around today): every migration file, the code the data migrations call (the catalog
    from LiteLLM's bundled price map, the usage partitions), LiteLLM's version and the
    partition settings."""
    from importlib.metadata import version

    digest = hashlib.sha256(version("litellm").encode())
    for name in ("USAGE_PARTITION_INTERVAL", "USAGE_RETENTION_DAYS"):
        digest.update(f"{name}={os.environ.get(name, '')}".encode())
    code = [ROOT / "gateway/catalog.py", ROOT / "billing/partitions.py"]
    for path in sorted(ROOT.glob("*/migrations/*.py")) + code:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def sqlite_template() -> Path:
    """A SQLite file as `manage.py migrate` leaves it, migrated once per run (and day)."""
    with _templates_lock():
        day = _today()
        template = TEMPLATES / f"{day}-{_migrations_hash()}.sqlite3"
        for old in TEMPLATES.glob("*.sqlite3"):
            if _stale(old.name.split("-", 1)[0], day):
                old.unlink(missing_ok=True)
        if not template.exists():
            building = template.with_suffix(f".{os.getpid()}.building")
            _migrate(f"sqlite:///{building}")
            with contextlib.closing(sqlite3.connect(building)) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            building.rename(template)
    return template


def pg_template(server_url: str) -> str:
    """The name of a database on ``server_url``'s server as `manage.py migrate` leaves it,
    migrated once per run (and day), for ``CREATE DATABASE … TEMPLATE``."""
    import psycopg

    day = _today()
    template = f"bonito_tmpl_{day}_{_migrations_hash()}"
    with _templates_lock(), psycopg.connect(server_url, autocommit=True) as conn:
        names = {
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'bonito_tmpl_%'"
            )
        }
        for stale in names:
            if _stale(stale.removeprefix("bonito_tmpl_").split("_", 1)[0], day):
                conn.execute(f'DROP DATABASE IF EXISTS "{stale}" WITH (FORCE)')
        if template not in names:
            building = f"{template}_building"
            conn.execute(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{building}"')
            _migrate(f"{server_url.rsplit('/', 1)[0]}/{building}")
            retry_while_in_use(conn, f'ALTER DATABASE "{building}" RENAME TO "{template}"')
    return template


def _today() -> str:
    return time.strftime("%Y%m%d", time.gmtime())


def _stale(day: str, today: str) -> bool:
    """Templates are kept through the next day, so a run that crosses midnight UTC never
    loses the one its other processes are copying; older ones (or unnamed by day) go."""
    if not (len(day) == 8 and day.isdigit()):
        return True
    yesterday = time.strftime("%Y%m%d", time.gmtime(time.time() - 86400))
    return day < min(yesterday, today)


def retry_while_in_use(conn, sql: str) -> None:
    """A template's last sessions (the migrate process) end a moment after it exits."""
    import psycopg

    deadline = time.time() + 10
    while True:
        try:
            conn.execute(sql)
            return
        except psycopg.errors.ObjectInUse:
            if time.time() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def _templates_lock():
    """One builder at a time across the test run's worker processes."""
    TEMPLATES.mkdir(exist_ok=True)
    with open(TEMPLATES / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _migrate(database_url: str) -> None:
    """`manage.py migrate` of ``database_url`` with BUILD_ENV, the template builders' one run."""
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env={**os.environ, **BUILD_ENV, "DATABASE_URL": database_url, "REDIS_URL": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


class TcpProxy:
    """A TCP forwarder on loopback that a test can cut and restore (a dead database)."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.loop = asyncio.new_event_loop()
        self.server = None
        self.port = None
        self.writers: set = set()
        threading.Thread(target=self.loop.run_forever, daemon=True, name="tcp-proxy").start()

    async def _pipe(self, reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _start(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port or 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _stop(self):
        self.server.close()
        for w in list(self.writers):
            w.close()
        self.writers.clear()

    def start(self):
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)
        return self

    def stop(self):
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(5)


class ExternalBonito:
    """Its own database (SQLite file, or a fresh PostgreSQL database behind a TcpProxy)."""

    def __init__(self, tmp: Path, redis_url: str = "", env: dict | None = None):
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        self.pg_url = (
            os.environ.get("DATABASE_URL", "")
            if os.environ.get("DATABASE_URL", "").startswith("postgres")
            else ""
        )
        self.env = {
            **os.environ,
            **BUILD_ENV,  # SECRET_KEY, DEBUG off, LiteLLM's local price map
            "SECURE_SSL_REDIRECT": "0",
            "GATEWAY_SPOOL_DIR": str(tmp / "spool"),
            "GATEWAY_SNAPSHOT_POLL_S": "0.3",
            "REDIS_URL": redis_url,
            # the fake upstreams listen on loopback, refused by default
            "PROVIDER_ALLOWED_NETWORKS": "127.0.0.1/32",
            **(env or {}),
        }
        if self.pg_url:
            import psycopg

            self.db_name = "bonito_ext_" + uuid.uuid4().hex[:10]
            base = self.pg_url.rsplit("/", 1)[0]
            with psycopg.connect(self.pg_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.db_name}"')
            host_port = base.split("@")[-1]
            host, port = host_port.split(":") if ":" in host_port else (host_port, "5432")
            self.proxy = TcpProxy(host, int(port)).start()
            creds = base.split("//", 1)[1].rsplit("@", 1)[0]
            self.direct_url = f"{base}/{self.db_name}"
            self.env["DATABASE_URL"] = (
                f"postgres://{creds}@127.0.0.1:{self.proxy.port}/{self.db_name}"
            )
        else:
            self.db_dir = tmp / "db"
            self.db_dir.mkdir()
            self.env["DATABASE_URL"] = f"sqlite:///{self.db_dir / 'bonito.sqlite3'}"

    def manage(self, *args, input_env=None) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**self.env, **(input_env or {})},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def migrate(self) -> None:
        """The database as `manage.py migrate` leaves it (schema and the migrations' rows),
        copied from a template that this test run migrated once: a migrate from scratch
        costs a server's test ~8 s of CPU, a copy a fraction of a second."""
        if self.pg_url:
            import psycopg

            template = pg_template(self.pg_url)
            with psycopg.connect(self.pg_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{self.db_name}"')
                retry_while_in_use(conn, f'CREATE DATABASE "{self.db_name}" TEMPLATE "{template}"')
            return
        with (
            contextlib.closing(sqlite3.connect(sqlite_template())) as src,
            contextlib.closing(sqlite3.connect(self.db_dir / "bonito.sqlite3")) as dst,
        ):
            src.backup(dst)

    def serve(self, port: int, workers: int = 1) -> str:
        """uvicorn as `make serve` runs it (lifespan on, its HTTP protocol); workers > 1: a
        supervisor process and that many worker processes."""
        log = open(self.tmp / f"server-{port}.log", "w")  # noqa: SIM115 - kept open for the process
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bonito.asgi:application",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--lifespan",
                "on",
                "--http",
                HEAD_DEADLINE,
                *(["--workers", str(workers)] if workers > 1 else []),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError((self.tmp / f"server-{port}.log").read_text())

    def db_down(self):
        if self.pg_url:
            self.proxy.stop()
        else:  # the whole folder (database, WAL and shared memory files) goes away
            self.db_dir.rename(self.tmp / "db-away")

    def db_up(self):
        if self.pg_url:
            self.proxy.start()
        else:
            (self.tmp / "db-away").rename(self.db_dir)

    def query(self, sql: str) -> list[tuple]:
        """Rows of a read-only query on the server's database, read directly: a `manage.py
        shell` to look costs a Django start (~2.5 s of CPU), and tests poll."""
        if self.pg_url:
            import psycopg

            with psycopg.connect(self.direct_url) as conn:
                return conn.execute(sql).fetchall()
        with contextlib.closing(sqlite3.connect(self.db_dir / "bonito.sqlite3")) as conn:
            return conn.execute(sql).fetchall()

    def count_usage(self) -> int:
        return self.query("SELECT count(*) FROM gateway_requests")[0][0]

    def close(self):
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.pg_url:
            import psycopg

            self.proxy.stop()
            with psycopg.connect(self.pg_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        shutil.rmtree(self.tmp / "db-away", ignore_errors=True)
