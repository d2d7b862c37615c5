"""Talking to the control plane's /api/agent/*: headers, the token, and what its answers mean."""

import gzip
import hashlib
import logging
import re
import time
import uuid
from email.utils import parsedate_to_datetime

import httpx
import orjson

from . import VERSION
from .state import Token

log = logging.getLogger("bonito.agent")

UNAUTHORIZED = (401, 403)
REFUSED = (400, 413, 422)  # the data is refused: split, isolate, set aside
MAX_DETAIL = 300  # characters of the control plane's (or a stranger's) words in a log line
# The largest answer read (decoded): far above the config of an org at its tier's bounds.
MAX_ANSWER_BYTES = 256 * 1024 * 1024
_TOKENISH = re.compile(r"\b(bt|bn|rt)-[0-9A-Za-z]{6,}")


class Refused(Exception):
    """The control plane refuses this batch's content (400, 413, 422)."""


class Unavailable(Exception):
    """The control plane cannot take it now (down, 5xx, 429, token refused): keep it, retry."""


# How far this host's clock may be from the control plane's before the heartbeat warns:
# the control plane refuses usage records dated more than 5 minutes ahead of its own clock.
CLOCK_SKEW_WARN_S = 60.0


def _clock_message(skew: float) -> str:
    side = "ahead of" if skew > 0 else "behind"
    return (
        f"this host's clock is {abs(skew):.0f} s {side} the control plane's: usage records"
        " dated more than 5 minutes ahead are refused; sync the clock (NTP)"
    )


class ControlPlane:
    def __init__(self, settings, token: Token, agent_id: str):
        self.base = settings.control_plane + "/api/agent"
        self.token = token
        self.agent_id = agent_id
        self.settings = settings
        # This host's clock minus the control plane's (its answers' Date), or None.
        self.clock_skew_s: float | None = None

    def clock_warning(self) -> str | None:
        """The heartbeat's warning when this host's clock is off the control plane's."""
        skew = self.clock_skew_s
        return _clock_message(skew) if skew is not None and abs(skew) > CLOCK_SKEW_WARN_S else None

    def _saw_date(self, response: httpx.Response, sent_at: float) -> None:
        """Compare this host's clock with an answer's Date (logged once when it goes off)."""
        try:
            when = parsedate_to_datetime(response.headers["date"]).timestamp()
        except (KeyError, TypeError, ValueError, IndexError, OverflowError):
            return
        # The server stamped its Date between the send and the answer, to the second.
        skew = (sent_at + time.time()) / 2 - (when + 0.5)
        was_off = self.clock_warning() is not None
        self.clock_skew_s = skew
        if not was_off and abs(skew) > CLOCK_SKEW_WARN_S:
            log.warning("%s", _clock_message(skew))

    def not_bonito(self) -> str:
        return (
            f"BONITO_CONTROL_PLANE ({self.settings.control_plane}) does not look like a Bonito"
            " control plane: it should be the URL the dashboard is served at, e.g."
            " https://bonito.example.com"
        )

    def problem(self, response: httpx.Response) -> str:
        """An error answer in a log line: its status, and the code and detail of Bonito's
        JSON error (bounded, tokens blanked); for another body, that the URL does not look
        like a control plane's."""
        status = response.status_code
        body = _body(response)
        if is_bonito(body):
            return f"{status} {clean(body['code'], 60)}: {clean(body.get('detail') or '')}"
        kind = response.headers.get("content-type", "").split(";")[0].strip() or "no type"
        what = "no body" if not response.content else f"a body ({clean(kind, 60)})"
        return f"{status} with {what} that is not Bonito's JSON error: {self.not_bonito()}"

    def unreachable(self, exc: Exception) -> str:
        """A transport error as a log line: its class and text (the refused connection, the
        TLS failure), never a header (the token is in one)."""
        text = clean(exc)
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

    def client(self) -> httpx.Client:
        """One per thread (the sync thread, the usage sink's thread)."""
        return httpx.Client(
            verify=self.settings.verify, timeout=self.settings.timeout_s, follow_redirects=False
        )

    def headers(self) -> dict:
        return {
            "Authorization": f"Bearer {self.token.current}",
            "X-Bonito-Agent-Id": self.agent_id,
            "X-Bonito-Agent-Version": VERSION,
            "User-Agent": f"bonito-agent/{VERSION}",
        }

    def request(self, client: httpx.Client, method: str, path: str, **kwargs) -> httpx.Response:
        """One call; on a 401 the token is read again and, if that gives another, retried once.
        Raises httpx errors when the control plane cannot be reached."""
        extra = kwargs.pop("headers", {})
        response = self._call(client, method, path, {**self.headers(), **extra}, kwargs)
        if response.status_code == 401 and self.token.reread():
            response = self._call(client, method, path, {**self.headers(), **extra}, kwargs)
        status = response.status_code
        if status in UNAUTHORIZED and is_bonito(_body(response)):
            if not self.token.refused:
                log.error(
                    "the control plane refused the org token (%s): it was revoked or"
                    " rotated away; serving the last config, usage stays spooled",
                    self.problem(response),
                )
            self.token.refused = True
        elif status not in UNAUTHORIZED and status < 500:
            self.token.refused = False
        # A 401/403 in another body than the agent API's: something else at that URL (the
        # gateway's /v1, a proxy's login page) answered and the token was never judged; the
        # caller logs it as such (problem() says the URL does not look like Bonito's).
        return response

    def _call(self, client: httpx.Client, method: str, path: str, headers, kwargs):
        """One HTTP call, whole within BONITO_CONTROL_PLANE_TIMEOUT_S (httpx's timeout bounds
        each read: an answer trickling a byte at a time held the thread for ever) and its
        answer read up to MAX_ANSWER_BYTES (something else at that URL may send gigabytes)."""
        timeout = self.settings.timeout_s
        deadline = time.monotonic() + timeout
        request = client.build_request(method, self.base + path, headers=headers, **kwargs)
        sent_at = time.time()
        response = client.send(request, stream=True)
        self._saw_date(response, sent_at)
        try:
            body, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise httpx.ReadError(
                        f"an answer over {MAX_ANSWER_BYTES} bytes, not read", request=request
                    )
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout(
                        f"the answer was not whole within {timeout:g}s"
                        " (BONITO_CONTROL_PLANE_TIMEOUT_S)",
                        request=request,
                    )
                body.append(chunk)
        finally:
            response.close()
        kept = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(
            response.status_code, headers=kept, content=b"".join(body), request=request
        )


def clean(text, limit: int = MAX_DETAIL) -> str:
    """Someone else's words for a log line: one line, bounded, anything token-shaped blanked."""
    text = " ".join(str(text).split())
    text = _TOKENISH.sub(lambda m: m.group(1) + "-…", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _body(response: httpx.Response):
    try:
        return response.json()
    except ValueError:  # not JSON (or not UTF-8)
        return None


def is_bonito(body) -> bool:
    """Whether a body is the agent API's error: ``{"detail": "…", "code": "…"}``."""
    return isinstance(body, dict) and isinstance(body.get("code"), str) and "detail" in body


def batch_id(records_json: bytes) -> str:
    """The batch's id, from its content: a retried batch (same records, from memory, the
    spool or a journal) carries the same id and the control plane answers it without writing
    again; a different batch never reuses one."""
    return str(uuid.UUID(bytes=hashlib.sha256(records_json).digest()[:16], version=4))


REMIND_S = 60.0  # while a call to the control plane keeps failing, one line a minute says so


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _failing_for(reason: str, lasted: float | None) -> str:
    return reason + (f" (failing for {_duration(lasted)})" if lasted and lasted >= 1 else "")


class Repeats:
    """A failure met at every try while the control plane is away (a config pull every 30 s,
    a heartbeat every minute, a usage post at every retry, for as long as it lasts): said when
    it starts (and when its reason changes, if ``each_reason``), then at most once a minute
    with how long it has lasted, and once when it ends ("... back after 12m") — not once per
    try.

    ``say(reason, lasted)`` words a failing line (``lasted`` is None for the first one) and
    ``back(lasted)`` the last one; by default "<reason> (failing for 3m)" and "<what> back
    after 12m". They are called only when a line is said."""

    def __init__(self, what="", clock=time.monotonic, *, say=None, back=None, each_reason=True):
        self.what = what
        self.clock = clock
        self.say = say or _failing_for
        self.back = back or (lambda lasted: f"{self.what} back after {_duration(lasted)}")
        self.each_reason = each_reason
        self.since: float | None = None  # when it began failing (None: it passes)
        self.reason: str | None = None  # the reason last said
        self._said_at = 0.0

    def failed(self, emit, reason: str) -> None:
        now = self.clock()
        first = self.since is None
        if first:
            self.since = now
        elif (reason == self.reason or not self.each_reason) and now - self._said_at < REMIND_S:
            return
        emit(self.say(reason, None if first else now - self.since))
        self.reason, self._said_at = reason, now

    def passed(self, emit=log.warning) -> None:
        if self.since is not None:
            emit(self.back(self.clock() - self.since))
        self.since = self.reason = None


class IngestWriter:
    """The usage sink's writer in an agent: one gzip POST /api/agent/ingest per batch.

    While the control plane does not take usage, the sink spools it and retries (with
    backoff, every minute at most): the log says so once when it starts (why), then at most
    once a minute (for how long, how many records wait in the spool), and once when the
    spool is sent ("control plane back; N spooled records sent") — not once per retry."""

    def __init__(self, control: ControlPlane, clock=time.monotonic):
        self.control = control
        self._client: httpx.Client | None = None
        self.posted = 0
        self.accepted = 0
        self.duplicates = 0
        self.problem: str | None = None  # why the last post was not stored
        # A changed reason waits for the minute's line: retries come far more often than
        # pulls, and a flapping link would otherwise say a line per retry.
        self.outage = Repeats(clock=clock, say=self._say, back=self._back, each_reason=False)
        self._sent = 0  # records posted since posts pass again, until the spool is empty
        self._line_counts: dict[str, int] = {}
        # A spool left by an earlier run (stopped or killed while the control plane was
        # away) is sent without an outage in this one: said once too, when it is sent.
        self._inherited = bool(self._spool_files())

    def _say(self, problem: str, lasted: float | None) -> str:
        if lasted is None:
            return f"usage post failed ({problem}); the batch stays spooled and is retried"
        return (
            f"usage posts still failing after {_duration(lasted)} ({problem});"
            f" {self.spooled_records()} records spooled, sent when the control plane is back"
        )

    def _back(self, lasted: float) -> str:
        return f"control plane back; {self._sent} spooled records sent"

    def _failed(self, problem: str) -> None:
        self.outage.failed(log.warning, problem)
        self.problem = problem
        self._sent = 0  # failing again before the spool was sent: the same outage
        self._inherited = False  # the outage's own line tells when the spool is sent

    def _stored(self, records: int) -> None:
        self.problem = None
        if self.outage.since is None:
            if self._inherited:
                self._sent += records
                if len(self._spool_files()) <= 1:
                    log.info("%d records spooled by an earlier run sent", self._sent)
                    self._inherited, self._sent = False, 0
            return
        self._sent += records
        # The spool is sent when at most the batch just posted is left in it (the sink
        # deletes a spooled file once it is stored; a new batch goes to the spool while it
        # holds anything, so a batch posted straight from memory means it is empty).
        if len(self._spool_files()) <= 1:
            self.outage.passed(log.info)
            self._sent = 0

    def _spool_files(self) -> list:
        try:
            return sorted(self.control.settings.spool_dir.glob("*.jsonl"))
        except OSError:
            return []

    def spooled_records(self) -> int:
        """Records waiting in the spool (every worker's): spooled files never change, so
        each is read once."""
        counts = {}
        for path in self._spool_files():
            if path.name not in self._line_counts:
                try:
                    self._line_counts[path.name] = path.read_bytes().count(b"\n")
                except OSError:
                    continue
            counts[path.name] = self._line_counts[path.name]
        self._line_counts = counts
        return sum(counts.values())

    def __call__(self, records: list[dict]) -> None:
        if self._client is None:
            self._client = self.control.client()
        payload = orjson.dumps(records)
        bid = batch_id(payload)
        body = b'{"batch_id":"' + bid.encode() + b'","records":' + payload + b"}"
        try:
            response = self.control.request(
                self._client,
                "POST",
                "/ingest",
                content=gzip.compress(body, compresslevel=6),
                headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            )
        except httpx.HTTPError as exc:
            problem = f"control plane unreachable ({self.control.unreachable(exc)})"
            self._failed(problem)
            raise Unavailable(problem) from None
        self.posted += 1
        status = response.status_code
        if 200 <= status < 300:
            answer = _body(response)
            if not isinstance(answer, dict) or answer.get("batch_id") != bid:
                # Something else at that URL (a catch-all page, a proxy) answered a 2xx: the
                # control plane names the batch it took. Nothing is stored: keep it, retry.
                kind = response.headers.get("content-type", "").split(";")[0].strip() or "no type"
                what = "no body" if not response.content else f"a body ({clean(kind, 60)})"
                problem = (
                    f"ingest answered {status} with {what} that is not Bonito's answer:"
                    f" {self.control.not_bonito()}"
                )
                self._failed(problem)
                raise Unavailable(problem)
            self._stored(len(records))
            try:
                self.accepted += int(answer.get("accepted", 0))
                self.duplicates += int(answer.get("duplicates", 0))
            except (ValueError, TypeError):
                pass
            return
        problem = f"ingest answered {self.control.problem(response)}"
        # Split and set aside by the sink, which logs it: a 413 from anything (a proxy's
        # body limit too: smaller parts pass), a 400 or 422 only in the agent API's own
        # words. Another body (a proxy, a WAF, a host the control plane does not serve)
        # says nothing about the records: they stay spooled and are retried.
        if status == 413 or (status in REFUSED and is_bonito(_body(response))):
            raise Refused(problem)
        self._failed(problem)
        raise Unavailable(problem)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def is_refusal(exc: BaseException) -> bool:
    return isinstance(exc, Refused)
