"""ASGI entry point: HTTP through Django, WebSockets through Channels (auth + origin check)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatapp.settings")
# Django must be set up before importing code that touches models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from accounts.auth import WebsocketAuthStack  # noqa: E402
from chatapp.origin import SameOriginValidator  # noqa: E402
from threads.consumers import ThreadConsumer  # noqa: E402

websocket_urlpatterns = [path("ws/threads/<int:thread_id>/", ThreadConsumer.as_asgi())]

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": SameOriginValidator(WebsocketAuthStack(URLRouter(websocket_urlpatterns))),
    }
)
