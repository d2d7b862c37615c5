"""/v1: the OpenAI-compatible API (django-ninja, async). Thin glue over dataplane.proxy."""

import orjson
from django.http import HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI

from .dataplane.proxy import Incoming, Outgoing
from .runtime import gateway

api = NinjaAPI(
    title="Bonito gateway", version="1", urls_namespace="v1", docs_url=None, openapi_url=None
)


def _headers(request) -> dict:
    return {k.lower(): v for k, v in request.headers.items()}


def _respond(out: Outgoing):
    if out.stream is not None:
        response = StreamingHttpResponse(out.stream, status=out.status)
    else:
        response = HttpResponse(out.body, status=out.status)
    for name, value in out.headers.items():
        response[name] = value
    return response


async def _handle(request, endpoint, model_id=None):
    incoming = Incoming(
        endpoint=endpoint,
        headers=_headers(request),
        body=request.body if request.method == "POST" else b"",
        model_id=model_id,
        too_large=getattr(request, "scope", {}).get("bonito.body_too_large", False),
    )
    return _respond(await gateway().handle(incoming))


@api.post("/chat/completions")
async def chat_completions(request):
    return await _handle(request, "chat")


@api.post("/completions")
async def completions(request):
    return await _handle(request, "completions")


@api.post("/embeddings")
async def embeddings(request):
    return await _handle(request, "embeddings")


@api.get("/models")
async def models(request):
    return await _handle(request, "models")


@api.get("/models/{path:model_id}")
async def model(request, model_id: str):
    return await _handle(request, "model", model_id)


@api.api_operation(["GET", "PUT", "PATCH", "DELETE"], "/chat/completions")
async def chat_wrong_method(request):
    return method_not_allowed(request)


@api.api_operation(["GET", "PUT", "PATCH", "DELETE"], "/completions")
async def completions_wrong_method(request):
    return method_not_allowed(request)


@api.api_operation(["GET", "PUT", "PATCH", "DELETE"], "/embeddings")
async def embeddings_wrong_method(request):
    return method_not_allowed(request)


def method_not_allowed(request):
    body = orjson.dumps(
        {
            "error": {
                "message": f"{request.method} is not allowed on {request.path}; use POST.",
                "type": "invalid_request_error",
                "param": None,
                "code": "method_not_allowed",
            }
        }
    )
    response = HttpResponse(body, status=405, content_type="application/json")
    response["Allow"] = "POST"
    return response


@csrf_exempt
def not_found(request, rest=""):
    body = (
        b'{"error": {"message": "Unknown path /v1/'
        + rest.encode("utf-8", "replace")[:200]
        + b'. See the OpenAI API reference for supported endpoints.", "type": "invalid_request_error",'
        b' "param": null, "code": "unknown_url"}}'
    )
    return HttpResponse(body, status=404, content_type="application/json")
