"""One /v1 request, end to end: key, policy, limits, routing, the call, the usage record."""

import asyncio
import logging
import os
import random
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from core import keys
from core.smart import number_as_sent

from . import anthropic_api, errors, keys_check, media, responses_api, routing, smart, tokens
from .errors import GatewayError
from .limits import Bucket, Limiter, LimitResult, SpendReservation, org_prefix
from .snapshot import (
    DeploymentInfo,
    KeyInfo,
    OrgInfo,
    SmartPolicy,
    Snapshot,
    billed_tier,
    served_tier,
)
from .state import SnapshotSource
from .tokens import Counts
from .upstream import (
    CITATION_MARK,
    DONE_EVENT,
    UNPARSED,
    StreamBroken,
    UpstreamError,
    Upstreams,
    cache_writes,
    cited_search,
    redact,
    unfit_in_its_own_words,
    web_searches,
)
from .upstream import carries_output as _carries_output
from .upstream import count_of as _count
from .upstream import empty_answer as _empty_answer
from .upstream import parse_event as _parse_event
from .usage import UsageSink
from .validation import exact_json, json_type, not_json, parse_body

log = logging.getLogger("bonito.gateway")
NO_TOKENS = Counts(0, 0)

# The response headers a browser app may read (CORS hides the others from its scripts).
CORS_EXPOSE = (
    "x-request-id, x-bonito-overhead-ms, x-bonito-model-used, x-bonito-provider, retry-after, "
    "x-bonito-route-score, x-bonito-route-tier, x-bonito-route-classifier, "
    "x-ratelimit-limit-requests, x-ratelimit-remaining-requests, x-ratelimit-reset-requests, "
    "x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens"
)
# What a disabled key (services.api_key_set_active) gets on /v1, with a 401.
KEY_DISABLED = "This API key is disabled; an org admin can enable it again."
# count_tokens bodies above this are tokenized in a thread (~1 ms of tokenizer on the loop).
COUNT_ON_LOOP_BYTES = 16 * 1024
# POST /v1/feedback for a request not (yet) recorded looks again after these waits (s): a
# usage record is written in a batch a moment after its response (UsageSink).
FEEDBACK_WAITS = (0.25, 0.5, 1.0)
# At most this many rpm refusals remembered (each lasts under a minute): past it, new ones
# are not (the limiter answers them, as before).
RPM_REFUSALS_KEPT = 10_000


@dataclass(slots=True)
class Incoming:
    endpoint: (
        str  # chat | completions | embeddings | models | model | responses[.*] | media.ENDPOINTS
    )
    headers: Mapping[str, str]  # lower-case names
    body: bytes = b""
    model_id: str | None = None
    too_large: bool = False
    # What the ASGI app found wrong before the key was checked (an unknown path, a wrong
    # method, a body it could not decode): the answer for a valid key, recorded as usual.
    refusal: GatewayError | None = None
    resource_id: str | None = None  # /v1/responses/{id}
    query: str = ""  # the URL's query string (GET /v1/responses/{id}/input_items)
    # Set only by server code (the dashboard Playground) that has already authenticated the
    # user and acts through one of the org's keys, read from the database (so a key made a
    # moment ago works before the snapshot has it); nothing reachable over HTTP sets it.
    key: KeyInfo | None = None
    # The ASGI receive() of the request, its body read (None: an in-process caller): while
    # the request waits on its providers, its http.disconnect ends the wait (_attempts).
    receive: object = None


@dataclass(slots=True)
class Outgoing:
    status: int
    body: bytes
    headers: dict = field(default_factory=dict)
    stream: AsyncIterator[bytes] | None = None
    # What the request cost (USD), for in-process callers (the Playground); never sent.
    cost: float | None = None


@dataclass(slots=True)
class Ctx:
    """What one request learned on its way through, for its headers and its usage record."""

    request_id: str
    endpoint: str
    t0: float
    key: KeyInfo | None = None
    org: OrgInfo | None = None
    model_requested: str = ""
    dep: DeploymentInfo | None = None
    model_used: str = ""
    upstream_s: float = 0.0
    ttft_ms: int | None = None
    headers: dict = field(default_factory=dict)
    # Smart routing: the policy's name ("" for the org's default), what scored the prompt
    # ("rules", "learned", or "strong" for the A/B share sent straight to the top tier),
    # the score, the tier it chose, and the top tier's deployment (the counterfactual).
    route_policy: str = ""
    route_classifier: str = ""
    route_score: float | None = None
    route_tier: str = ""
    top_dep: DeploymentInfo | None = None
    # The service tier the body asked for ("flex", "priority", "auto"…) and the one the
    # provider's answer says it served: billed_tier of the two prices the request.
    tier_requested: object = None
    tier_served: object = None
    recorded: bool = False  # its usage row is submitted (one a request)
    # The prompt's tokens as counted (its text: at most what the provider counts), where
    # it may be past a candidate's context window; 0 when not counted.
    prompt_tokens: int = 0
    images: bool = False  # the prompt holds an image (tokens.images_sent)
    receive: object = None  # Incoming.receive
    raw: bytes = b""  # the request's body as sent (an unfit verdict is checked against it)
    gone: bool = False  # the client left before the answer began
    trying: DeploymentInfo | None = None  # the deployment being called, if one is

    @property
    def tier(self) -> str:
        return billed_tier(self.tier_requested, self.tier_served)


class Gateway:
    def __init__(
        self,
        *,
        snapshots: SnapshotSource,
        limiter: Limiter,
        sink: UsageSink,
        upstreams: Upstreams | None = None,
        max_body_bytes: int = 10 * 1024 * 1024,
        retry_rounds: int = 2,
        backoff_s: float = 0.1,
        source: str = "shared_gateway",
        feedback=None,
    ):
        self.snapshots = snapshots
        self.limiter = limiter
        self.sink = sink
        self.upstreams = upstreams or Upstreams()
        self.health = routing.DeploymentHealth()
        self.max_body_bytes = max_body_bytes
        self.retry_rounds = retry_rounds
        self.backoff_s = backoff_s
        self.source = source
        # Stores POST /v1/feedback (billing's, in the control plane); None: not here.
        self.feedback = feedback
        self._cors_snap: Snapshot | None = None  # the snapshot _cors_any was computed from
        self._cors_any: frozenset = frozenset()
        # (rpm bucket's counter, its capacity) -> (the monotonic time until which the limiter
        # refuses it, the configuration version it refused under): _refused_before_routing.
        self._rpm_refused: dict[tuple[str, int], tuple[float, int]] = {}

    # ------------------------------------------------------------------ entry point
    async def handle(self, req: Incoming) -> Outgoing:
        ctx = Ctx(
            request_id=_request_id(req.headers),
            endpoint=req.endpoint,
            t0=time.perf_counter(),
            receive=req.receive,
            raw=req.body,
        )
        out = await self._handle(ctx, req)
        origin = req.headers.get("origin")
        if origin is not None:
            self._cors(ctx, origin, out)
        return out

    async def refuse_key(self, headers, endpoint: str) -> Outgoing | None:
        """The answer to a request without a valid key (its 401, or the 503 of a process
        with no configuration yet), None for a valid key. The ASGI app asks this from the
        headers alone, before it reads a byte of the body: a client without a key cannot
        make the server buffer an upload. Nothing is recorded (no key, no row); handle()
        checks the key again, so a key revoked in between is still refused."""
        try:
            self._authenticate(headers, await self._snapshot())
        except GatewayError as exc:
            return await self.refuse(headers, endpoint, exc)
        return None

    async def refuse(self, headers, endpoint: str, exc: GatewayError) -> Outgoing:
        """``exc`` as the answer to a request that has no key to record it under (a 401),
        readable by a browser app on an origin some org allows."""
        ctx = Ctx(request_id=_request_id(headers), endpoint=endpoint, t0=time.perf_counter())
        out = self._error_response(ctx, exc)
        origin = headers.get("origin")
        if origin is not None:
            self._cors(ctx, origin, out)
        return out

    async def _snapshot(self) -> Snapshot:
        snap = self.snapshots.current or await asyncio.to_thread(self.snapshots.ensure_started)
        if snap is None:
            raise GatewayError(
                503,
                "The gateway is starting and has no configuration yet; retry shortly.",
                "server_error",
                "gateway_not_ready",
                headers={"Retry-After": "1"},
            )
        return snap

    async def _handle(self, ctx: Ctx, req: Incoming) -> Outgoing:
        try:
            snap = await self._snapshot()
            ctx.key, ctx.org = self._authenticate(req.headers, snap, req.key)
        except GatewayError as exc:
            return self._error_response(ctx, exc)  # no valid key: nothing to record
        try:
            keys_check.refuse_outside_agent(ctx.org, self.source)  # recorded: a valid key
            if req.refusal is not None:
                raise req.refusal
            if req.endpoint in ("models", "model"):
                out = self._models(ctx, req.model_id)
                self._record(ctx, "success", 200)
                return out
            if req.endpoint in responses_api.ENDPOINTS:
                return await responses_api.handle(self, ctx, req, Outgoing)
            if req.endpoint == "feedback":
                out = await self._feedback(ctx, req)
                self._record(ctx, "success", 200)
                return out
            if req.endpoint == "count_tokens":
                return await self._count_tokens(ctx, req)
            if req.endpoint in media.ENDPOINTS:
                # (media cannot import this module: the import-linter's no-cycles contract)
                return await media.handle(self, ctx, req, Outgoing, _refuse_if_budget_spent)
            return await self._proxy(ctx, req)
        except GatewayError as exc:
            if not ctx.model_requested and exc.status == 400 and req.body:
                ctx.model_requested = _named_model(req.body)  # a body refused before routing
            if not ctx.recorded:  # (a client gone before its answer may be billed already)
                status = exc.record_status or ("rejected" if exc.status < 500 else "error")
                self._record(ctx, status, exc.status, exc.usage_error_type)
            return self._error_response(ctx, exc)
        except Exception:
            # A bug: still an OpenAI-shaped answer, and the request's one usage row.
            log.exception("request %s failed unexpectedly", ctx.request_id)
            if not ctx.recorded:
                self._record(ctx, "error", 500, "internal_error")
            exc = GatewayError(
                500,
                "The gateway failed to handle this request; it has been logged "
                f"(request id {ctx.request_id}).",
                "server_error",
                "internal_error",
            )
            return self._error_response(ctx, exc)

    # ------------------------------------------------------------------ CORS
    def origin_allowed_anywhere(self, origin: str) -> bool:
        """Whether some org lets browsers on ``origin`` call the gateway: a preflight's
        answer (it carries no key), and a refused key's (so the app can read its 401)."""
        snap = self.snapshots.current
        if snap is None:
            return False
        if self._cors_snap is not snap:  # once per snapshot: the union of every org's list
            self._cors_any = frozenset(o for org in snap.orgs.values() for o in org.cors_origins)
            self._cors_snap = snap
        return "*" in self._cors_any or origin.lower() in self._cors_any

    def _cors(self, ctx: Ctx, origin: str, out: Outgoing) -> None:
        """A browser's request: Access-Control-Allow-Origin only when the key's org allows
        the origin (no valid key: when any org does). Never credentials: the key is the
        authentication, sent by the page itself."""
        vary = out.headers.get("Vary")
        out.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
        if ctx.org is not None:
            allowed = "*" in ctx.org.cors_origins or origin.lower() in ctx.org.cors_origins
        else:
            allowed = self.origin_allowed_anywhere(origin)
        if allowed:
            out.headers["Access-Control-Allow-Origin"] = origin.lower()  # as stored
            out.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE

    # ------------------------------------------------------------------ auth and policy
    def _authenticate(
        self, headers, snap: Snapshot, key: KeyInfo | None = None
    ) -> tuple[KeyInfo, OrgInfo]:
        if key is None:
            raw = _bearer(headers)
            if raw is None:
                raise errors.invalid_key(
                    "You didn't provide an API key. Send it as 'Authorization: Bearer bn-…'."
                )
            key = keys_check.lookup(raw, snap)
            if key is None:
                raise errors.invalid_key()
        if key.revoked:
            raise errors.invalid_key("This API key has been revoked.")
        if key.disabled:
            raise errors.invalid_key(KEY_DISABLED)
        if key.expires_at is not None and key.expires_at <= time.time():
            when = datetime.fromtimestamp(key.expires_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
            raise errors.invalid_key(f"This API key expired on {when}.")
        org = snap.orgs.get(key.org_id)
        if org is None:
            raise errors.invalid_key()
        return key, org

    def _permitted(self, key: KeyInfo, org: OrgInfo, name: str, via_alias: bool = False):
        """(the deployments of model ``name`` this key may use, the error saying why it may
        use none of them, or None). ``via_alias``: a tier reached through the smart routing
        alias its key may use (allowed_models: [auto]): only the org's policy decides."""
        if via_alias:
            allowed = org.model_allowed(name)
        else:
            allowed = keys_check.model_permitted(key, org, name)
        if not allowed:
            return [], errors.not_permitted(
                f"This key is not allowed to use the model `{name}` (org policy or key scope)."
            )
        deps = [
            d for d in org.deployments.get(name, ()) if keys_check.deployment_permitted(key, org, d)
        ]
        if not deps and org.deployments.get(name):
            return [], errors.not_permitted(
                f"No deployment of `{name}` is in a provider or region this key and org allow."
            )
        return deps, None

    def _fallbacks(self, ctx: Ctx, names, ordered: list) -> list[DeploymentInfo]:
        """``ordered`` then the org's fallback models' deployments (those not in ``names``)."""
        key, org = ctx.key, ctx.org
        for fallback in org.fallback_models:
            if fallback in names or not keys_check.model_permitted(key, org, fallback):
                continue
            deps = [
                d
                for d in org.deployments.get(fallback, ())
                if keys_check.deployment_permitted(key, org, d)
            ]
            ordered.extend(routing.order("failover", deps, self.health))
        return ordered

    def _smart_policy(self, ctx: Ctx, body: dict, endpoint: str) -> SmartPolicy | None:
        """The smart routing this request goes through: its rt- key's smart policy, or the
        org's default when a bn- key asks for the alias (``auto``). None: routed as usual."""
        if endpoint == "embeddings":
            return None  # no prompt to score: a smart policy's tiers are tried in order
        key, org = ctx.key, ctx.org
        if key.routing_policy:
            policy = org.routing_policies.get(key.routing_policy)
            if policy is not None and policy.strategy == "smart" and policy.smart is not None:
                ctx.route_policy = policy.name
                return policy.smart
            return None
        if org.smart is not None and body["model"] == org.auto_model:
            return org.smart
        return None

    async def _smart_candidates(self, ctx: Ctx, policy: SmartPolicy, body: dict) -> list:
        """The chosen tier's deployments (ordered by the policy's ``within`` strategy), then
        each tier above it in turn (a tier that is down or refused fails over upwards), then
        the org's fallback models (alone when no tier from the chosen one up can serve)."""
        # Before the score, on every endpoint that scores (chat, completions, messages,
        # responses, count_tokens); the row still names the model and policy asked for.
        self._refused_before_routing(ctx)
        # An app that names its end user (`user`) keeps each user on one A/B arm; else
        # each request draws its own.
        user = smart.end_user(body) if policy.ab_share else None
        draw = (
            smart.sticky_draw(ctx.org.id, ctx.route_policy, user)
            if user is not None
            else self.health.rng.random()
        )
        arm = smart.arm(policy, draw)
        if arm == "strong":
            score, tier = None, len(policy.tiers) - 1
        else:
            if arm == "learned":  # milliseconds of embedding: off the event loop
                score = await asyncio.to_thread(smart.score, policy, body, arm)
            else:  # the rules score costs less than a thread hop
                score = smart.score(policy, body, arm)
            tier = smart.tier_index(policy, arm, score)
        ctx.route_classifier, ctx.route_score, ctx.route_tier = arm, score, policy.tiers[tier]
        ordered: list[DeploymentInfo] = []
        refused = None
        key = ctx.key
        via_alias = not key.routing_policy and ctx.org.auto_model in (key.allowed_models or ())
        for above, name in enumerate(policy.tiers[tier:]):
            deps, problem = self._permitted(key, ctx.org, name, via_alias)
            refused = refused or problem
            # Only the chosen tier takes a round-robin turn: the tiers above are failover
            # candidates, most often not called, and keep their turn for their own requests.
            ordered.extend(routing.order(policy.within, deps, self.health, turn=not above))
        if not ordered and refused:
            raise refused  # as plain routing: a model the key may not use is an answer
        ctx.top_dep = smart.top_deployment(policy, ordered, ctx.org.deployments.get(policy.top))
        # The org's fallback models the key may use (none of the tiers: never a way down),
        # as for plain routing; they also serve when no tier from the chosen one up has an
        # active deployment at all.
        candidates = self._fallbacks(ctx, policy.tiers, ordered)
        if not candidates:
            raise GatewayError(
                503,
                f"No tier from `{policy.tiers[tier]}` up has an active deployment "
                f"({', '.join(policy.tiers[tier:])}). Add one under Providers.",
                "server_error",
                "no_deployment",
                "model",
            )
        return candidates

    def _candidates(self, ctx: Ctx, model: str) -> list[DeploymentInfo]:
        key, org = ctx.key, ctx.org
        if key.routing_policy:
            policy = _key_policy(ctx)
            names, strategy, weights = list(policy.models), policy.strategy, policy.weights
        else:
            if model not in org.deployments:
                embeddings = ctx.endpoint == "embeddings"  # never smart-routed
                raise errors.model_not_found(
                    model,
                    smart_alias=(org.smart is None or embeddings) and model == org.auto_model,
                    embeddings=embeddings and org.smart is not None,
                    suggestion=_meant(model, keys_check.permitted_models(key, org)),
                )
            names, strategy, weights = [model], org.strategy, None
        primary: list[DeploymentInfo] = []
        refused = None
        for name in names:
            deps, problem = self._permitted(key, org, name)
            refused = refused or problem
            primary.extend(deps)
        if not primary:
            if refused:
                raise refused
            raise GatewayError(
                503,
                f"The model `{model}` has no active deployment. Add one under Providers.",
                "server_error",
                "no_deployment",
                "model",
            )
        return self._fallbacks(ctx, names, routing.order(strategy, primary, self.health, weights))

    # ------------------------------------------------------------------ proxying
    async def _proxy(self, ctx: Ctx, req: Incoming) -> Outgoing:
        if req.too_large:
            raise errors.too_large(self.max_body_bytes)
        if req.endpoint == "messages":  # Anthropic's: routed, limited and billed as its chat
            anthropic = anthropic_api.parse_request(req.body, req.endpoint)
            body, problems = anthropic_api.to_chat(anthropic)
            body["model"] = anthropic["model"]
        else:
            body = parse_body(req.body, req.endpoint)
        candidates = await self._route(ctx, body, req.endpoint)
        candidates = self.priced_for_search(
            candidates, anthropic if req.endpoint == "messages" else body
        )
        stream = body.get("stream") is True and req.endpoint != "embeddings"
        # Validated: positive integers or absent. Each of the n choices may use them all, and
        # so may each of the best_of completions a provider generates (and bills) to return n.
        out_est = (
            0
            if req.endpoint == "embeddings"
            else (
                body.get("max_completion_tokens")
                or body.get("max_tokens")
                or ctx.org.default_max_tokens
            )
            * max(body.get("n") or 1, body.get("best_of") or 1)
        )
        spend, verdict = await self._admit_tokens(
            ctx, req.body, candidates, out_est, anthropic if req.endpoint == "messages" else body
        )

        upstream_body = {k: v for k, v in body.items() if k != "model"}
        client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if stream:
            upstream_body["stream_options"] = {
                **(body.get("stream_options") or {}),
                "include_usage": True,
            }
        try:
            if req.endpoint == "messages":
                return await self._messages(
                    ctx, req, anthropic, problems, candidates, upstream_body, stream, spend, verdict
                )
            if stream:
                return await self._stream(
                    ctx,
                    req.endpoint,
                    candidates,
                    upstream_body,
                    client_wants_usage,
                    spend,
                    verdict.backend,
                )
            return await self._call(
                ctx, req.endpoint, candidates, upstream_body, spend, verdict.backend
            )
        except BaseException:
            if ctx.gone:
                self.bill_gone(
                    ctx,
                    lambda: (
                        anthropic_api.count_input(body, anthropic)
                        if req.endpoint == "messages"
                        else _count_input(req.endpoint, upstream_body)
                    ),
                    spend,
                    verdict.backend,
                )
            elif spend is not None:  # a provider's 4xx (ctx.dep set) spent nothing either
                self.limiter.settle(spend, 0.0, verdict.backend)
            raise

    def bill_gone(self, ctx: Ctx, count_prompt, spend, backend) -> None:
        """The row of a request whose client left before its answer began (_attempts): a
        deployment was being called, so it read the prompt: the prompt (``count_prompt()``,
        counted) at its price, no output (none was seen), as a stream the client leaves
        bills what it had relayed; none was (the client left between attempts): nothing."""
        if ctx.dep is None:
            if spend is not None:
                self.limiter.settle(spend, 0.0, backend)
            return
        counts = Counts(count_prompt(), 0)
        self._bill(ctx, counts, spend, backend, "error", 499, "client_disconnected")

    async def _route(self, ctx: Ctx, body: dict, endpoint: str) -> list[DeploymentInfo]:
        """The deployments to try for a checked body, in order; a 429 if a budget is spent."""
        ctx.model_requested = body["model"]
        ctx.tier_requested = body.get("service_tier")
        if ctx.org.blocked:
            _refuse_if_budget_spent(ctx.key, ctx.org)
        policy = self._smart_policy(ctx, body, endpoint)
        if policy is not None:
            return await self._smart_candidates(ctx, policy, body)
        # Routing's own answers (a model that does not exist, one the key may not use) and
        # every later one (a 400, a request that can never pass its tpm) come first, as when
        # the limiter alone answered: _admit asks the remembered refusals where it asks it.
        return self._candidates(ctx, body["model"])

    @staticmethod
    def priced_for_search(candidates: list, body: dict) -> list:
        """The candidates that may serve ``body``: for a request that asks for web
        searches, those with a price per search (a 400 if none has), never one unmetered."""
        param = tokens.search_param(body)
        if param is None:
            return candidates
        priced = [d for d in candidates if d.search_cost]
        if not priced:
            raise errors.search_unpriced(param)
        return priced

    async def _admit_tokens(self, ctx: Ctx, raw: bytes, candidates, out_est: int, body: dict):
        """_admit for a token-priced request whose body is ``raw`` (parsed: ``body``, in the
        API's own shape) and which may use ``out_est`` output tokens: the prompt's estimate,
        the web searches it may run and the audio it may answer in, at the dearest
        candidate's price. A request that points to input its bytes do not size
        (tokens.unseen_input) holds each candidate's whole context window."""
        prompt_est = tokens.estimate_prompt_tokens(raw)
        searches, audio = tokens.searches_asked(body), tokens.audio_asked(body)
        unseen = tokens.unseen_input(raw, body)
        ctx.images = unseen and tokens.images_sent(raw, body)

        def held(d: DeploymentInfo) -> int:
            if not unseen:
                return prompt_est
            return max(prompt_est, d.max_input_tokens or tokens.UNSEEN_INPUT_TOKENS)

        reserve = max(
            d.reservation(held(d), out_est, ctx.tier, searches, audio_out=audio) for d in candidates
        )
        windows = [d.max_input_tokens for d in candidates if d.max_input_tokens]
        if windows and prompt_est > min(windows) and ctx.endpoint != "embeddings":
            # The estimate leans high: count the prompt's text (tiktoken lets go of the GIL:
            # a long prompt is counted off the event loop) for _within_context.
            text = tokens.prompt_text_any(body)
            ctx.prompt_tokens = (
                await asyncio.to_thread(tokens.count_tokens, text)
                if len(text) > 100_000
                else tokens.count_tokens(text)
            )
        return await self._admit(ctx, prompt_est + out_est, reserve)

    async def _admit(self, ctx: Ctx, token_cost: int, reserve: float, *, spends: bool = True):
        """(the spend reservation or None, the limiter's verdict): the key's and org's rpm
        and tpm buckets take ``token_cost``, the spend cap ``reserve`` (USD); a 429 if
        either refuses. Every /v1 endpoint that calls a provider comes through here, and
        feedback (a database write: the rate limits, not the cap, since it spends nothing)."""
        spend = None
        if ctx.org.spend_cap is not None and spends:
            spend = SpendReservation(
                ctx.org.id,
                ctx.org.spend_cap,
                reserve,
                ctx.org.spent_this_month,
                baseline_month=ctx.org.spent_month,
            )
        buckets = self._buckets(ctx.key, ctx.org, token_cost)
        for b in buckets:
            if b.cost > b.capacity:
                # More than the bucket holds in a whole minute: it can never pass. The
                # limiter is asked all the same, for the buckets' state (it takes nothing
                # from them: this one refuses), unless it cannot answer. The SDKs obey
                # x-should-retry before Retry-After (they waited 60 s, twice).
                try:
                    held = await self.limiter.acquire(buckets, None)
                except GatewayError:
                    held = None
                ctx.headers.update(_ratelimit_headers(buckets, held))
                raise GatewayError(
                    429,
                    f"This request needs up to {b.cost} tokens (its prompt, estimated, and "
                    "max_tokens x n; without max_tokens the org's estimate), more than the "
                    f"{b.capacity} tokens per minute "
                    f"{'this key' if b.scope == 'key' else 'this organization'} may use: it "
                    "cannot pass at any time. Lower max_tokens (or n), or shorten the prompt.",
                    "tokens",
                    "rate_limit_exceeded",
                    headers={"Retry-After": "60", "x-should-retry": "false"},
                )
        self._refused_before_routing(ctx)  # where the limiter's own refusal would come
        verdict = await self.limiter.acquire(buckets, spend)
        ctx.headers.update(_ratelimit_headers(buckets, verdict))
        if not verdict.allowed:
            if verdict.spend_exceeded:
                raise GatewayError(
                    429,
                    f"The monthly spend cap of ${ctx.org.spend_cap:,.2f} for this organization is reached "
                    f"(spent ${verdict.spent:,.2f}). Requests are refused until an admin raises the cap or the "
                    "month ends.",
                    "insufficient_quota",
                    "spend_cap_exceeded",
                    headers={"Retry-After": str(int(verdict.retry_after_s))},
                )
            b = verdict.failed
            if b is not None and b.unit == "requests" and verdict.backend != "fallback":
                self._remember_rpm_refusal(b, verdict.retry_after_s)
            raise _limited(b, verdict.retry_after_s, ctx.headers)
        return spend, verdict

    def _remember_rpm_refusal(self, bucket: Bucket, retry_after_s: float) -> None:
        """A requests-per-minute bucket the limiter refused: no request can pass it before
        ``retry_after_s`` (nothing but time refills it), so until then this process refuses
        the key's or org's requests before routing them (_refused_before_routing). Not a
        refusal of the Redis-outage fallback, whose share of the limit is this process's."""
        if len(self._rpm_refused) >= RPM_REFUSALS_KEPT:
            now = time.monotonic()
            self._rpm_refused = {k: v for k, v in self._rpm_refused.items() if v[0] > now}
            if len(self._rpm_refused) >= RPM_REFUSALS_KEPT:
                return
        until = time.monotonic() + max(0.0, retry_after_s)
        self._rpm_refused[(bucket.key, bucket.capacity)] = (until, self._config_version())

    def _config_version(self) -> int:
        snap = self.snapshots.current
        return snap.version if snap is not None else -1

    def _refused_before_routing(self, ctx: Ctx) -> None:
        """The 429 the limiter would answer, without routing the request first: a key over
        its rpm limit (or an org over its own) was still routed, and a smart policy's
        learned score (milliseconds of CPU for a long prompt) was computed for a request
        refused right after, however fast the client sent them. Only while a refusal the
        limiter gave for that very bucket and capacity lasts, under the configuration it
        gave it in: a limit raised and put back, or any other change, asks the limiter again
        (its bucket may hold requests again); nothing is taken from any bucket."""
        if not self._rpm_refused:
            return
        now = time.monotonic()
        version = self._config_version()
        buckets = self._buckets(ctx.key, ctx.org, 0)
        refusing = []  # (wait, bucket)
        for b in buckets:
            got = self._rpm_refused.get((b.key, b.capacity)) if b.unit == "requests" else None
            if got is None:
                continue
            until, refused_in = got
            if until <= now or refused_in != version:
                del self._rpm_refused[(b.key, b.capacity)]
            else:
                refusing.append((until - now, b))
        if not refusing:
            return
        wait, b = max(refusing, key=lambda r: r[0])  # several: the longest, as the limiter's
        # The key's limits, and what its refused rpm bucket holds: nothing.
        held = LimitResult(allowed=False, remaining={r.label: 0 for _, r in refusing})
        ctx.headers.update(_ratelimit_headers(buckets, held))
        raise _limited(b, wait, ctx.headers)

    def _buckets(self, key: KeyInfo, org: OrgInfo, token_cost: int) -> list[Bucket]:
        out = []
        # Limits only narrow: a key's own limit applies within the org's default for keys,
        # which applies within the tier's (keys saved before this rule are narrowed here).
        rpm = effective_limit(key.rpm, org.key_rpm, org.tier_key_rpm)
        tpm = effective_limit(key.tpm, org.key_tpm)
        tag = org_prefix(org.id)  # one Cluster slot per org: see limits.org_prefix
        if rpm:
            out.append(Bucket(f"{tag}:rl:k:{key.id}:r", rpm, 1, "requests", "key"))
        if tpm:
            out.append(Bucket(f"{tag}:rl:k:{key.id}:t", tpm, token_cost, "tokens", "key"))
        if org.rpm:
            out.append(Bucket(f"{tag}:rl:o:r", org.rpm, 1, "requests", "org"))
        if org.tpm:
            out.append(Bucket(f"{tag}:rl:o:t", org.tpm, token_cost, "tokens", "org"))
        return out

    async def _attempts(self, ctx: Ctx, candidates: list[DeploymentInfo], attempt):
        """``_failover``, ended by the client leaving (its ASGI http.disconnect) while it
        waits: the call in flight is cancelled, no other deployment is tried, and a 499
        ``client_disconnected`` is raised (ctx.gone, ctx.dep: the deployment that was being
        called, if one was). One watcher task per request, only while it waits here."""
        if ctx.receive is None:  # an in-process caller: no client to lose
            return await self._failover(ctx, candidates, attempt)
        task = asyncio.current_task()
        watcher = asyncio.ensure_future(_watch(ctx, ctx.receive, task))
        try:
            return await self._failover(ctx, candidates, attempt)
        except asyncio.CancelledError:
            if not ctx.gone:
                raise
            task.uncancel()
            if ctx.trying is not None:
                ctx.dep, ctx.model_used = ctx.trying, ctx.trying.model
            raise GatewayError(
                499,
                "The client closed the connection before the answer began.",
                "invalid_request_error",
                "client_disconnected",
                record_status="error",
            ) from None
        finally:
            watcher.cancel()

    async def _failover(self, ctx: Ctx, candidates: list[DeploymentInfo], attempt):
        """Run ``attempt(dep, timeout)`` over the candidates with failover, backoff and a
        deadline (the org's timeout). An attempt with other candidates after it in its
        round gets its share of what is left (``_share``): one that hangs leaves the rest
        of the deadline to them. A deployment with its own timeout gets that instead (within
        the deadline), last or not."""
        deadline = time.monotonic() + ctx.org.timeout_s
        last: UpstreamError | None = None
        unfit: tuple[DeploymentInfo, UpstreamError] | None = None
        unfit_ids: set[int] = set()  # unfit in one round, unfit in the next
        final: list[UpstreamError] = []  # the failures of the last round that had any
        untried = 0  # of the last round: candidates the deadline left no time for
        candidates = _taking_images(ctx, _within_context(ctx, candidates))
        for round_no in range(self.retry_rounds):
            failures: list[UpstreamError] = []
            untried = 0
            for i, dep in enumerate(candidates):
                if dep.id in unfit_ids:
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    untried = sum(1 for d in candidates[i:] if d.id not in unfit_ids)
                    break
                later = sum(1 for d in candidates[i + 1 :] if d.id not in unfit_ids)
                health = self.health.get(dep.id)
                health.in_flight += 1
                started = time.perf_counter()
                ctx.trying = dep
                try:
                    budget, why = None, ""
                    if dep.timeout_s:  # its own, in place of a share, within the deadline
                        budget = min(dep.timeout_s, remaining)
                        why = "its own timeout" if dep.timeout_s <= remaining else "the deadline"
                    elif later:
                        budget = _share(remaining, later)
                        why = "its share of the deadline with other deployments to try"
                    if budget is not None:
                        try:
                            async with asyncio.timeout(budget):
                                result = await attempt(dep, remaining)
                        except TimeoutError:
                            raise UpstreamError(
                                f"{dep.label} timed out (no answer within {budget:.1f} s, {why})",
                                timeout=True,
                                own_timeout=why == "its own timeout",
                            ) from None
                    else:  # the last candidate: the whole of what is left
                        result = await attempt(dep, remaining)
                except UpstreamError as exc:
                    if exc.unfit and unfit_in_its_own_words(exc, ctx.raw):
                        if exc.too_long:
                            log.info("%s: the prompt is past its context window", dep.label)
                        unfit = unfit or (dep, exc)
                        unfit_ids.add(dep.id)
                        continue
                    if not exc.retryable:
                        # The request's fault, not the deployment's (which answered): it
                        # counts against no deployment's health, or one app's bad requests
                        # would move the whole org's traffic off a healthy deployment.
                        ctx.dep, ctx.model_used = dep, dep.model
                        raise _passthrough_error(exc) from exc
                    if exc.costs_health:
                        self.health.failure(dep.id, exc.retry_after)
                    log.info("deployment %s failed (%s); trying the next one", dep.label, exc)
                    last = exc
                    failures.append(exc)
                    continue
                finally:
                    health.in_flight -= 1
                    ctx.upstream_s += time.perf_counter() - started
                self.health.success(dep.id, (time.perf_counter() - started) * 1000)
                ctx.dep, ctx.model_used = dep, dep.model
                return result
            if failures:
                final = failures
            if unfit is not None and last is None:
                # No deployment of this model can serve the request as it is.
                ctx.dep, ctx.model_used = unfit[0], unfit[0].model
                raise _passthrough_error(unfit[1]) from unfit[1]
            if round_no + 1 < self.retry_rounds:
                # The next round starts when the first deployment may take it again: the
                # smallest wait its provider asked for (none asked: the backoff), the same
                # Retry-After a client is told when every one was rate limited.
                tried = failures or ([last] if last else [])
                asked = min((exc.retry_after or 0.0 for exc in tried), default=0.0)
                wait = min(
                    max(asked, self.backoff_s * 2**round_no) if last else 0.0,
                    max(0.0, deadline - time.monotonic()),
                )
                if wait >= deadline - time.monotonic():
                    break
                waited = time.perf_counter()
                ctx.trying = None  # no call in flight while it waits
                await asyncio.sleep(wait)
                ctx.upstream_s += time.perf_counter() - waited  # waiting out providers'
                # limits is not Bonito's overhead (x-bonito-overhead-ms)
        if final and all(exc.status == 429 and not exc.timeout for exc in final):
            # Rate limited by every provider tried (not down): a 429 the SDKs wait out.
            waits = [exc.retry_after for exc in final if exc.retry_after is not None]
            raise errors.upstream_rate_limited(
                min(waits) if waits else None,
                last,
                some_unfit=unfit is not None,
                what=_what_failed(ctx, candidates),
            )
        if last is not None and last.timeout:
            raise GatewayError(
                504,
                _timed_out(
                    final or [last], untried, ctx.org.timeout_s, _what_failed(ctx, candidates)
                ),
                "server_error",
                "upstream_timeout",
                error_type="upstream_timeout",
            )
        # A deployment that could not take the request as it is (the prompt past its
        # context window, an endpoint its provider lacks) says so too: that is not down.
        unfit_said = f" Another could not take the request as it is: {unfit[1]}." if unfit else ""
        raise GatewayError(
            502,
            f"Every deployment of {_what_failed(ctx, candidates)} failed; last error: {last}."
            f"{unfit_said}"
            if last
            else "No deployment could be tried before the deadline.",
            "server_error",
            "upstream_error",
            error_type="upstream_error",
        )

    async def _call(self, ctx, endpoint, candidates, upstream_body, spend, backend) -> Outgoing:
        async def attempt(dep, timeout):
            return await self.upstreams.for_deployment(dep).call(
                endpoint, dep, upstream_body, timeout
            )

        data = await self._attempts(ctx, candidates, attempt)
        ctx.tier_served = served_tier(data)
        counts = _usage_counts(data.get("usage"), embeddings=endpoint == "embeddings")
        counts = counts or Counts(0, 0)
        # No usable usage reported (LiteLLM reports zeros when the provider sent none):
        # count what was sent and answered, never bill zero.
        if not counts.input:  # nor its cached parts: the counted prompt is priced as input
            counts = Counts(_count_input(endpoint, upstream_body), counts.output)
        if not counts.output and endpoint != "embeddings":
            counts = counts._replace(output=tokens.count_tokens(tokens.completion_text(data)))
        if not counts.searches and endpoint == "chat":
            counts = counts._replace(searches=cited_search(data))
        return self._answered(ctx, data, counts, spend, backend)

    def _answered(self, ctx: Ctx, data: dict, counts, spend, backend) -> Outgoing:
        """A whole (not streamed) JSON answer of ``counts`` (tokens.Counts): the
        reservation settled to its cost, its usage row, the response."""
        cost = self._bill(ctx, counts, spend, backend, "success", 200)
        return Outgoing(
            200,
            orjson.dumps(data),
            self._headers(ctx, {"Content-Type": "application/json"}),
            cost=cost,
        )

    def _bill(
        self, ctx: Ctx, counts: Counts, spend, backend, status, http_status, error_type=""
    ) -> float:
        """A request that reached a deployment, done: its cost from ``counts``, the spend
        reservation settled to it, its usage row."""
        cost = ctx.dep.cost(*counts, tier=ctx.tier)
        if spend is not None:
            self.limiter.settle(spend, cost, backend)
        self._record(
            ctx,
            status,
            http_status,
            error_type,
            counts=counts,
            cost=cost,
        )
        return cost

    async def _stream(
        self, ctx, endpoint, candidates, upstream_body, client_wants_usage, spend, backend
    ) -> Outgoing:
        async def attempt(dep, timeout):
            chunks = self.upstreams.for_deployment(dep).stream(
                endpoint, dep, upstream_body, timeout
            )
            # Hold the events until one carries output: a stream that ends before any
            # (an upstream that ignored `stream`, an empty body) is a failure of this
            # deployment, never an empty success, and the next one can still be tried.
            held = []
            try:
                async for batch in chunks:
                    for i, (raw, chunk) in enumerate(batch):
                        if chunk is UNPARSED:
                            batch[i] = (raw, chunk := _parse_event(raw))
                        held.append(batch[i])
                    if any(_carries_output(chunk, dep) for _raw, chunk in batch):
                        return chunks, held
                    if batch[-1] is DONE_EVENT:
                        break
            except StreamBroken as exc:
                await chunks.aclose()
                raise UpstreamError(str(exc)) from exc
            except BaseException:
                await chunks.aclose()
                raise
            if _empty_answer([item[1] for item in held]):
                return chunks, held  # a complete answer that happens to be empty
            await chunks.aclose()
            raise UpstreamError(f"{dep.label} answered the stream with no completion in it", 502)

        chunks, held = await self._attempts(ctx, candidates, attempt)
        ctx.ttft_ms = int((time.perf_counter() - ctx.t0) * 1000)
        headers = self._headers(
            ctx,
            {
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            },
        )
        result = Outgoing(200, b"", headers)
        result.stream = self._relay(
            ctx, chunks, held, upstream_body, client_wants_usage, spend, backend, result
        )
        return result

    async def _relay(
        self, ctx, chunks, held, upstream_body, client_wants_usage, spend, backend, result
    ):
        """Relay the events: each read from the upstream goes out in one write. An event is
        parsed only if a byte check says it may carry usage or an error; the others are
        kept as bytes and parsed for counting only if the upstream reports no usage."""
        seen = _Seen()
        recorded = False

        async def account(status, http_status, error_type=""):
            # Recorded before the stream's last bytes go out, so a client that has seen
            # [DONE] can count on its usage row being on its way.
            nonlocal recorded
            recorded = True
            await chunks.aclose()  # also cancels the upstream call when the client went away
            counts = _usage_counts(seen.usage)
            if counts is None:  # no usable usage reported: count what was sent
                counted = Counts(
                    tokens.count_prompt_tokens(upstream_body), tokens.count_tokens(seen.text())
                )
                known = _usage_counts(seen.partial)
                # A stream cut short after the provider reported some usage: its prompt
                # count, and of the output the more of its count so far and what was relayed.
                counts = (
                    known._replace(
                        input=known.input or counted.input,
                        output=max(known.output, counted.output),
                    )
                    if known is not None
                    else counted
                )
            # A search model's answer cites the web (cited_search); one cut short may not have
            # reached its citations, but a request with web_search_options (a search model's:
            # OpenAI refuses it for others) was searched before the first token.
            asked = status != "success" and isinstance(
                upstream_body.get("web_search_options"), dict
            )
            if (seen.cited or asked) and not counts.searches:
                counts = counts._replace(searches=1)
            # for in-process callers, once the stream has ended
            result.cost = self._bill(ctx, counts, spend, backend, status, http_status, error_type)

        batch = held
        try:
            while True:
                if batch is None:
                    try:
                        batch = await chunks.__anext__()
                    except StopAsyncIteration:
                        break
                out = []
                for raw, chunk in batch:
                    if CITATION_MARK in raw:
                        seen.cited = True
                    if chunk is UNPARSED:
                        if _plain_event(raw):
                            seen.keep(raw)  # the common case: content, forwarded as it is
                            out.append(raw)
                            continue
                        chunk = _parse_event(raw)
                    elif not raw:
                        break  # the upstream's [DONE] (DONE_EVENT)
                    if not isinstance(chunk, dict):
                        continue  # not a JSON event: no SDK could read it
                    if chunk.get("usage"):
                        seen.usage = chunk["usage"]
                        ctx.tier_served = served_tier(chunk)
                    choices = chunk.get("choices")
                    if chunk.get("error"):
                        # The provider's words, as any error's: beside choices too (OpenRouter
                        # ends a choice with finish_reason "error" in the same chunk).
                        raw, chunk = redact(raw, ctx.dep), redact(chunk, ctx.dep)
                    if chunk.get("error") and not choices:
                        # The provider failed after the answer began: the client sees its
                        # error event and no [DONE], and the row says error, not success.
                        out.append(raw)
                        yield b"".join(out)
                        await account("error", 502, "stream_error")
                        return
                    seen.add_pieces(choices)
                    if "usage" in chunk and choices:
                        # Usage on a content chunk: it goes out as OpenAI sends it, in a
                        # chunk of its own after, and only to a client that asked for it.
                        raw = (
                            b"data: "
                            + orjson.dumps({k: v for k, v in chunk.items() if k != "usage"})
                            + b"\n\n"
                        )
                        if client_wants_usage and chunk["usage"]:
                            out.append(raw)
                            tail = {**chunk, "choices": [], "usage": chunk["usage"]}
                            raw = b"data: " + orjson.dumps(tail) + b"\n\n"
                    elif "usage" in chunk and not client_wants_usage:
                        continue  # we asked the upstream for usage; this client did not
                    out.append(raw)
                else:
                    if out:
                        yield b"".join(out)
                    batch = None
                    continue
                # The upstream said [DONE]: the last events go out with ours.
                await account("success", 200)
                out.append(b"data: [DONE]\n\n")
                yield b"".join(out)
                return
            await account("success", 200)
            yield b"data: [DONE]\n\n"
        except StreamBroken as exc:
            seen.partial = exc.usage
            await account("error", 502, "stream_broken")
            err = {
                "error": {
                    "message": f"The upstream stream broke: {exc}",
                    "type": "server_error",
                    "param": None,
                    "code": "stream_broken",
                }
            }
            yield b"data: " + orjson.dumps(err) + b"\n\n"
        finally:
            if not recorded:  # the client went away (cancelled), or something unexpected broke
                await account("error", 499, "client_disconnected")

    # ------------------------------------------------------------------ Anthropic Messages
    async def _messages(
        self, ctx, req, anthropic, problems, candidates, chat, stream, spend, verdict
    ) -> Outgoing:
        """POST /v1/messages past its limits: Anthropic deployments get the request as
        sent, the others its chat translation (anthropic_api); billed as chat is."""
        attempt = anthropic_api.attempt(
            self.upstreams, anthropic, chat, problems, req.headers, stream
        )
        result = await self._attempts(ctx, candidates, attempt)

        def settle(usage, text: str, status: str, http_status: int, error_type=""):
            # Anthropic's usage.service_tier, or a translated chat answer's (kept aside)
            ctx.tier_served = served_tier({"usage": usage}) or ctx.tier_served
            counts = anthropic_api.usage_counts(usage)
            if counts is None:  # no usable usage reported: count what was sent and answered
                counts = Counts(
                    anthropic_api.count_input(chat, anthropic), tokens.count_tokens(text)
                )._replace(searches=web_searches(usage))
            elif not counts[0]:
                # No input reported (a translated stream's message_start carries a placeholder
                # 0, and one cut short never gets the real count): the prompt is counted, on
                # every end of a stream, so it is never billed zero.
                counts = Counts(anthropic_api.count_input(chat, anthropic), counts.output)
            cost = self._bill(ctx, counts, spend, verdict.backend, status, http_status, error_type)
            return counts, cost

        if not stream:
            message = result
            counts, cost = settle(
                message.get("usage"), anthropic_api.output_text(message), "success", 200
            )
            if anthropic_api.usage_counts(message.get("usage")) is None:
                message["usage"] = {"input_tokens": counts.input, "output_tokens": counts.output}
            headers = self._headers(ctx, {"Content-Type": "application/json"})
            return Outgoing(200, orjson.dumps(message), headers, cost=cost)
        events, held = result
        ctx.ttft_ms = int((time.perf_counter() - ctx.t0) * 1000)
        headers = self._headers(
            ctx,
            {
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            },
        )
        out = Outgoing(200, b"", headers)
        seen = anthropic_api.StreamSeen()

        async def account(status, http_status, error_type=""):
            ctx.tier_served = seen.tier
            _counts, out.cost = settle(
                seen.reported(), seen.text(), status, http_status, error_type
            )

        out.stream = anthropic_api.relay(events, held, seen, account, ctx.dep)
        return out

    async def _count_tokens(self, ctx: Ctx, req: Incoming) -> Outgoing:
        """POST /v1/messages/count_tokens: Anthropic's own count when the model's first
        deployment is Anthropic's, ours otherwise; one zero-cost row."""
        if req.too_large:
            raise errors.too_large(self.max_body_bytes)
        body = anthropic_api.parse_request(req.body, req.endpoint)
        ctx.model_requested = body["model"]
        chat, problems = anthropic_api.to_chat(body)
        policy = self._smart_policy(ctx, body, "chat")
        if policy is not None:
            candidates = await self._smart_candidates(ctx, policy, chat)
            # Counting costs nothing on any tier: no top-tier cost, so no "saving".
            ctx.top_dep = None
        else:
            candidates = self._candidates(ctx, body["model"])
        ctx.dep, ctx.model_used = candidates[0], candidates[0].model
        native = anthropic_api.is_native(self.upstreams, ctx.dep)
        if problems and not native:  # what /v1/messages would refuse for this deployment
            raise anthropic_api.untranslatable(ctx.dep, problems)
        # One request from the key's and org's rpm buckets, the estimate from their tpm
        # (it calls Anthropic, or runs the tokenizer); it costs nothing, so reserves nothing.
        spend, verdict = await self._admit(ctx, tokens.estimate_prompt_tokens(req.body), 0.0)
        if spend is not None:
            self.limiter.settle(spend, 0.0, verdict.backend)
        count = None
        if native:
            started = time.perf_counter()
            try:
                count = await anthropic_api.native_count(
                    self.upstreams, ctx.dep, body, req.headers, ctx.org.timeout_s
                )
            except UpstreamError as exc:
                raise _passthrough_error(exc) from exc
            finally:
                ctx.upstream_s += time.perf_counter() - started
        if count is None:
            if len(req.body) > COUNT_ON_LOOP_BYTES:  # the tokenizer would stall the event loop
                count = await asyncio.to_thread(anthropic_api.count_input, chat, body)
            else:
                count = anthropic_api.count_input(chat, body)
        self._record(ctx, "success", 200, counts=Counts(count, 0))
        headers = self._headers(ctx, {"Content-Type": "application/json"})
        return Outgoing(200, orjson.dumps({"input_tokens": count}), headers, cost=0.0)

    # ------------------------------------------------------------------ feedback
    async def _feedback(self, ctx: Ctx, req: Incoming) -> Outgoing:
        """POST /v1/feedback {"request_id", "score" 0-1 | "thumbs" "up"/"down"}: the app's
        rating, stored on the key's org's usage rows of that request (smart routing's
        quality by tier). Another org's request id is not found, like an unknown one."""
        if req.too_large:
            raise errors.too_large(self.max_body_bytes)
        request_id, score = parse_feedback(req.body)
        if ctx.key.routing_policy:
            _key_policy(ctx)  # an rt- key of a disabled policy is refused here too
        if self.feedback is None:
            raise GatewayError(
                501,
                "Feedback is stored by the control plane; send it to its /v1/feedback.",
                "invalid_request_error",
                "feedback_not_here",
            )
        await self._admit(ctx, 0, 0.0, spends=False)  # one request of the key's and org's rpm
        rated = 0
        # Request ids are printable ASCII (_request_id): another names no request, and is
        # not sent to the database (PostgreSQL refuses a NUL in a query: a 500).
        looked = request_id.isascii() and request_id.isprintable()
        if looked:
            # A usage record is written in a batch a moment after its response: feedback
            # sent at once (an app rating what it just showed) found none and was a 404.
            for wait in (0.0, *FEEDBACK_WAITS):
                if wait:
                    await asyncio.sleep(wait)
                rated = await asyncio.to_thread(self.feedback, ctx.key.org_id, request_id, score)
                if rated:
                    break
        if not rated:
            raise GatewayError(
                404,
                f"No request with the id {request_id[:128]!r} in this organization "
                + (
                    f"(looked for {sum(FEEDBACK_WAITS):g} s: a request's record is stored "
                    "within a second of its response)."
                    if looked
                    else "(request ids are printable ASCII)."
                ),
                "invalid_request_error",
                "request_not_found",
                "request_id",
            )
        body = {"object": "feedback", "request_id": request_id, "score": score, "rated": rated}
        return Outgoing(
            200, orjson.dumps(body), self._headers(ctx, {"Content-Type": "application/json"})
        )

    # ------------------------------------------------------------------ models
    def _models(self, ctx: Ctx, model_id: str | None) -> Outgoing:
        if ctx.key.routing_policy:  # an rt- key's disabled policy: its 503, not an empty list
            _key_policy(ctx)
        names = keys_check.permitted_models(ctx.key, ctx.org)

        def card(name):
            return {"id": name, "object": "model", "created": 0, "owned_by": ctx.org.slug}

        if model_id is None:
            payload = {"object": "list", "data": [card(n) for n in names]}
        else:
            # In NFC, as names are stored and as a body's model is read (requested_model):
            # "café" sent decomposed is the model "café" here too.
            if not (model_id.isascii() and model_id.isprintable()):
                model_id = unicodedata.normalize("NFC", model_id)
            ctx.model_requested = model_id
            if model_id not in names:
                raise errors.model_not_found(model_id, suggestion=_meant(model_id, names))
            payload = card(model_id)
        return Outgoing(
            200, orjson.dumps(payload), self._headers(ctx, {"Content-Type": "application/json"})
        )

    # ------------------------------------------------------------------ responses and records
    def _headers(self, ctx: Ctx, extra: dict) -> dict:
        overhead_ms = (time.perf_counter() - ctx.t0 - ctx.upstream_s) * 1000
        headers = {
            **extra,
            **ctx.headers,
            "x-request-id": ctx.request_id,
            "x-bonito-overhead-ms": f"{overhead_ms:.2f}",
        }
        if ctx.dep is not None:
            headers["x-bonito-model-used"] = ctx.dep.model
            headers["x-bonito-provider"] = ctx.dep.provider
        if ctx.route_tier:
            headers["x-bonito-route-tier"] = ctx.route_tier
            headers["x-bonito-route-classifier"] = ctx.route_classifier
            if ctx.route_score is not None:
                headers["x-bonito-route-score"] = f"{ctx.route_score:.4f}"
        return headers

    def _error_response(self, ctx: Ctx, exc: GatewayError) -> Outgoing:
        headers = self._headers(ctx, {"Content-Type": "application/json", **exc.headers})
        if ctx.endpoint in anthropic_api.ENDPOINTS:
            body = anthropic_api.error_body(exc, ctx.request_id)
            return Outgoing(exc.status, orjson.dumps(body), headers)
        return Outgoing(exc.status, orjson.dumps(exc.body()), headers)

    def _record(
        self,
        ctx: Ctx,
        status: str,
        http_status: int,
        error_type: str = "",
        *,
        counts: Counts = NO_TOKENS,
        cost=0.0,
        units=None,
        unit="",
    ) -> None:
        if ctx.key is None:
            return
        ctx.recorded = True
        self.sink.submit(
            {
                "id": _new_id(),
                "org_id": ctx.key.org_id,
                "key_id": ctx.key.id,
                "team_id": ctx.key.team_id,
                "endpoint": ctx.endpoint,
                "model_requested": ctx.model_requested[:200],
                "model_used": ctx.model_used,
                "provider": ctx.dep.provider if ctx.dep else "",
                "deployment": ctx.dep.label if ctx.dep else "",
                "input_tokens": counts.input,
                "output_tokens": counts.output,
                "cached_tokens": min(counts.cached, counts.input),  # as the cost reads it
                "cost": round(cost, 8),
                # What a media request was priced by: images, seconds of audio, characters.
                "units": units,
                "unit": unit,
                "latency_ms": int((time.perf_counter() - ctx.t0) * 1000),
                "ttft_ms": ctx.ttft_ms,
                "status": status,
                "http_status": http_status,
                "error_type": error_type,
                "request_id": ctx.request_id[:128],
                "source": self.source,
                "created_at": time.time(),
                "routing_policy": ctx.route_policy,
                "route_classifier": ctx.route_classifier,
                "route_score": ctx.route_score,
                "route_tier": ctx.route_tier,
                # What the same tokens would have cost on the policy's top tier: the
                # savings figure is the sum of these less the sum of cost.
                "cost_top_tier": smart.cost_top_tier(ctx.top_dep, ctx.dep, counts, cost, ctx.tier)
                if ctx.route_tier
                else None,
            }
        )


def _named_model(raw: bytes) -> str:
    """The model a refused JSON body names ("" if none): its usage row says what was asked
    for. Read only on that error path."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    model = body.get("model") if isinstance(body, dict) else None
    return unicodedata.normalize("NFC", model) if isinstance(model, str) else ""


def _fold(name: str) -> str:
    return unicodedata.normalize("NFKC", name.strip()).casefold()


def _meant(model: str, names) -> str | None:
    """The one of ``names`` (the models this key may use, the smart alias included: never
    another org's) that ``model`` differs from only by surrounding whitespace, case or
    compatibility forms ("AUTO" for "auto", " gpt-4o" for "gpt-4o"), or None. Only a 404
    pays for it."""
    folded = _fold(model)
    return next((n for n in names if n != model and _fold(n) == folded), None)


def _key_policy(ctx: Ctx):
    """The routing policy an rt- key routes through, or the 503 that says it is disabled
    or gone (every request of such a key, feedback included, is refused until an admin
    enables it again)."""
    policy = ctx.org.routing_policies.get(ctx.key.routing_policy)
    if policy is None:
        raise GatewayError(
            503,
            f"The routing policy '{ctx.key.routing_policy}' of this key is disabled or no "
            "longer exists; an org admin enables it again under Routing.",
            "server_error",
            "routing_policy_missing",
        )
    return policy


def parse_feedback(raw: bytes) -> tuple[str, float]:
    """(request id, score 0-1) of a feedback body, or a 400 naming the field."""

    def bad(message, param, code="invalid_value"):
        return GatewayError(400, message, "invalid_request_error", code, param)

    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # as the other endpoints say it: where and why; a score of 400 digits is still read
        # (Python's json), to be told its range below
        body = exact_json(raw) if "infinity" in str(exc) else None
        if not isinstance(body, dict) or not isinstance(body.get("score"), int):
            raise bad(not_json(exc, raw), None, "invalid_json") from None
    if not isinstance(body, dict):
        raise bad("The body must be a JSON object.", None, "invalid_type")
    unknown = sorted(set(body) - {"request_id", "score", "thumbs"})
    if unknown:
        raise bad(
            f"Unknown field {str(unknown[0])[:40]!r}.", str(unknown[0])[:40], "unknown_parameter"
        )
    rid = body.get("request_id")
    if rid is None:
        raise bad(
            "request_id is required: the x-request-id header of the response to rate.",
            "request_id",
            "missing_required_parameter",
        )
    # Each message says what is wrong with what was sent: a string is never told it must
    # be one, a number never told it must be a number.
    if not isinstance(rid, str):
        raise bad(
            f"request_id must be a string, not {json_type(rid)}: the x-request-id header of "
            "the response to rate.",
            "request_id",
            "invalid_type",
        )
    # Spaces and tabs around it are not part of an id (nor of the x-request-id header it
    # came from, _request_id): "a b  " rates the request "a b".
    rid = rid.strip(_OWS)
    if not rid.strip():
        raise bad(
            "request_id must not be empty: the x-request-id header of the response to rate.",
            "request_id",
            "invalid_value",
        )
    if len(rid) > 128:
        raise bad(
            f"request_id is {len(rid)} characters long; request ids have at most 128.",
            "request_id",
            "string_above_max_length",
        )
    # null is "not sent", as in the other endpoints' optional fields: {"score": null,
    # "thumbs": "up"} (an app's form with one of the two empty) rates thumbs up.
    body = {k: v for k, v in body.items() if v is not None or k == "request_id"}
    if "score" in body and "thumbs" in body:
        raise bad('Send score (0 to 1) or thumbs ("up" or "down"), not both.', "score")
    if "score" not in body and "thumbs" not in body:
        raise bad(
            'score (0 to 1) or thumbs ("up" or "down") is required.',
            "score",
            "missing_required_parameter",
        )
    if "thumbs" in body:
        thumbs = body["thumbs"]
        if not isinstance(thumbs, str):
            raise bad(
                f'thumbs must be the string "up" or "down", not {json_type(thumbs)}.',
                "thumbs",
                "invalid_type",
            )
        if thumbs not in ("up", "down"):
            raise bad(f'thumbs must be "up" or "down", not {thumbs[:20]!r}.', "thumbs")
        return rid, 1.0 if thumbs == "up" else 0.0
    score = body["score"]
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise bad(
            f"score must be a number from 0 (bad) to 1 (good), not {json_type(score)}.",
            "score",
            "invalid_type",
        )
    if not 0 <= score <= 1:
        # as sent ({:g} said a 17-digit integer was "1.23457e+16")
        if type(score) is float and score.is_integer():  # orjson's read of a 2^64 integer
            exact = exact_json(raw)
            score = exact.get("score", score) if isinstance(exact, dict) else score
        raise bad(
            f"score must be from 0 (bad) to 1 (good); it is {number_as_sent(score)}.", "score"
        )
    return rid, float(score) + 0.0  # -0.0 is 0.0 (stored and echoed without its sign)


# Optional whitespace around a field value, which is not part of it (RFC 9110 5.5).
_OWS = " \t"


def _request_id(headers) -> str:
    rid = headers.get("x-request-id", "").strip(_OWS)
    if rid and len(rid) <= 128 and rid.isascii() and rid.isprintable():
        return rid
    return "req_" + uuid.UUID(int=_random.getrandbits(128), version=4).hex


# Ids only need to be unique, not secret: a seeded PRNG avoids a syscall per request.
_random = random.Random(os.urandom(32))
os.register_at_fork(
    after_in_child=lambda: _random.seed(os.urandom(32))
)  # forked workers never share ids


def _new_id() -> str:
    return str(uuid.UUID(int=_random.getrandbits(128), version=4))


def _bearer(headers) -> str | None:
    """The request's key: from Authorization (Bearer), api-key (Azure-style clients) or
    x-api-key (Anthropic's), the one of them that is a well-formed Bonito key (a proxy in
    front, or Claude Code with an auth token, may put a token of its own in Authorization);
    else the first given, to be refused. Two different Bonito keys are a 401: which one the
    request is billed to is not guessed."""
    auth = headers.get("authorization", "")
    candidates = [
        value.strip()
        for value in (
            auth[7:] if auth[:7].lower() == "bearer " else None,
            headers.get("api-key"),
            headers.get("x-api-key"),
        )
        if value and value.strip()
    ]
    found = {c for c in candidates if keys.well_formed(c)}
    if len(found) > 1:
        raise errors.invalid_key(
            "The request carries two different API keys (in Authorization, api-key or "
            "x-api-key): send one."
        )
    return next(iter(found), None) or (candidates[0] if candidates else None)


def _is_count(value) -> bool:
    return type(value) is int and 0 <= value <= tokens.MAX_COUNT


def _usage_counts(usage, *, embeddings: bool = False) -> Counts | None:
    """The tokens of a provider's usage object; None when it is missing or not usable
    (negative, not integers, more than any request has), so the caller counts instead. Cache writes as the LiteLLM
    adapter keeps them (upstream.Usage) or an OpenAI-shaped upstream reports them."""
    if not isinstance(usage, dict) or not _is_count(usage.get("prompt_tokens")):
        return None
    output = usage.get("completion_tokens", 0 if embeddings else None)
    if not _is_count(output):
        return None
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    out_details = usage.get("completion_tokens_details")
    out_details = out_details if isinstance(out_details, dict) else {}
    return Counts(
        usage["prompt_tokens"],
        output,
        _count(details.get("cached_tokens")),
        *cache_writes(usage),
        web_searches(usage),
        _count(details.get("audio_tokens")),
        _count(out_details.get("audio_tokens")),
    )


def _count_input(endpoint: str, body: dict) -> int:
    if endpoint == "embeddings":
        return tokens.input_tokens(body)
    return tokens.count_prompt_tokens(body)


def _plain_event(raw: bytes) -> bool:
    """Whether an event can go out unparsed: a JSON object (by its braces; checked when
    it is parsed for counting) that cannot hold usage or an error (no such key in it)."""
    return (
        raw[6:7] == b"{" and raw[-3:-2] == b"}" and b'"usage"' not in raw and b'"error"' not in raw
    )


class _Seen:
    """What a relay saw that its usage row needs: the reported usage, and the output to
    count if none is reported. Content events are kept as bytes and parsed only if they
    are needed (no usage came); past KEEP_BYTES they are parsed down to their text."""

    KEEP_BYTES = 16 * 1024  # per stream: 5,000 open streams hold at most 80 MB of it
    __slots__ = ("usage", "partial", "cited", "_raw", "_size", "_pieces")

    def __init__(self):
        self.usage = None
        self.partial = None  # the usage reported before a stream broke (StreamBroken.usage)
        self.cited = False  # the answer cites the web (upstream.cited_search)
        self._raw: list[bytes] = []
        self._size = 0
        self._pieces: list[str] = []

    def keep(self, raw: bytes) -> None:
        self._raw.append(raw)
        self._size += len(raw)
        if self._size > self.KEEP_BYTES:
            self._condense()

    def _condense(self) -> None:
        raw, self._raw, self._size = self._raw, [], 0
        for event in raw:
            chunk = _parse_event(event)
            if isinstance(chunk, dict):
                self.add_pieces(chunk.get("choices"))
        self._pieces[:] = ["".join(self._pieces)]

    def add_pieces(self, choices) -> None:
        if choices and self._raw:
            self._condense()  # in order: the text is counted as one string
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._pieces.extend(tokens.output_pieces(delta))
            if isinstance(choice.get("text"), str):
                self._pieces.append(choice["text"])

    def text(self) -> str:
        self._condense()
        return self._pieces[0]


def effective_limit(*limits: int | None) -> int | None:
    """The narrowest of the limits that are set (None: unlimited)."""
    return min((x for x in limits if x), default=None)


def _limited(b: Bucket, retry_after_s: float, headers: dict) -> GatewayError:
    """The 429 of a rate limit bucket ``b`` that refused the request: the limiter's answer,
    or the one a worker remembers (Gateway._refused_before_routing)."""
    return errors.rate_limited(
        f"Rate limit reached: {b.capacity} {b.label} per minute"
        f"{' for this key' if b.scope == 'key' else ' for this organization'}. "
        f"Retry after {max(1, round(retry_after_s))}s.",
        retry_after_s,
        headers=headers,
        kind=b.unit,
    )


def _ratelimit_headers(buckets: list[Bucket], verdict: LimitResult | None) -> dict:
    """OpenAI's x-ratelimit-* headers from the limiter's verdict: the limit it applied (during
    a Redis outage a process's share of the whole) and what is left of it. None: the
    limiter could not answer."""
    out = {}
    remaining = verdict.remaining if verdict is not None else {}
    limits = verdict.limits if verdict is not None else {}
    for b in buckets:
        if b.scope != "key":  # OpenAI's headers describe the caller's own (the key's) limits
            continue
        capacity = limits.get(b.label, b.capacity)
        out[f"x-ratelimit-limit-{b.unit}"] = str(capacity)
        if b.label not in remaining:
            continue  # not known: better no header than a full bucket
        left = min(capacity, max(0, remaining[b.label]))
        reset_s = (capacity - left) * 60 / capacity
        out[f"x-ratelimit-remaining-{b.unit}"] = str(left)
        out[f"x-ratelimit-reset-{b.unit}"] = f"{reset_s:.3g}s"
    return out


def _within_context(ctx: Ctx, candidates: list[DeploymentInfo]) -> list[DeploymentInfo]:
    """The candidates whose context window (where known) holds the prompt's counted tokens
    (ctx.prompt_tokens; 0: not counted), in order. When none does, the one with the largest
    window alone: its provider's answer (a context_length_exceeded) is the client's."""
    need = ctx.prompt_tokens
    if not need:
        return candidates
    fit = [d for d in candidates if not d.max_input_tokens or d.max_input_tokens >= need]
    if len(fit) < len(candidates):
        skipped = [d.label for d in candidates if d not in fit]
        log.info("%d prompt tokens: past the context window of %s", need, ", ".join(skipped))
    return fit or [max(candidates, key=lambda d: d.max_input_tokens)]


def _taking_images(ctx: Ctx, candidates: list[DeploymentInfo]) -> list[DeploymentInfo]:
    """For a prompt with images, the candidates whose model may read them (LiteLLM's map
    does not say it cannot), in order: one that cannot is not called to refuse. When none
    may, all of them: the catalog may not know a deployment's model, and the provider's
    own answer is the client's."""
    if not ctx.images:
        return candidates
    fit = [d for d in candidates if d.images is not False]
    if fit and len(fit) < len(candidates):
        skipped = [d.label for d in candidates if d.images is False]
        log.info("a prompt with images: passed over %s (no images)", ", ".join(skipped))
    return fit or candidates


async def _watch(ctx: Ctx, receive, task: asyncio.Task) -> None:
    """Cancel ``task`` when the client leaves (ASGI http.disconnect; the body was read)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    ctx.gone = True
    task.cancel()


def _share(remaining: float, later: int) -> float:
    """The time an attempt with ``later`` candidates after it may take of the ``remaining``
    deadline (to its first output for a stream, to its whole answer otherwise): an equal
    share, so each candidate gets its turn; the last one gets all that is left."""
    return remaining / (later + 1)


def _what_failed(ctx: Ctx, candidates: list[DeploymentInfo]) -> str:
    """What the 502's "Every deployment of … failed" (the 504's, the 429's) names: "this model", or for a
    smart-routed request (asked for ``auto``, several models tried) the tiers it went
    through, and the org's fallback models after them."""
    if not ctx.route_tier:
        return "this model"
    models = list(dict.fromkeys(d.model for d in candidates))
    fallbacks = [m for m in models if m in ctx.org.fallback_models]
    tiers = [m for m in models if m not in fallbacks]

    def named(kind: str, names: list[str]) -> str:
        return f"{kind}{'s' if len(names) > 1 else ''} {', '.join(names)}"

    said = [named("tier", tiers)] if tiers else []
    if fallbacks:
        said.append(named("fallback model", fallbacks))
    return " and of ".join(said)


def _timed_out(
    final: list[UpstreamError], untried: int, timeout_s: float, what: str = "this model"
) -> str:
    """The 504's message: what the last round's deployments did, when the last of them
    timed out; ``what``: the model, or a smart-routed request's tiers (_what_failed)."""
    timed = sum(1 for exc in final if exc.timeout)
    if timed == len(final) and not untried:
        # The deadline, or the deployments' own timeouts (in the attempts' own words) when
        # those ended the last round first.
        last = final[-1]
        own = f"last: {last}" if last.own_timeout else f"the request's deadline: {timeout_s:g} s"
        return f"Every deployment of {what} timed out ({own})."
    said = [f"{timed} of the deployments tried timed out"]
    others = [exc for exc in final if not exc.timeout]
    if others:
        said.append(f"{len(others)} failed (last: {others[-1]})")
    if untried:
        said.append(f"{untried} could not be tried before the deadline ({timeout_s:g} s)")
    return "; ".join(said) + "."


def _passthrough_error(exc: UpstreamError) -> GatewayError:
    body = exc.body.get("error") if isinstance(exc.body, dict) else None
    if isinstance(body, dict):
        # OpenAI's shape whatever the provider sent: strings (or null), never its numbers,
        # lists or objects.
        def text(value):
            return value[:200] if isinstance(value, str) and value else None

        code = (
            text(body.get("code")) if not isinstance(body.get("code"), int) else str(body["code"])
        )
        if exc.too_long and code is None:  # (Anthropic's, Gemini's: OpenAI's code for all)
            code = "context_length_exceeded"
        return GatewayError(
            exc.status,
            str(body.get("message") or exc),
            text(body.get("type")) or "invalid_request_error",
            code,
            text(body.get("param")),
            error_type="upstream_" + str(exc.status),
        )
    return GatewayError(
        exc.status or 502,
        str(exc),
        "invalid_request_error",
        None,
        error_type="upstream_" + str(exc.status),
    )


def _refuse_if_budget_spent(key: KeyInfo, org: OrgInfo) -> None:
    now = time.time()
    for scope in ("org", f"team:{key.team_id}", f"key:{key.id}"):
        block = org.blocked.get(scope)
        # past its period's end (a new month before the facts are read again) it has lifted
        if block is not None and block.until > now:
            raise GatewayError(
                429,
                block.reason,
                "insufficient_quota",
                "budget_exceeded",
                headers={"Retry-After": str(max(1, int(block.until - now)))},
            )
