"""Content-Security-Policy on every HTML response (Django 5.2 has none built in).

Pages load scripts, styles and images from this origin only: no inline `<script>`, no `on…=` handler
attributes, no `style="…"` attributes, no `eval`. So an injected `<script>` (for example through model
output, which threads/markdown.py already sanitises) does not run. `<script type="application/json">`
data blocks (`json_script`) are data, not scripts, and are unaffected. WebSockets go to this host
(`connect-src`): browsers disagree on whether `'self'` covers `ws:`/`wss:`, so the socket URL of the
requesting host is named too. JSON answers get no policy: they are not rendered as documents.

Both sync- and async-capable: under ASGI it adds no thread hop of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest
from django.http.response import HttpResponseBase

BASE_POLICY = (
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
)


def csp_header(*, host: str | None, secure: bool) -> str:
    """The policy for a page served to `host` (None when the Host header is not an allowed one)."""
    connect = "connect-src 'self'"
    if host:
        connect += f" {'wss' if secure else 'ws'}://{host}"
    return "; ".join((*BASE_POLICY, connect))


class ContentSecurityPolicyMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        return self._add_header(request, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        return self._add_header(request, await get_response(request))

    @staticmethod
    def _add_header(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if not response.get("Content-Type", "").startswith("text/html"):
            return response
        try:
            host: str | None = request.get_host()
        except DisallowedHost:
            host = None
        response.headers.setdefault(
            "Content-Security-Policy", csp_header(host=host, secure=request.is_secure())
        )
        return response
