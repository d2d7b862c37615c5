"""Config sync and heartbeat: the agent's one background thread besides the usage sink's.

Pulls ``GET /api/agent/config?since=<version>`` (If-None-Match: an unchanged config costs
a 304), applies a delta or a full document, sets the org's billing facts, merges the
credentials read inside the VPC and publishes the snapshot (one reference swap: requests in
flight keep the snapshot they started with, none is dropped). The last good document is
cached on disk (0600, no credentials), so a restart while the control plane is unreachable
serves the last-known config.
"""

import base64
import dataclasses
import logging
import socket
import threading
import time
from datetime import UTC, datetime

import httpx
import orjson

from gateway.dataplane.snapshot import (
    Block,
    Snapshot,
    apply_delta,
    delta_from_dict,
    snapshot_from_dict,
    snapshot_to_dict,
)

from . import VERSION
from .control import ControlPlane, Repeats, clean
from .state import fingerprint, write_private

log = logging.getLogger("bonito.agent")

DEFAULT_POLL_S, DEFAULT_HEARTBEAT_S, DEFAULT_INGEST_S = 30.0, 60.0, 10.0
CREDENTIALS_REREAD_MIN_S = 10.0  # a provider answering 401 in a loop re-reads at most this often
SUGGESTED = ("poll_s", "heartbeat_s", "ingest_batch_s")
# The control plane's suggested intervals are used within these bounds only: a string, a
# negative number or a huge one (a misconfigured or hostile control plane) would kill the
# sync thread, pull in a tight loop, or never pull again.
SUGGESTED_MIN_S, SUGGESTED_MAX_S = 1.0, 3600.0
# How many of the org's tokens (fingerprints) the config cache remembers: the one it was
# pulled with and those a rotation handed over since.
CACHE_TOKENS_KEPT = 20


def _suggestions(doc: dict) -> dict:
    """The intervals a config answer suggests, each a number clamped to sane bounds."""
    out = {}
    for name in SUGGESTED:
        value = doc.get(name)
        if type(value) not in (int, float) or not value > 0:  # also NaN, bools, strings
            continue
        out[name] = min(max(float(value), SUGGESTED_MIN_S), SUGGESTED_MAX_S)
    return out


class ConfigSync:
    def __init__(self, settings, control: ControlPlane, credentials, gateway, stats):
        self.settings = settings
        self.control = control
        self.credentials = credentials
        self.gateway = gateway
        self.stats = stats
        self.cache_path = settings.state_dir / "config.json"
        self.base: Snapshot | None = None  # as pulled: no credentials
        self.org: dict | None = None
        self.facts: dict = {}
        self.hash_secret = b""
        self.etag: str | None = None
        self.suggested: dict = {}
        self.loaded_from = ""  # "control plane" | "disk cache"
        # Fingerprints of the org tokens the config was pulled with (this org's): the disk
        # cache serves only an agent whose token is one of them.
        self.token_fingerprints: list[str] = []
        self.last_sync_ok: float | None = None
        self.problem: str | None = None  # why the last config pull did not succeed (/ready)
        self.started_at = time.time()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._creds_stale = threading.Event()
        self._last_creds_read = 0.0
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = None
        self._next_pull = 0.0
        self._next_heartbeat = 0.0
        self._want_full = False
        self._retries = 0
        # The sync step's expected failures: said when they start or change, then once a
        # minute while they last, and once when a step passes again (not once a second).
        self._step_repeats = Repeats("agent sync")
        self._pull_repeats = Repeats("config pull: control plane")
        self._beat_repeats = Repeats("heartbeat: control plane")

    # -- intervals: the environment's, else the control plane's suggestion ---------------
    def _interval(self, own: float | None, suggested: str, default: float) -> float:
        return own or self.suggested.get(suggested) or default

    @property
    def poll_s(self) -> float:
        return self._interval(self.settings.sync_interval_s, "poll_s", DEFAULT_POLL_S)

    @property
    def heartbeat_s(self) -> float:
        return self._interval(
            self.settings.heartbeat_interval_s, "heartbeat_s", DEFAULT_HEARTBEAT_S
        )

    @property
    def ingest_s(self) -> float:
        return self._interval(self.settings.ingest_interval_s, "ingest_batch_s", DEFAULT_INGEST_S)

    @property
    def ready(self) -> bool:
        return self.gateway.snapshots.current is not None

    # -- the disk cache --------------------------------------------------------------------
    def load_cache(self) -> bool:
        try:
            doc = orjson.loads(self.cache_path.read_bytes())
            if not isinstance(doc, dict):
                raise TypeError("not a JSON object")
            bound = doc.get("token_fingerprints")
            token = self.control.token
            if not isinstance(bound, list) or not {
                fingerprint(token.configured),
                fingerprint(token.current),
            } & set(bound):
                # Another org's config (the operator changed the token on this state
                # folder), or a cache from before caches were bound to their token: none of
                # its keys is served until the control plane answers for this token.
                self.problem = (
                    "the config cache was pulled with another org token"
                    if bound is not None
                    else "the config cache names no org token (written by an older agent)"
                ) + "; waiting for the control plane"
                log.error("%s (%s not used)", self.problem, self.cache_path)
                return False
            self._take_full(doc)
        except FileNotFoundError:
            return False
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.base, self.org, self.facts, self.hash_secret = None, None, {}, b""
            log.error(
                "config cache %s unreadable (%s); waiting for the control plane",
                self.cache_path,
                type(exc).__name__,
            )
            return False
        self.token_fingerprints = [str(f) for f in bound][-CACHE_TOKENS_KEPT:]
        self.etag = doc.get("etag")
        self.loaded_from = "disk cache"
        self.publish()
        log.warning("serving config version %s from the disk cache", self.base.version)
        return True

    def _save_cache(self) -> None:
        doc = {
            "schema": 1,
            "org": self.org,
            "version": self.base.version,
            "full": True,
            "snapshot": snapshot_to_dict(self.base),  # credentials left out
            "facts": self.facts,
            "hash_secret": base64.b64encode(self.hash_secret).decode(),
            **{k: v for k, v in self.suggested.items()},
            "etag": self.etag,
            "token_fingerprints": self.token_fingerprints,
        }
        try:
            write_private(self.cache_path, orjson.dumps(doc))
        except OSError as exc:
            log.error("config cache %s not written: %s", self.cache_path, exc)

    # -- applying documents ----------------------------------------------------------------
    def _take_full(self, doc: dict) -> None:
        hash_secret = base64.b64decode(doc["hash_secret"])
        base = snapshot_from_dict(doc["snapshot"], hash_secret)
        org, facts = doc["org"], doc.get("facts") or {}
        self._serving(base, org, facts)  # a document it cannot serve changes nothing
        self.hash_secret, self.base, self.org, self.facts = hash_secret, base, org, facts
        self.suggested = _suggestions(doc)

    def take(self, doc: dict, used_token: str | None = None) -> None:
        """Apply one config answer (full or delta) and publish it; ``used_token`` is the org
        token the answer was pulled with (it and a rotated one are bound to the cache)."""
        rotate = (doc.get("token") or {}).get("rotate_to")
        if rotate:
            self.control.token.rotate(rotate)
        org_before = (self.org or {}).get("id")
        if doc.get("full"):
            self._take_full(doc)
        else:
            if self.base is None:
                raise ValueError("a delta arrived with no config to apply it to")
            if (doc.get("org") or {}).get("id") != (self.org or {}).get("id"):
                # The token is another org's now (the operator changed it): a delta from
                # that org cannot apply to this org's config.
                raise ValueError("a delta for another organization than the cached config")
            base = apply_delta(self.base, delta_from_dict(doc["delta"]), time.time())
            hash_secret = base64.b64decode(doc.get("hash_secret") or b"") or self.hash_secret
            base = dataclasses.replace(base, hash_secret=hash_secret)
            facts, org = doc.get("facts") or {}, doc.get("org") or self.org
            self._serving(base, org, facts)
            self.base, self.hash_secret, self.facts, self.org = base, hash_secret, facts, org
            self.suggested.update(_suggestions(doc))
        if (self.org or {}).get("id") != org_before:
            self.token_fingerprints = []  # another org's config: its tokens only
        for token in (used_token, self.control.token.current):
            if token:
                mark = fingerprint(token)
                kept = [f for f in self.token_fingerprints if f != mark]
                self.token_fingerprints = [*kept, mark][-CACHE_TOKENS_KEPT:]
        self.loaded_from = "control plane"
        self.publish()

    def _serving(self, base: Snapshot, org: dict, facts: dict) -> Snapshot:
        """The pulled snapshot with the org's facts and the VPC's credentials. Raises
        TypeError/ValueError for a document whose org or facts are not what they must be
        (a damaged cache, a control plane of another version)."""
        if not isinstance(org, dict) or type(org.get("id")) is not int:
            raise TypeError("the config's org is not an object with a numeric id")
        if not isinstance(facts, dict) or not isinstance(facts.get("blocked") or {}, dict):
            raise TypeError("the config's facts are not an object")
        orgs = {}
        self.credentials.withheld.clear()
        for org_id, info in base.orgs.items():
            deployments = {
                model: tuple(self._with_credentials(d) for d in deps)
                for model, deps in info.deployments.items()
            }
            changes = {"deployments": deployments}
            if org_id == org["id"] and facts:
                changes["spent_this_month"] = float(facts.get("spent_this_month") or 0.0)
                changes["spent_month"] = str(facts.get("month") or "")
                changes["blocked"] = {
                    scope: Block(**b) for scope, b in (facts.get("blocked") or {}).items()
                }
            orgs[org_id] = dataclasses.replace(info, **changes)
        return dataclasses.replace(base, orgs=orgs)

    def _with_credentials(self, d):
        creds, withheld = self.credentials.verdict(
            d.provider, d.kind, d.api_base, d.region, d.settings
        )
        return dataclasses.replace(d, credentials=creds, withheld=withheld)

    def publish(self) -> None:
        """The pulled snapshot, served: one reference swap."""
        snapshot = self._serving(self.base, self.org, self.facts)
        self.gateway.snapshots.publish(snapshot)
        orgs = snapshot.orgs
        self.gateway.sink.min_batch_interval = self.ingest_s
        kinds = {d.kind for o in orgs.values() for deps in o.deployments.values() for d in deps}
        try:
            # litellm's import, in a thread: LiteLLM-path requests wait for it, nothing else
            self.gateway.upstreams.prewarm(kinds, background=True)
        except Exception:
            log.exception("prewarming the provider clients failed")

    # -- the loop ------------------------------------------------------------------------------
    def pull(self) -> str:
        """One config pull: "updated", "unchanged", "refused", "unreachable" or "retry"
        (the answer did not apply: the next pull, at once, asks for the full config)."""
        if self._client is None:
            self._client = self.control.client()
        params, headers = {}, {}
        if self.base is not None and not self._want_full:
            params["since"] = str(self.base.version)
            if self.etag:
                headers["If-None-Match"] = self.etag
        try:
            response = self.control.request(
                self._client, "GET", "/config", params=params, headers=headers
            )
        except httpx.HTTPError as exc:
            self._pull_failed(
                f"failed: control plane unreachable ({self.control.unreachable(exc)})"
            )
            return "unreachable"
        if response.status_code == 304:
            self.last_sync_ok, self.problem = time.time(), None
            self._pull_repeats.passed()
            return "unchanged"
        if response.status_code != 200:
            problem = self.control.problem(response)
            if response.status_code == 404 and self.control.not_bonito() not in problem:
                problem += f" ({self.control.not_bonito()})"
            self._pull_failed(f"answered {problem}")
            return "refused" if response.status_code in (401, 403) else "unreachable"
        try:
            document = response.json()
        except ValueError:
            kind = response.headers.get("content-type", "").split(";")[0].strip() or "no type"
            self._pull_failed(
                f"answered 200 with a body ({clean(kind, 60)}) that is not JSON:"
                f" {self.control.not_bonito()}",
                error=True,
            )
            self.etag, self._want_full = None, True
            return "retry"
        try:
            if not isinstance(document, dict):
                raise TypeError(
                    f"the config answer is a JSON {type(document).__name__}, not an object"
                )
            used = response.request.headers.get("authorization", "").removeprefix("Bearer ")
            self.take(document, used_token=used)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # A delta that does not fit (a gap), or a document this agent cannot read: ask
            # for the whole config next time.
            self.problem = clean(f"config document not applied ({type(exc).__name__}: {exc})")
            log.error("%s; asking for a full one", self.problem)
            self.etag, self._want_full = None, True
            return "retry"
        self._want_full = False
        self.etag = response.headers.get("etag")
        self._save_cache()
        self.last_sync_ok, self.problem = time.time(), None
        self._pull_repeats.passed()
        return "updated"

    def _pull_failed(self, problem: str, error: bool = False) -> None:
        self.problem = f"config pull {problem}"
        version = self.base.version if self.base is not None else None
        self._pull_repeats.failed(
            log.error if error else log.warning,
            f"{self.problem}; keeping config version {version}",
        )

    def credentials_stale(self) -> None:
        """A provider answered 401: read the credential sources again (off the request path)."""
        self._creds_stale.set()
        self._wake.set()

    def reload_credentials(self) -> None:
        self._last_creds_read = time.monotonic()
        try:
            changed = self.credentials.load()
        except Exception:
            log.exception("reading the credential sources failed")
            return
        if changed and self.base is not None:
            log.warning(
                "provider credentials changed; published with config version %s", self.base.version
            )
            self.publish()

    def heartbeat(self) -> None:
        if self._client is None:
            self._client = self.control.client()
        body = self.stats.heartbeat_body(self)
        try:
            response = self.control.request(self._client, "POST", "/heartbeat", json=body)
        except httpx.HTTPError as exc:
            self._beat_repeats.failed(
                log.warning,
                f"heartbeat failed: control plane unreachable ({self.control.unreachable(exc)})",
            )
            return
        if response.status_code != 200:
            self._beat_repeats.failed(
                log.warning, f"heartbeat answered {self.control.problem(response)}"
            )
            return
        self._beat_repeats.passed()
        try:
            latest = response.json().get("config_version")
        except (ValueError, AttributeError):
            return
        if isinstance(latest, int) and self.base is not None and latest != self.base.version:
            self._next_pull = 0.0  # behind: pull now rather than at the next interval

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bonito-agent-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._client is not None:
            self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                if (
                    self._creds_stale.is_set()
                    and now - self._last_creds_read >= CREDENTIALS_REREAD_MIN_S
                ) or self.credentials.files_changed():
                    # A provider's 401 (every source, at most so often), or a credentials
                    # file rewritten: every worker reads it within a second, 401 or not.
                    self._creds_stale.clear()
                    self.reload_credentials()
                if now >= self._next_pull:
                    retry = self.pull() == "retry" and self._retries < 1
                    self._retries = self._retries + 1 if retry else 0
                    self._next_pull = time.monotonic() + (0.0 if retry else self.poll_s)
                    if self._next_heartbeat == 0.0:  # the first one right after the first pull
                        self._next_heartbeat = time.monotonic()
                if self.stats.share is not None:
                    self.stats.share.publish(self.stats)
                if now >= self._next_heartbeat > 0.0 and (
                    self.stats.share is None or self.stats.share.leader()
                ):
                    self.heartbeat()
                    self._next_heartbeat = time.monotonic() + self.heartbeat_s
                self._step_repeats.passed()
            except (OSError, httpx.HTTPError) as exc:
                # Expected in the field (a full or read-only disk under the state folder, the
                # control plane away): one line naming the cause, no traceback.
                problem = clean(f"{type(exc).__name__}: {exc}")
                self._step_repeats.failed(
                    log.error, f"agent sync step failed: {problem}; retried at the next pull"
                )
                self._next_pull = max(self._next_pull, time.monotonic() + self.poll_s)
            except Exception:
                log.exception("agent sync step failed")  # the thread must live on
                # Whatever failed is not retried in a tight loop: the next pull waits its turn.
                self._next_pull = max(self._next_pull, time.monotonic() + self.poll_s)
            wait = min(self._next_pull, self._next_heartbeat or self._next_pull) - time.monotonic()
            self._wake.wait(max(0.05, min(wait, 1.0)))
            self._wake.clear()


class Stats:
    """What the heartbeat reports: counts from the /v1 app, providers' health from the
    upstream wrapper, the spool from the usage sink. No request or response content."""

    def __init__(self, share=None):
        self.share = share  # a WorkerShare: every worker's counts in one heartbeat
        self.requests = 0
        self.errors = 0
        self._last = (0, 0)
        self.providers: dict = {}  # name -> {"kind", "healthy", "last_error"}
        self._line_counts: dict = {}

    def response(self, status: int) -> None:
        self.requests += 1
        if status >= 500:
            self.errors += 1

    def provider_result(self, name: str, kind: str, error: str | None) -> None:
        self.providers[name] = {
            "name": name,
            "kind": kind,
            "healthy": error is None,
            "last_error": error,
            "at": time.time(),
        }

    def heartbeat_body(self, sync: ConfigSync) -> dict:
        if self.share is not None:
            requests, errors, providers = self.share.totals(self)
        else:
            requests, errors, providers = self.requests, self.errors, dict(self.providers)
        d_req, d_err = requests - self._last[0], errors - self._last[1]
        self._last = (requests, errors)
        sink = sync.gateway.sink
        _files, spool_bytes = sink.spool_bytes()
        providers = {
            name: {k: v for k, v in p.items() if k != "at"} for name, p in providers.items()
        }
        if sync.base is not None:  # every configured provider, healthy until it fails
            for org in sync.base.orgs.values():
                for deps in org.deployments.values():
                    for d in deps:
                        providers.setdefault(
                            d.provider,
                            {
                                "name": d.provider,
                                "kind": d.kind,
                                "healthy": True,
                                "last_error": None,
                            },
                        )
        warnings = []
        if sink.dropped:
            warnings.append(
                f"usage spool full (BONITO_SPOOL_MAX_BYTES): {sink.dropped} records dropped"
            )
        if sink.dead_lettered:
            warnings.append(
                f"{sink.dead_lettered} usage records refused by the control plane and set aside"
            )
        if sync.credentials.errors:
            warnings.extend(f"credentials: {e}"[:300] for e in sync.credentials.errors)
        warnings.extend(f"credentials: {e}"[:300] for e in sync.credentials.withheld.values())
        if sync.loaded_from == "disk cache":
            warnings.append("serving the config from the disk cache")
        clock = sync.control.clock_warning()
        if clock:
            warnings.append(clock)
        return {
            "agent_id": sync.control.agent_id,
            "hostname": socket.gethostname(),
            "version": VERSION,
            "started_at": datetime.fromtimestamp(sync.started_at, UTC).isoformat(),
            "uptime_s": round(time.time() - sync.started_at, 3),
            "config_version": sync.base.version if sync.base is not None else None,
            "requests": requests,
            "errors": errors,
            "error_rate": round(d_err / d_req, 4) if d_req else 0.0,
            "providers": sorted(providers.values(), key=lambda p: p["name"]),
            "spool": {
                "records": self._spooled_records(sink),
                "bytes": spool_bytes,
                "dropped": sink.dropped,
            },
            "warnings": warnings,
        }

    def _spooled_records(self, sink) -> int:
        """Records in the spool: spooled files never change, so each is counted once."""
        counts = {}
        for path in sink._spool_files():
            key = path.name
            if key not in self._line_counts:
                try:
                    self._line_counts[key] = path.read_bytes().count(b"\n")
                except OSError:
                    continue
            counts[key] = self._line_counts[key]
        self._line_counts = counts
        return sum(counts.values())
