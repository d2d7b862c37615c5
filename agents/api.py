"""The agent API (/api/agent/): what a VPC agent calls with its bt- org token.

django-ninja, async views; the database work of each call runs in one sync_to_async step.
Bearer tokens only: a dashboard session cookie authenticates nothing here, so CSRF does
not apply. The contract is docs/agent.md, *Protocol*."""

import uuid
from datetime import UTC, datetime
from typing import Annotated

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse
from django.utils import timezone
from ninja import Field, NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.security import HttpBearer
from pydantic import AfterValidator

from core import keys
from core.config_version import current_version
from core.text import name_safe
from orgs.models import Organization

from . import selectors, services
from .ingest import AgentError, ingest
from .models import Agent, OrgToken, hash_org_token

api = NinjaAPI(
    title="Bonito agent API",
    version="1",
    urls_namespace="agent-api",
    description="What a Bonito VPC agent calls with its bt- org token (docs/agent.md).",
    docs_url="/docs",
    openapi_url="/openapi.json",
)


class Caller:
    """The authenticated side of a call: the token, its org, and the agent."""

    def __init__(self, token: OrgToken, agent: Agent):
        self.token, self.org, self.agent = token, token.org, agent


def _authenticate(raw: str, agent_id: str, version: str):
    if not keys.well_formed(raw, ("bt-",)):
        return None
    token = (
        OrgToken.objects.usable()
        .select_related("org")
        .filter(token_hash=hash_org_token(raw))
        # An org put back on the shared gateway (by any way in) has no agents.
        .filter(org__deployment_mode=Organization.DeploymentMode.VPC)
        .first()
    )
    if token is None:
        return None
    try:
        agent_uuid = uuid.UUID(agent_id)
    except ValueError:
        raise AgentError(400, "agent_id", "X-Bonito-Agent-Id must be the agent's UUID.") from None
    version = _reported(64)(version)
    agent = services.agent_seen(token=token, agent_id=agent_uuid, version=version)
    return Caller(token, agent)


class OrgTokenAuth(HttpBearer):
    """Authorization: Bearer bt-… (refused before any lookup when malformed)."""

    def authenticate(self, request, token):
        return _authenticate(
            token.strip(),
            request.headers.get("X-Bonito-Agent-Id", ""),
            request.headers.get("X-Bonito-Agent-Version", ""),
        )


auth = OrgTokenAuth()


def _error(request, status: int, code: str, detail: str, **extra):
    return api.create_response(request, {"detail": detail, "code": code, **extra}, status=status)


@api.exception_handler(AgentError)
def _agent_error(request, exc: AgentError):
    return api.create_response(request, exc.body(), status=exc.status)


@api.exception_handler(AuthenticationError)
def _unauthorized(request, exc):
    response = _error(request, 401, "unauthorized", "The org token is unknown, revoked or expired.")
    response["WWW-Authenticate"] = 'Bearer realm="bonito-agent"'
    return response


@api.exception_handler(NinjaValidationError)
def _invalid(request, exc):
    # Wrong types are a 400 in the protocol (422 means refused records).
    return _error(request, 400, "invalid", "The request is not valid.", errors=exc.errors[:50])


@api.exception_handler(RequestDataTooBig)
def _too_big(request, exc):
    # A body over Django's DATA_UPLOAD_MAX_MEMORY_SIZE (a heartbeat, a config call): the
    # protocol's 413, not Django's HTML 400.
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return _error(request, 413, "too_large", f"The body exceeds {limit} bytes.")


@api.exception_handler(HttpError)
def _http_error(request, exc):
    return _error(request, exc.status_code, "invalid", str(exc))


# --------------------------------------------------------------------------- schemas


class Error(Schema):
    detail: str
    code: str


class OrgRef(Schema):
    id: int
    slug: str


class Facts(Schema):
    spent_this_month: float
    month: str = ""  # the month (YYYYMM) spent_this_month is of; "": the current one
    blocked: dict[str, dict]


class TokenRotation(Schema):
    rotate_to: str


class ConfigOut(Schema):
    schema_: int = Field(..., alias="schema")
    org: OrgRef
    version: int
    full: bool
    snapshot: dict | None = None
    delta: dict | None = None
    facts: Facts
    hash_secret: str
    poll_s: int
    heartbeat_s: int
    ingest_batch_s: int
    token: TokenRotation | None = None


class KeysOut(Schema):
    version: int
    keys: dict[str, dict]


class IngestIn(Schema):
    """The decompressed body (send it gzip-compressed, Content-Encoding: gzip)."""

    batch_id: uuid.UUID
    records: list[dict]


class IngestOut(Schema):
    batch_id: str
    accepted: int
    duplicates: int


class Refused(Error):
    errors: list[dict]


def _no_nul(value: str) -> str:
    # PostgreSQL stores no NUL in text or jsonb: refused here, a 400, never a 500.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON): no storable text
        raise ValueError("must be Unicode text (no lone surrogates)") from None
    return value


EARLIEST, LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)


def _sane_moment(value: datetime | None) -> datetime | None:
    # Years at the calendar's ends overflow when converted to UTC (a 500 while saving);
    # a time without an offset is taken as UTC.
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        inside = EARLIEST <= value <= LATEST
    except OverflowError:
        inside = False
    if not inside:
        raise ValueError("must be a time between 2000 and 2100")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]


def _reported(limit: int):
    """What an agent says about itself (its hostname, its version), made safe to show and
    store, never refused: trimmed, every control, bidi or zero-width character written as
    its escape (``web\\u202e1``, core.text.name_safe; a NUL too, which PostgreSQL cannot
    store), cut to ``limit`` characters. An agent on a host with a strange name keeps its
    service; the Agents page, REST and alerts show what it sent without being reordered."""

    def safe(value: str) -> str:
        return name_safe(value[: limit * 2].strip())[:limit]

    return safe


def _shown(value: str) -> str:
    # Text the Agents page shows (provider names, errors, warnings): escapes, not drawn.
    return name_safe(value)


Shown = Annotated[str, AfterValidator(_no_nul), AfterValidator(_shown)]


class Provider(Schema):
    name: Shown = Field(..., max_length=200)
    kind: Shown = Field("", max_length=50)
    healthy: bool
    last_error: Shown | None = Field(None, max_length=300)


BIG = 2**63 - 1  # the BigIntegerField columns' top: more is refused (400), never a 500
YEARS = 100 * 365 * 86400.0  # uptime: finite and sane


class Spool(Schema):
    records: int = Field(0, ge=0, le=BIG)
    bytes: int = Field(0, ge=0, le=BIG)
    dropped: int = Field(0, ge=0, le=BIG)


class HeartbeatIn(Schema):
    agent_id: uuid.UUID
    hostname: Annotated[str, AfterValidator(_reported(255))] = ""
    version: Annotated[str, AfterValidator(_reported(64))] = ""
    started_at: Annotated[datetime | None, AfterValidator(_sane_moment)] = None
    uptime_s: float = Field(0, ge=0, le=YEARS, allow_inf_nan=False)
    config_version: int | None = Field(None, ge=0, le=BIG)
    requests: int = Field(0, ge=0, le=BIG)
    errors: int = Field(0, ge=0, le=BIG)
    error_rate: float = Field(0, ge=0, le=1, allow_inf_nan=False)
    providers: list[Provider] = Field(default_factory=list, max_length=200)
    spool: Spool = Field(default_factory=Spool)
    warnings: list[Annotated[Shown, Field(max_length=500)]] = Field(
        default_factory=list, max_length=50
    )


class HeartbeatOut(Schema):
    ok: bool
    config_version: int


# --------------------------------------------------------------------------- endpoints


def _suggestions() -> dict:
    return {
        "poll_s": settings.AGENT_POLL_S,
        "heartbeat_s": settings.AGENT_HEARTBEAT_S,
        "ingest_batch_s": settings.AGENT_INGEST_BATCH_S,
    }


@api.get(
    "/config",
    auth=auth,
    response={200: ConfigOut, 304: None, 400: Error, 401: Error, 503: Error},
    by_alias=True,
    summary="The org's config: full, or a delta from ?since=<version>; ETag / If-None-Match",
)
async def config(request, since: str | None = None):
    if settings.KEY_HASH_SECRET == settings.SECRET_KEY:
        # The agent is handed the key-hash secret; it must never be Django's SECRET_KEY.
        raise AgentError(
            503,
            "hash_secret_shared",
            "The control plane has no KEY_HASH_SECRET of its own (it defaults to"
            " SECRET_KEY, which must never leave it): its operator must set one.",
        )
    etag, doc = await sync_to_async(selectors.config_document)(
        request.auth.token, since, request.headers.get("If-None-Match"), _suggestions()
    )
    if doc is None:
        response = HttpResponse(status=304)
    else:
        response = api.create_response(request, doc, status=200)
    response["ETag"] = etag
    response["Cache-Control"] = "no-store"
    return response


@api.get("/keys", auth=auth, response={200: KeysOut, 401: Error}, summary="The org's live keys")
async def keys_list(request):
    return await sync_to_async(selectors.keys_document)(request.auth.org)


@api.post(
    "/ingest",
    auth=auth,
    response={200: IngestOut, 400: Error, 401: Error, 413: Error, 422: Refused, 503: Error},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": IngestIn.json_schema()},
            },
        }
    },
    summary="A batch of usage records (gzip JSON), idempotent by batch_id and record id",
)
async def ingest_batch(request):
    length = request.headers.get("Content-Length") or ""
    if length.isdigit() and int(length) > settings.AGENT_INGEST_MAX_BYTES:
        raise AgentError(
            413,
            "too_large",
            f"The compressed body exceeds {settings.AGENT_INGEST_MAX_BYTES} bytes.",
        )
    try:
        body = request.body
    except RequestDataTooBig:
        raise AgentError(
            413,
            "too_large",
            f"The compressed body exceeds {settings.AGENT_INGEST_MAX_BYTES} bytes.",
        ) from None
    return await sync_to_async(ingest)(
        request.auth.org, body, request.headers.get("Content-Encoding", "")
    )


@api.post(
    "/heartbeat",
    auth=auth,
    response={200: HeartbeatOut, 400: Error, 401: Error},
    summary="The agent's health: uptime, version, config version, requests, providers",
)
async def heartbeat(request, beat: HeartbeatIn):
    caller = request.auth
    if beat.agent_id != caller.agent.agent_id:
        raise AgentError(400, "agent_id", "agent_id differs from the X-Bonito-Agent-Id header.")

    def save():
        data = beat.model_dump()
        data["started_at"] = beat.started_at or timezone.now()
        services.agent_heartbeat(agent=caller.agent, beat=data)
        return current_version()

    return {"ok": True, "config_version": await sync_to_async(save)()}


def unknown_path(request, rest: str = ""):
    """Any other path under /api/agent/: the protocol's JSON error, not Django's HTML 404."""
    from django.http import JsonResponse

    return JsonResponse(
        {"detail": f"No agent API endpoint at {request.path[:200]}.", "code": "not_found"},
        status=404,
    )
