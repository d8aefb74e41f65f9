"""ASGI entry point: HTTP through Django, WebSockets through Channels (auth + origin check)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatapp.settings")
# Django must be set up before importing code that touches models.
django_asgi_app = get_asgi_application()

from typing import Any  # noqa: E402

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.urls import path  # noqa: E402

from accounts.auth import WebsocketAuthStack  # noqa: E402
from chatapp.middleware import API_MIDDLEWARE, API_PREFIX  # noqa: E402
from chatapp.origin import SameOriginValidator  # noqa: E402
from threads.consumers import ThreadConsumer  # noqa: E402


class ApiASGIHandler(ASGIHandler):
    """Django's handler with the async-only API_MIDDLEWARE instead of MIDDLEWARE (no thread hops)."""

    def load_middleware(self, is_async: bool = False) -> None:
        # BaseHandler.load_middleware reads settings.MIDDLEWARE; swap it for the duration of the call
        # (once, at start-up, before any request is served).
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = API_MIDDLEWARE
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full


api_asgi_app = ApiASGIHandler()


async def http_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The send and thread endpoints take the lean handler; everything else the full stack."""
    app = api_asgi_app if scope["path"].startswith(API_PREFIX) else django_asgi_app
    await app(scope, receive, send)


websocket_urlpatterns = [path("ws/threads/<int:thread_id>/", ThreadConsumer.as_asgi())]

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": SameOriginValidator(WebsocketAuthStack(URLRouter(websocket_urlpatterns))),
    }
)
