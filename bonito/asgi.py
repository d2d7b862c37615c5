"""ASGI entry point: HTTP through Django, WebSockets through channels."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bonito.settings")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi = get_asgi_application()

from django.http.request import split_domain_port, validate_host  # noqa: E402

from gateway.asgi_v1 import V1App  # noqa: E402


def _host_allowed(host: str) -> bool:
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from billing.consumers import LogTailConsumer  # noqa: E402
from bonito.ws_origin import SameOriginValidator  # noqa: E402

# /v1 is served by a lean ASGI app; everything else by Django; sockets by channels.
application = ProtocolTypeRouter(
    {
        "http": V1App(django_asgi, settings.GATEWAY_MAX_BODY_BYTES, _host_allowed),
        "websocket": SameOriginValidator(
            AuthMiddlewareStack(
                URLRouter([path("ws/o/<slug:org_slug>/logs/", LogTailConsumer.as_asgi())])
            )
        ),
    }
)
