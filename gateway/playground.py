"""The dashboard Playground: a chat sent through the org's own gateway, with its tokens,
cost and latency. It runs in the server's event loop, like a /v1 request."""

import time
import uuid

import orjson
from asgiref.sync import sync_to_async
from django.db import transaction
from django.shortcuts import render

from orgs.audit import Actor
from orgs.permissions import org_view

from . import services
from .dataplane.proxy import Incoming
from .dataplane.snapshot import KeyInfo
from .models import ApiKey, Deployment
from .runtime import gateway
from .snapshot_builder import key_info


@transaction.atomic
def playground_key(*, actor: Actor, org, user) -> ApiKey:
    """The user's Playground key in this org (created once; its raw value is never kept)."""
    name = f"Playground ({user.email})"
    key = ApiKey.objects.for_org(org).active().filter(name=name, created_by=user).first()
    if key is None:
        key, _raw = services.api_key_create(actor=actor, org=org, name=name)
    return key


def _prepare(request, org) -> KeyInfo:
    """The user's Playground key as the data plane sees it, read from the database now: a
    key made a moment ago works before the process's snapshot has it."""
    key = playground_key(
        actor=Actor.from_request(request, via="playground"), org=org, user=request.user
    )
    return key_info(key)


@org_view("viewer", write_role="member")
async def playground(request):
    org = request.org
    models = [
        m
        async for m in Deployment.objects.for_org(org)
        .filter(is_active=True)
        .values_list("model_name", flat=True)
        .distinct()
        .order_by("model_name")
    ]
    context = {
        "section": "playground",
        "models": models,
        "result": None,
        "message": "Say hello in one sentence.",
        "model": models[0] if models else "",
    }
    if request.method == "POST":
        model, message = request.POST.get("model", ""), request.POST.get("message", "").strip()
        context.update(model=model, message=message)
        key = await sync_to_async(_prepare)(request, org)
        body = orjson.dumps(
            {"model": model, "messages": [{"role": "user", "content": message or "Hello"}]}
        )
        started = time.perf_counter()
        out = await gateway().handle(
            Incoming(
                endpoint="chat",
                headers={"x-request-id": f"playground_{uuid.uuid4().hex}"},
                body=body,
                key=key,
            )
        )
        latency_ms = (time.perf_counter() - started) * 1000
        data = orjson.loads(out.body)
        usage = data.get("usage") or {}
        context["result"] = {
            "ok": out.status == 200,
            "status": out.status,
            "content": (data.get("choices") or [{}])[0].get("message", {}).get("content")
            if out.status == 200
            else data.get("error", {}).get("message"),
            "usage": usage,
            "model_used": out.headers.get("x-bonito-model-used", "—"),
            "provider": out.headers.get("x-bonito-provider", "—"),
            "overhead_ms": out.headers.get("x-bonito-overhead-ms"),
            "latency_ms": round(latency_ms, 1),
            "cost": out.cost or 0.0,  # the data plane's, as in the usage record
            "request_id": out.headers.get("x-request-id"),
        }
    return await sync_to_async(render)(request, "gateway/playground.html", context)
