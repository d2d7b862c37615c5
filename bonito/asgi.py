"""ASGI entry point: HTTP through Django, WebSockets through channels, and the lifespan."""

import asyncio
import logging
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bonito.settings")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi = get_asgi_application()

from django.http.request import split_domain_port, validate_host  # noqa: E402

from gateway import runtime  # noqa: E402
from gateway.asgi_v1 import V1App  # noqa: E402


def _host_allowed(host: str) -> bool:
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import URLRouter  # noqa: E402
from channels.security.websocket import WebsocketDenier  # noqa: E402
from django.urls import path, re_path  # noqa: E402

from billing.consumers import LogTailConsumer  # noqa: E402
from bonito.body_cap import BodyCap  # noqa: E402
from bonito.ws_origin import SameOriginValidator  # noqa: E402


class Lifespan:
    """The ASGI lifespan protocol, which channels' router does not speak: at startup the
    usage sink stores what stopped processes left in their journals; at shutdown (after
    the last response) it writes what is queued. uvicorn runs with `--lifespan on`."""

    def __init__(self, app):
        self.app = app

    def __getattr__(self, name):  # the router's own attributes (application_mapping)
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)
        while True:
            message = await receive()
            step = message["type"].removeprefix("lifespan.")
            try:
                if step == "startup":
                    runtime.startup()  # in the event loop's thread, like the first request
                else:
                    await asyncio.to_thread(runtime.shutdown)
            except Exception as exc:
                logging.getLogger("bonito.asgi").exception("lifespan %s failed", step)
                await send({"type": f"lifespan.{step}.failed", "message": str(exc)})
                return
            await send({"type": f"lifespan.{step}.complete"})
            if step == "shutdown":
                return


# /v1 is served by a lean ASGI app; everything else by Django; sockets by channels.
router = ProtocolTypeRouter(
    {
        "http": V1App(
            BodyCap(django_asgi, settings.DATA_UPLOAD_MAX_MEMORY_SIZE),
            settings.GATEWAY_MAX_BODY_BYTES,
            _host_allowed,
            runtime.gateway,
        ),
        # The live tail is the one WebSocket endpoint; a handshake anywhere else is refused
        # (uvicorn answers a 403), as one the origin check refuses: the router, with no
        # route for it, raised (a plain-text 500 and a traceback in the log).
        "websocket": URLRouter(
            [
                path(
                    "ws/o/<slug:org_slug>/logs/",
                    SameOriginValidator(AuthMiddlewareStack(LogTailConsumer.as_asgi())),
                ),
                re_path(r"", WebsocketDenier.as_asgi()),
            ]
        ),
    }
)
application = Lifespan(router)
