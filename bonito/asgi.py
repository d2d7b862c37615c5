"""ASGI entry point: HTTP through Django, WebSockets through channels."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bonito.settings")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi = get_asgi_application()

from gateway.asgi_limits import BodyLimit  # noqa: E402

application = ProtocolTypeRouter({"http": BodyLimit(django_asgi, settings.GATEWAY_MAX_BODY_BYTES)})
