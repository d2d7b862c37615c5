"""The dashboard Playground: a chat sent through the org's own gateway, with its tokens,
cost and latency. It runs in the server's event loop, like a /v1 request."""

import time
import uuid

import orjson
from asgiref.sync import sync_to_async
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404
from django.shortcuts import render

from orgs.audit import Actor
from orgs.models import Membership

from . import services
from .dataplane import state
from .dataplane.proxy import Incoming
from .models import ApiKey, Deployment
from .runtime import gateway


@transaction.atomic
def playground_key(*, actor: Actor, org, user) -> ApiKey:
    """The user's Playground key in this org (created once; its raw value is never kept)."""
    name = f"Playground ({user.email})"
    key = ApiKey.objects.for_org(org).active().filter(name=name, created_by=user).first()
    if key is None:
        key, _raw = services.api_key_create(actor=actor, org=org, name=name)
    return key


def _prepare(request, org):
    key = playground_key(
        actor=Actor.from_request(request, via="playground"), org=org, user=request.user
    )
    snap = state.current()
    if snap is None or key.key_hash not in snap.keys:
        from .snapshot_builder import build_snapshot

        gateway()
        state.publish(build_snapshot())  # a new key: publish now rather than wait for the poller
    return key


def _cost(org_id, model_used, provider, usage) -> float:
    snap = state.current()
    org = snap.orgs.get(org_id) if snap else None
    for dep in org.deployments.get(model_used, ()) if org else ():
        if dep.provider == provider:
            return (
                usage.get("prompt_tokens", 0) * dep.input_cost
                + usage.get("completion_tokens", 0) * dep.output_cost
            )
    return 0.0


async def playground(request, org_slug):
    user = await request.auser()
    if not user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    membership = (
        await Membership.objects.select_related("org")
        .filter(org__slug=org_slug, user=user)
        .afirst()
    )
    if membership is None:
        raise Http404("No such organization.")
    request.org, request.membership = membership.org, membership
    org = membership.org
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
        if not membership.has_role("member"):
            raise PermissionDenied("The Playground needs the member role.")
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
                key_hash=key.key_hash,
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
            "cost": _cost(
                org.id,
                out.headers.get("x-bonito-model-used"),
                out.headers.get("x-bonito-provider"),
                usage,
            ),
            "request_id": out.headers.get("x-request-id"),
        }
    return await sync_to_async(render)(request, "gateway/playground.html", context)
