"""The agent's settings: environment variables only, checked once at start."""

import contextlib
import errno
import ipaddress
import logging
import math
import os
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from core import keys, redisurl
from gateway.dataplane.netpolicy import parse_networks

GIB = 1024**3
DEFAULT_STATE_DIR = "/var/lib/bonito-agent"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The path ends of URLs that are Bonito's, but not the control plane's base URL: the agent
# calls <BONITO_CONTROL_PLANE>/api/agent/*, so with one of these it would ask .../v1/api/agent.
NOT_THE_BASE = {
    "/api/agent": "the agent API itself",
    "/api": "the REST API",
    "/v1": "the gateway's /v1 (the SDK's base URL)",
}


class SettingsError(ValueError):
    """A setting is missing or wrong: the agent does not start, and says which and why."""


def _number(env, name: str, default, low, parse, what: str):
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {what}, not {raw!r}") from None
    if not value >= low:  # also refuses NaN
        raise SettingsError(f"{name} must be at least {low}, not {raw}")
    if not math.isfinite(value):  # an infinite interval or timeout means never, or for ever
        raise SettingsError(f"{name} must be a finite {what.removeprefix('a ')}, not {raw}")
    return value


def _int(env, name: str, default: int, low: int = 1) -> int:
    return _number(env, name, default, low, int, "a whole number")


def _float(env, name: str, default: float, low: float = 0.01) -> float:
    return _number(env, name, default, low, float, "a number of seconds")


def _bool(env, name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, not {raw!r}")


@dataclass(frozen=True)
class AgentSettings:
    control_plane: str
    token: str  # from BONITO_ORG_TOKEN, or read from BONITO_ORG_TOKEN_FILE
    token_file: Path | None
    state_dir: Path
    host: str = "0.0.0.0"  # noqa: S104 - a container's service port: every interface
    port: int = 8000
    workers: int = 1
    sync_interval_s: float | None = None  # None: the control plane's suggestion (poll_s)
    ingest_interval_s: float | None = None
    heartbeat_interval_s: float | None = None
    spool_max_bytes: int = GIB
    redis_url: str = ""
    ca_bundle: str | None = None
    credentials_file: Path | None = None
    aws_secret_arn: str = ""
    azure_vault_url: str = ""
    azure_secret_name: str = "bonito-credentials"  # noqa: S105 - a name, not a secret
    gcp_secret_name: str = ""
    provider_networks: tuple = ()
    ambient_credentials: bool = True
    max_body_bytes: int = 10 * 1024 * 1024
    timeout_s: float = 30.0
    spend_lease_s: float = 60.0
    log_level: str = "INFO"
    env: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def journal_dir(self) -> Path:
        return self.state_dir / "journal"

    @property
    def spool_dir(self) -> Path:
        return self.state_dir / "spool"

    @property
    def dead_letter_dir(self) -> Path:
        return self.state_dir / "dead"

    @property
    def verify(self):
        """What httpx verifies the control plane's certificate with."""
        return self.ca_bundle or True


def read_token_file(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise SettingsError(f"BONITO_ORG_TOKEN_FILE {path}: {exc.strerror or exc}") from None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def log_level(env) -> str:
    """BONITO_LOG_LEVEL, checked: logging would raise a ValueError (a traceback) on a wrong one."""
    raw = env.get("BONITO_LOG_LEVEL", "").strip()
    level = raw.upper() or "INFO"
    level = {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(level, level)
    if level not in LOG_LEVELS:
        raise SettingsError(
            f"BONITO_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {raw[:40]!r}"
        )
    return level


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


QUIET_LIBRARIES = ("httpx", "httpcore", "azure", "botocore", "boto3", "urllib3", "google")


def configure_logging(env) -> None:
    """The agent's log format and BONITO_LOG_LEVEL, in this process: the main one, and each
    worker uvicorn starts as a new process (the main one's set-up never reaches those)."""
    level = log_level(env)
    logging.basicConfig(level=level, format=LOG_FORMAT)
    if level != "DEBUG":
        # Client libraries log every call at INFO (httpx: each config pull and heartbeat;
        # the cloud SDKs: each secret read): the agent's own lines say what matters.
        for name in QUIET_LIBRARIES:
            logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    usage = logging.getLogger("bonito.gateway.usage")
    if not any(isinstance(f, SpoolLinesFilter) for f in usage.filters):
        usage.addFilter(SpoolLinesFilter())


class SpoolLinesFilter(logging.Filter):
    """The usage sink's lines about the control plane being away, which the agent's usage
    writer tells instead, once per outage (control.IngestWriter): "usage writer failed
    (Unavailable); spooling …" at each outage's start, and "replayed N spooled usage
    records from FILE" for each spooled file sent after it (hundreds after an hour away).
    Anything else the sink says (a writer that raised something unexpected, unreadable
    lines skipped, a full spool, a dead process's journal) stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else ""
        args = record.args if isinstance(record.args, tuple) else ()
        outage_began = msg.startswith("usage writer failed") and args[:1] == ("Unavailable",)
        spool_sent = msg.startswith("replayed %d spooled usage records") and args[2:3] == ("",)
        return not (outage_began or spool_sent)


def _control_plane(env) -> str:
    url = env.get("BONITO_CONTROL_PLANE", "").strip().rstrip("/")
    if not url:
        raise SettingsError(
            "BONITO_CONTROL_PLANE is required: the control plane's URL, e.g. https://bonito.example.com"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not 0-65535
    except ValueError as exc:  # an unclosed IPv6 bracket, a port out of range
        raise SettingsError(
            f"BONITO_CONTROL_PLANE must be an http(s) URL, not {url!r} ({exc})"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"BONITO_CONTROL_PLANE must be an http(s) URL, not {url!r}")
    path = parts.path.rstrip("/")
    for end, what in NOT_THE_BASE.items():
        if path.lower().endswith(end):
            base = urlunsplit(parts._replace(path=path[: -len(end)], query="", fragment=""))
            raise SettingsError(
                f"BONITO_CONTROL_PLANE {url} ends in {end}, {what}, not the control plane's"
                f" URL (the agent calls /api/agent/* under it): use {base}"
            )
    if parts.scheme == "http" and not _loopback(parts.hostname):
        logging.getLogger("bonito.agent").warning(
            "BONITO_CONTROL_PLANE is plain http to %s: the org token and the key-hash secret "
            "cross the network unencrypted; use https",
            parts.hostname,
        )
    return url


def token_problem(token: str) -> str | None:
    """Why a configured org token cannot be one, without ever quoting it; None if it can."""
    if keys.well_formed(token, ("bt-",)):
        return None
    if not token.startswith("bt-"):
        if token.startswith(("bn-", "rt-")):
            return (
                "the org token must be a bt- token, not an API key (bn-/rt-): the org token is"
                " in Settings → Deployment mode"
            )
        return "the org token must be a bt- token (Settings → Deployment mode)"
    length = len("bt-") + keys.BODY_LEN + keys.CHECK_LEN
    if len(token) != length:
        return (
            f"the org token is malformed: {len(token)} characters where a bt- token has"
            f" {length} (cut short, or something copied with it); copy it again from"
            " Settings → Deployment mode"
        )
    if any(c not in keys.ALPHABET for c in token[3:]):
        return (
            "the org token is malformed: a bt- token holds only letters and digits after"
            " bt- (a quote or a space copied with it?); copy it again from Settings →"
            " Deployment mode"
        )
    return (
        "the org token is malformed (wrong checksum: mistyped or cut short); copy it again"
        " from Settings → Deployment mode"
    )


def prepare_state_dir(path: Path) -> None:
    """Create BONITO_STATE_DIR (0700) if need be and check that the agent can write in it:
    a SettingsError naming it otherwise, before anything is served."""
    default = " (the default)" if str(path) == DEFAULT_STATE_DIR else ""
    hint = (
        f"; set BONITO_STATE_DIR to a folder this user (uid {os.getuid()}) can create and"
        " write, on a persistent volume"
    )
    if path.exists() and not path.is_dir():
        raise SettingsError(f"BONITO_STATE_DIR {path}{default} is not a folder{hint}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(
            f"BONITO_STATE_DIR {path}{default} cannot be created: {exc.strerror or exc}{hint}"
        ) from None
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    probe = path / f".write-check.{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        probe.unlink()
    except OSError as exc:
        raise SettingsError(
            f"BONITO_STATE_DIR {path}{default} is not writable: {exc.strerror or exc}{hint}"
        ) from None
    for sub in ("journal", "spool", "dead"):  # left by an earlier run as another user?
        folder = path / sub
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            raise SettingsError(
                f"BONITO_STATE_DIR {path}{default}: its {sub}/ folder is not writable{hint}"
            )
        if folder.exists() and not folder.is_dir():
            raise SettingsError(
                f"BONITO_STATE_DIR {path}{default}: its {sub} is not a folder; move it away"
            )
    # The agent's id, kept in the folder (every worker reads it, or makes it once).
    from .state import agent_id

    try:
        agent_id(path)
    except OSError as exc:
        where = exc.filename2 or exc.filename or path
        raise SettingsError(
            f"BONITO_STATE_DIR {path}{default}: {where} cannot be read or written:"
            f" {exc.strerror or exc}; remove it (the agent makes it again)"
        ) from None


def load(env=None) -> AgentSettings:
    """The settings from the environment; raises SettingsError naming what is wrong."""
    env = dict(os.environ if env is None else env)
    level = log_level(env)
    url = _control_plane(env)
    token_file = Path(env["BONITO_ORG_TOKEN_FILE"]) if env.get("BONITO_ORG_TOKEN_FILE") else None
    token = env.get("BONITO_ORG_TOKEN", "").strip()
    if token_file is not None:
        token = read_token_file(token_file)
    if not token:
        raise SettingsError(
            "BONITO_ORG_TOKEN (or BONITO_ORG_TOKEN_FILE) is required: the org's bt- token "
            "from Settings → Deployment mode"
        )
    problem = token_problem(token)
    if problem is not None:
        source = f"BONITO_ORG_TOKEN_FILE {token_file}" if token_file else "BONITO_ORG_TOKEN"
        raise SettingsError(f"{source}: {problem}")
    ca = env.get("BONITO_CA_BUNDLE", "").strip() or None
    if ca is not None and not Path(ca).is_file():
        raise SettingsError(f"BONITO_CA_BUNDLE {ca} is not a readable file")
    if ca is not None:
        try:
            ssl.create_default_context(cafile=ca)  # as httpx loads it for each call
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise SettingsError(
                f"BONITO_CA_BUNDLE {ca} holds no PEM CA certificate ({type(exc).__name__}:"
                f" {exc}); it should be the PEM file of the CA that signed the control"
                " plane's certificate"
            ) from None
    _check_ssl_cert_file(env)
    creds_file = env.get("BONITO_CREDENTIALS_FILE", "").strip()
    if creds_file and not Path(creds_file).is_file():
        raise SettingsError(f"BONITO_CREDENTIALS_FILE {creds_file} is not a readable file")
    try:
        networks = parse_networks(env.get("BONITO_PROVIDER_ALLOWED_NETWORKS", "").split(","))
    except ValueError as exc:
        raise SettingsError(f"BONITO_PROVIDER_ALLOWED_NETWORKS: {exc}") from None
    host = env.get("BONITO_AGENT_HOST", "").strip() or "0.0.0.0"  # noqa: S104
    port = _int(env, "BONITO_AGENT_PORT", 8000)
    if port > 65535:
        raise SettingsError(f"BONITO_AGENT_PORT must be at most 65535, not {port}")
    redis_url = env.get("BONITO_REDIS_URL", "").strip()
    if redis_url:
        try:
            redisurl.parse(redis_url)
        except ValueError as exc:  # its words name the form, never the URL (a password)
            raise SettingsError(f"BONITO_REDIS_URL: {exc}") from None
    # Read by the HTTP protocol in each worker (gateway/dataplane/http_protocol.py), which
    # falls back to its default on a wrong value: checked here so that one stops the start.
    _float(env, "BONITO_HEADERS_TIMEOUT_S", 30.0)
    _int(env, "BONITO_MAX_HEADER_BYTES", 65536)
    return AgentSettings(
        control_plane=url,
        token=token,
        token_file=token_file,
        state_dir=Path(env.get("BONITO_STATE_DIR", "").strip() or DEFAULT_STATE_DIR),
        host=host,
        port=port,
        workers=_int(env, "BONITO_AGENT_WORKERS", 1),
        sync_interval_s=_float(env, "BONITO_SYNC_INTERVAL_S", 0) or None,
        ingest_interval_s=_float(env, "BONITO_INGEST_INTERVAL_S", 0) or None,
        heartbeat_interval_s=_float(env, "BONITO_HEARTBEAT_INTERVAL_S", 0) or None,
        spool_max_bytes=_int(env, "BONITO_SPOOL_MAX_BYTES", GIB, low=1024 * 1024),
        redis_url=redis_url,
        ca_bundle=ca,
        credentials_file=Path(creds_file) if creds_file else None,
        aws_secret_arn=env.get("AWS_SECRETS_MANAGER_ARN", "").strip(),
        azure_vault_url=env.get("AZURE_KEY_VAULT_URL", "").strip(),
        azure_secret_name=env.get("AZURE_KEY_VAULT_SECRET", "").strip() or "bonito-credentials",
        gcp_secret_name=env.get("GCP_SECRET_NAME", "").strip(),
        provider_networks=networks,
        ambient_credentials=_bool(env, "BONITO_PROVIDER_AMBIENT_CREDENTIALS", True),
        max_body_bytes=_int(env, "BONITO_MAX_BODY_BYTES", 10 * 1024 * 1024),
        timeout_s=_float(env, "BONITO_CONTROL_PLANE_TIMEOUT_S", 30.0),
        # At least 4 heartbeats of the limiter's 2 s Redis bound (+ margin) per lease.
        spend_lease_s=_float(env, "BONITO_SPEND_LEASE_S", 60.0, low=10.0),
        log_level=level,
        env=env,
    )


def _check_ssl_cert_file(env) -> None:
    """SSL_CERT_FILE is read by httpx for every call to the control plane (and by the provider
    clients): one naming no PEM certificate failed every config pull with a traceback."""
    path = env.get("SSL_CERT_FILE", "")
    if not path:
        return
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise SettingsError(
            f"SSL_CERT_FILE {path} is not a readable PEM CA certificate"
            f" ({getattr(exc, 'strerror', None) or exc}); unset it, or use BONITO_CA_BUNDLE"
            " for the CA that signed the control plane's certificate"
        ) from None


def check_listen(host: str, port: int) -> None:
    """The address the agent listens on, tried before uvicorn does (whose own error, exit 3,
    names no setting): a port in use or a host that is no address here stops the start."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        raise SettingsError(
            f"BONITO_AGENT_HOST {host} is not an address of this host"
            f" ({getattr(exc, 'strerror', None) or exc}); use 0.0.0.0 (every address) or one of"
            " its own"
        ) from None
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            shown = (
                f"[{address[0]}]:{port}" if family == socket.AF_INET6 else f"{address[0]}:{port}"
            )
            what = (
                f"BONITO_AGENT_PORT {port} is in use on {host}: another process listens on {shown}"
                if exc.errno == errno.EADDRINUSE
                else f"BONITO_AGENT_HOST {host} / BONITO_AGENT_PORT {port} cannot be listened on"
                f" ({exc.strerror})"
            )
            raise SettingsError(
                f"{what}; set BONITO_AGENT_PORT (or BONITO_AGENT_HOST) to a free one"
            ) from None
