"""Content-Security-Policy on every HTML response: django-csp's middleware, with the policy in
`settings.CONTENT_SECURITY_POLICY`.

Pages load scripts, styles and images from this origin only: no inline `<script>`, no `on…=` handler
attributes, no `style="…"` attributes, no `eval`. So an injected `<script>` (for example through model
output, which threads/markdown.py already sanitises) does not run. `<script type="application/json">`
data blocks (`json_script`) are data, not scripts, and are unaffected. WebSockets go to this host
(`connect-src`): browsers disagree on whether `'self'` covers `ws:`/`wss:`, so the socket URL of the
requesting host is named too. JSON answers get no policy: they are not rendered as documents.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from csp.middleware import CSPMiddleware, PolicyParts
from csp.utils import DIRECTIVES_T
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest
from django.http.response import HttpResponseBase


def socket_sources(*, host: str | None, secure: bool) -> DIRECTIVES_T:
    """The policy's additions for a page served to `host` (None when the Host header is not allowed)."""
    return {"connect-src": [f"{'wss' if secure else 'ws'}://{host}"]} if host else {}


def _host(request: HttpRequest) -> str | None:
    try:
        return request.get_host()
    except DisallowedHost:
        return None


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's `CSPMiddleware`, for HTML answers only, naming the page's own socket URL."""

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        # MiddlewareMixin would run both hooks through sync_to_async (two thread hops per page); they do
        # no I/O, so they run on the loop.
        self.process_request(request)
        get_response = cast(Callable[[HttpRequest], Awaitable[HttpResponseBase]], self.get_response)
        return self.process_response(request, await get_response(request))

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if not response.get("Content-Type", "").startswith("text/html"):
            return response
        return super().process_response(request, response)

    def get_policy_parts(
        self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only=report_only)
        if not report_only:
            extra: dict[str, Any] = socket_sources(host=_host(request), secure=request.is_secure())
            for directive, sources in (parts.update or {}).items():  # a view's own @csp_update
                listed = list(sources) if isinstance(sources, list | tuple | set) else [sources]
                extra[directive] = [*extra.get(directive, []), *listed]
            parts.update = extra
        return parts
