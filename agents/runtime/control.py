"""Talking to the control plane's /api/agent/*: headers, the token, and what its answers mean."""

import gzip
import hashlib
import logging
import uuid

import httpx
import orjson

from . import VERSION
from .state import Token

log = logging.getLogger("bonito.agent")

UNAUTHORIZED = (401, 403)
REFUSED = (400, 413, 422)  # the data is refused: split, isolate, set aside


class Refused(Exception):
    """The control plane refuses this batch's content (400, 413, 422)."""


class Unavailable(Exception):
    """The control plane cannot take it now (down, 5xx, 429, token refused): keep it, retry."""


class ControlPlane:
    def __init__(self, settings, token: Token, agent_id: str):
        self.base = settings.control_plane + "/api/agent"
        self.token = token
        self.agent_id = agent_id
        self.settings = settings

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
        response = client.request(
            method, self.base + path, headers={**self.headers(), **extra}, **kwargs
        )
        if response.status_code == 401 and self.token.reread():
            response = client.request(
                method, self.base + path, headers={**self.headers(), **extra}, **kwargs
            )
        if response.status_code in UNAUTHORIZED:
            if not self.token.refused:
                log.error(
                    "the control plane refused the org token (%s %s): it was revoked or"
                    " rotated away; serving the last config, usage stays spooled",
                    response.status_code,
                    _detail(response),
                )
            self.token.refused = True
        elif response.status_code < 500:
            self.token.refused = False
        return response


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body.get("detail") or body.get("code") or "")[:200]
    except ValueError:
        return ""


def batch_id(records_json: bytes) -> str:
    """The batch's id, from its content: a retried batch (same records, from memory, the
    spool or a journal) carries the same id and the control plane answers it without writing
    again; a different batch never reuses one."""
    return str(uuid.UUID(bytes=hashlib.sha256(records_json).digest()[:16], version=4))


class IngestWriter:
    """The usage sink's writer in an agent: one gzip POST /api/agent/ingest per batch."""

    def __init__(self, control: ControlPlane):
        self.control = control
        self._client: httpx.Client | None = None
        self.posted = 0
        self.accepted = 0
        self.duplicates = 0

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
            raise Unavailable(f"control plane unreachable ({type(exc).__name__})") from None
        self.posted += 1
        status = response.status_code
        if 200 <= status < 300:
            try:
                answer = response.json()
                self.accepted += int(answer.get("accepted", 0))
                self.duplicates += int(answer.get("duplicates", 0))
            except (ValueError, TypeError, AttributeError):
                pass
            return
        if status in REFUSED:
            raise Refused(f"ingest {status}: {_detail(response)}")
        raise Unavailable(f"ingest {status}: {_detail(response)}")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def is_refusal(exc: BaseException) -> bool:
    return isinstance(exc, Refused)
