"""The dashboard Playground: a conversation sent through the org's own gateway, with its
tokens, cost and latency; optionally two models side by side. It runs in the server's event
loop, like a /v1 request, under the user's Playground key (so the org's policies, limits
and budgets apply and every request is in Logs and Usage).

Without JavaScript the form posts and the page comes back with the answers (the
conversation travels in a hidden field). With it (static/js/playground.js) each model's
answer streams from ``playground_stream``: the gateway's own SSE events, relayed as they
come, then one ``event: result`` with what the request cost."""

import asyncio
import contextlib
import dataclasses
import time
import uuid

import orjson
from asgiref.sync import sync_to_async
from django.db import transaction
from django.http import JsonResponse, StreamingHttpResponse
from django.shortcuts import render

from orgs.audit import Actor
from orgs.permissions import org_view

from . import services
from .catalog import answers_chat
from .dataplane import keys_check
from .dataplane.proxy import Incoming, Outgoing
from .dataplane.snapshot import KeyInfo
from .models import ApiKey, ModelCatalogEntry
from .runtime import gateway, snapshots
from .snapshot_builder import key_info, load_orgs

MAX_TURNS = 40  # earlier messages in one conversation
MAX_MESSAGE_CHARS = 32_000
MAX_SYSTEM_CHARS = 16_000
MAX_CONVERSATION_CHARS = 200_000
MAX_OUTPUT_TOKENS = 32_768
# A choice of the model menu that is a routing policy: the turn is sent as an rt- key of
# that policy would send it (the user's Playground key, bound to the policy for the turn).
POLICY = "policy:"


class Menu(list):
    """The model menu's choices: the chat models, then the routing policies (``POLICY``
    and a policy's name), ``policies`` telling them apart: a model may be named
    "policy:x" itself (a model's name may hold a colon), and is then a model."""

    def __init__(self, models=(), policies=()):
        super().__init__([*models, *policies])
        self.policies = frozenset(policies)


@transaction.atomic
def playground_key(*, actor: Actor, org, user, membership=None) -> ApiKey:
    """The user's Playground key in this org (created once; its raw value is never kept).
    A member's is on their team, as any key they make, and follows them to another team:
    the Playground spends within the team budget they are under."""
    name = f"Playground ({user.email})"
    key = ApiKey.objects.for_org(org).active().filter(name=name, created_by=user).first()
    if key is None:
        key, _raw = services.api_key_create(actor=actor, org=org, name=name, membership=membership)
    elif (
        membership is not None
        and not membership.has_role("admin")
        and key.team_id != membership.team_id
    ):
        key = services.api_key_update(actor=actor, key=key, team=membership.team)
    return key


def _prepare(request, org) -> tuple[KeyInfo, Menu]:
    """The user's Playground key as the data plane sees it, read from the database now (a
    key made a moment ago works before the process's snapshot has it), and what it may
    send a turn to: the chat models it may use, then the routing policies (``POLICY`` and
    a policy's name) whose models include one."""
    key = key_info(
        playground_key(
            actor=Actor.from_request(request, via="playground"),
            org=org,
            user=request.user,
            membership=request.membership,
        )
    )
    return key, chat_models(org, key)


def _models_to_show(request, org) -> Menu:
    """For the page (any member, viewers included): the chat models of the user's
    Playground key if it exists, or of a key with no scopes of its own — without creating
    one."""
    name = f"Playground ({request.user.email})"
    key = ApiKey.objects.for_org(org).active().filter(name=name, created_by=request.user).first()
    info = key_info(key) if key else KeyInfo(id=0, org_id=org.id, name=name)
    return chat_models(org, info)


def chat_models(org, key: KeyInfo) -> Menu:
    """The models this key may call (as /v1/models lists them) that answer chat: a model
    whose deployments the catalog knows only as embedding, image, audio… models is left out,
    and so is one it does not know whose name says it embeds. Then each active routing
    policy (``POLICY`` + its name) through which this key, bound to it as an rt- key is,
    reaches such a model: a smart policy can be tried before any app has its rt- key."""
    info = load_orgs([org.id]).get(org.id)
    if info is None:
        return Menu()
    names = keys_check.permitted_models(key, info)
    bound = {
        policy: keys_check.permitted_models(dataclasses.replace(key, routing_policy=policy), info)
        for policy in info.routing_policies
    }
    tiers = info.smart.tiers if info.smart is not None else ()
    reached = {*names, *tiers, *(m for models in bound.values() for m in models)}
    deps = [d for name in reached for d in info.deployments.get(name, ())]
    modes = dict(
        ModelCatalogEntry.objects.filter(
            name__in={d.upstream_model for d in deps} | reached
        ).values_list("name", "mode")
    )

    def chat(name: str) -> bool:
        if name == info.auto_model and tiers:  # smart routing's alias: its tiers answer
            return any(chat(tier) for tier in tiers if tier != name)
        return any(
            answers_chat(name, dep.upstream_model, modes) for dep in info.deployments.get(name, ())
        )

    models = sorted(n for n in names if chat(n))
    policies = sorted(
        POLICY + policy
        for policy, reach in bound.items()
        if any(chat(m) for m in reach) and POLICY + policy not in models
    )
    return Menu(models, policies)


def label(choice: str, menu: Menu) -> str:
    """How the page names a choice of the model menu."""
    if choice in menu.policies:
        return f"routing policy {choice.removeprefix(POLICY)}"
    return choice


def routed(key: KeyInfo, choice: str, menu: Menu) -> tuple[KeyInfo, str]:
    """The key and model a turn sent to ``choice`` (a model, or ``POLICY`` and a routing
    policy's name: one of ``menu.policies``) is sent with: a policy's turn goes as its rt-
    key's would (whatever the model field names: the policy's name here, recorded as the
    model requested). A model named like a policy choice ("policy:x") is sent as a model."""
    if choice in menu.policies and not key.routing_policy:
        policy = choice.removeprefix(POLICY)
        return dataclasses.replace(key, routing_policy=policy), policy
    return key, choice


class TurnError(ValueError):
    pass


def _number(raw: str, kind, low, high, label):
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise TurnError(f"{label} must be a number.") from None
    if not low <= value <= high:
        raise TurnError(f"{label} must be between {low} and {high}.")
    return value


def parse_turn(data, models: list[str]) -> dict:
    """The form's fields, checked: what a turn sends. Raises TurnError with a message for
    the user."""
    model, compare = data.get("model", ""), data.get("compare", "")
    if model not in models:
        raise TurnError("Choose one of the listed models.")
    if compare and (compare not in models or compare == model):
        raise TurnError("Compare with another of the listed models, or with none.")
    message = (data.get("message") or "").strip()
    if not message:
        raise TurnError("Write a message.")
    if len(message) > MAX_MESSAGE_CHARS:
        raise TurnError(f"The message is longer than {MAX_MESSAGE_CHARS:,} characters.")
    system = (data.get("system") or "").strip()
    if len(system) > MAX_SYSTEM_CHARS:
        raise TurnError(f"The system prompt is longer than {MAX_SYSTEM_CHARS:,} characters.")
    try:
        history = orjson.loads(data.get("history") or "[]")
    except orjson.JSONDecodeError:
        raise TurnError("The conversation could not be read; start a new one.") from None
    if (
        not isinstance(history, list)
        or len(history) > MAX_TURNS
        or not all(
            isinstance(m, dict)
            and set(m) == {"role", "content"}
            and m["role"] in ("user", "assistant")
            and isinstance(m["content"], str)
            for m in history
        )
    ):
        raise TurnError(
            f"The conversation could not be read (at most {MAX_TURNS} earlier messages); "
            "start a new one."
        )
    if sum(len(m["content"]) for m in history) + len(message) > MAX_CONVERSATION_CHARS:
        raise TurnError("The conversation is too long for the Playground; start a new one.")
    return {
        "model": model,
        "compare": compare,
        "message": message,
        "system": system,
        "history": history,
        "temperature": _number(data.get("temperature"), float, 0.0, 2.0, "Temperature"),
        "max_tokens": _number(data.get("max_tokens"), int, 1, MAX_OUTPUT_TOKENS, "Max tokens"),
    }


def request_body(turn: dict, model: str, *, stream: bool) -> bytes:
    messages = [{"role": "system", "content": turn["system"]}] if turn["system"] else []
    messages += turn["history"] + [{"role": "user", "content": turn["message"]}]
    body = {"model": model, "messages": messages}
    for name in ("temperature", "max_tokens"):
        if turn[name] is not None:
            body[name] = turn[name]
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return orjson.dumps(body)


POLICY_WAIT_S = 2.0  # a few of the snapshot's polls (GATEWAY_SNAPSHOT_POLL_S, 0.5 s)


async def _policy_served(key: KeyInfo) -> None:
    """Until the process's snapshot serves the key's routing policy, or POLICY_WAIT_S: the
    menu reads the database, the gateway its snapshot, so a policy created or enabled a
    moment ago answered "disabled or no longer exists" to the turn sent to it."""
    deadline = time.monotonic() + POLICY_WAIT_S
    while time.monotonic() < deadline:
        snap = snapshots().current
        org = snap.orgs.get(key.org_id) if snap is not None else None
        if org is not None and key.routing_policy in org.routing_policies:
            return
        await asyncio.sleep(0.05)


async def _send(key: KeyInfo, body: bytes) -> tuple[Outgoing, float]:
    if key.routing_policy:
        await _policy_served(key)
    started = time.perf_counter()
    out = await gateway().handle(
        Incoming(
            endpoint="chat",
            headers={"x-request-id": f"playground_{uuid.uuid4().hex}"},
            body=body,
            key=key,
        )
    )
    return out, started


def _meta(out: Outgoing, started: float) -> dict:
    return {
        "status": out.status,
        "model_used": out.headers.get("x-bonito-model-used", "—"),
        "provider": out.headers.get("x-bonito-provider", "—"),
        "overhead_ms": out.headers.get("x-bonito-overhead-ms"),
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        "cost": out.cost or 0.0,  # the data plane's, as in the usage record
        "request_id": out.headers.get("x-request-id"),
        # smart routing's choice (a request for `auto` or an rt- key of a smart policy)
        "route": _route(out.headers),
    }


def _route(headers) -> str:
    """'tier <tier>, score <score> (<classifier>)', as the response's headers say, or ''
    when the request was not smart-routed. The score is the header's (4 decimals)."""
    tier = headers.get("x-bonito-route-tier")
    if not tier:
        return ""
    classifier = headers.get("x-bonito-route-classifier", "")
    score = headers.get("x-bonito-route-score")
    said = f"tier {tier}" + (f", score {score}" if score else "")
    return said + (f" ({classifier})" if classifier else "")


async def _answer(key: KeyInfo, turn: dict, model: str, menu: Menu) -> dict:
    sent_key, sent_model = routed(key, model, menu)
    out, started = await _send(sent_key, request_body(turn, sent_model, stream=False))
    data = orjson.loads(out.body)
    ok = out.status == 200
    return {
        **_meta(out, started),
        "model": label(model, menu),
        "ok": ok,
        "content": (data.get("choices") or [{}])[0].get("message", {}).get("content")
        if ok
        else data.get("error", {}).get("message"),
        "usage": data.get("usage") or {},
    }


@org_view("viewer", write_role="member")
async def playground(request):
    org = request.org
    if request.method == "POST":
        key, models = await sync_to_async(_prepare)(request, org)
    else:
        key, models = None, await sync_to_async(_models_to_show)(request, org)
    context = {
        "section": "playground",
        "models": models,
        "model_options": [m for m in models if m not in models.policies],
        "policy_options": [(m, m.removeprefix(POLICY)) for m in models if m in models.policies],
        "results": [],
        "form": {"message": "Say hello in one sentence.", "model": models[0] if models else ""},
        "history": [],
        "history_json": "[]",
        "error": None,
        "limits": {"max_tokens": MAX_OUTPUT_TOKENS},
    }
    status = 200
    if request.method == "POST" and request.POST.get("new"):  # New conversation: settings kept
        kept = ("model", "compare", "system", "temperature", "max_tokens")
        context["form"] = {k: request.POST.get(k, "") for k in kept} | {"message": ""}
    elif request.method == "POST":
        fields = ("model", "compare", "message", "system", "temperature", "max_tokens")
        context["form"] = {k: request.POST.get(k, "") for k in fields}
        try:
            turn = parse_turn(request.POST, models)
        except TurnError as exc:
            context["error"], status = str(exc), 400
            context["history_json"] = request.POST.get("history", "[]")
        else:
            wanted = [turn["model"]] + ([turn["compare"]] if turn["compare"] else [])
            results = await asyncio.gather(*(_answer(key, turn, m, models) for m in wanted))
            history = list(turn["history"])
            if results[0]["ok"]:  # the conversation goes on with the first model's answer
                history += [
                    {"role": "user", "content": turn["message"]},
                    {"role": "assistant", "content": results[0]["content"] or ""},
                ]
                context["form"]["message"] = ""
            context.update(
                results=results, history=history, history_json=orjson.dumps(history).decode()
            )
    response = await sync_to_async(render)(request, "gateway/playground.html", context)
    response.status_code = status
    return response


@org_view("member")
async def playground_stream(request):
    """POST: one model's answer to a turn as a stream of the gateway's SSE events, then
    ``event: result`` with the request's status, cost, latency and request id."""
    if request.method != "POST":
        return JsonResponse({"error": "POST a turn."}, status=405)
    key, models = await sync_to_async(_prepare)(request, request.org)
    try:
        turn = parse_turn(request.POST, models)
    except TurnError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    model = turn["compare"] if request.POST.get("pane") == "compare" else turn["model"]
    if not model:
        return JsonResponse({"error": "Nothing to compare with."}, status=400)
    sent_key, sent_model = routed(key, model, models)
    out, started = await _send(sent_key, request_body(turn, sent_model, stream=True))

    async def events():
        if out.stream is not None:
            # Closed with this generator: a reader who leaves cancels the upstream call
            # and the request is recorded as the client's disconnect.
            async with contextlib.aclosing(out.stream) as chunks:
                async for chunk in chunks:
                    yield chunk
            meta = _meta(out, started)
        else:  # refused or failed before streaming: the gateway's error, as JSON
            error = orjson.loads(out.body).get("error", {})
            meta = {**_meta(out, started), "error": error.get("message", "")}
        yield (
            b"event: result\ndata: "
            + orjson.dumps({**meta, "model": label(model, models)})
            + b"\n\n"
        )

    response = StreamingHttpResponse(events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
