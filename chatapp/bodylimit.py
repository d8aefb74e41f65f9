"""A cap on HTTP request bodies, enforced while they arrive (ASGI middleware around the HTTP app).

Django's ASGI handler reads the whole body into a temporary file before any view or setting looks at
it, and its own limit (DATA_UPLOAD_MAX_MEMORY_SIZE) trusts the Content-Length header: a chunked body
(no Content-Length) or one longer than its header is read whole. This wrapper answers `413` as soon as
the header announces more than MAX_BODY_BYTES or the bytes received pass it, before Django reads or
parses anything, and `400` for a Content-Length that is not a number. It also answers `400` for a
query string that is not UTF-8, which Django would refuse with an HTML page. JSON under /api/ (docs/api.md),
plain text elsewhere. The decision is `threads.limits.body_verdict` (pure).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.conf import settings

from threads.limits import body_verdict, declared_length

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

_ANSWERS = {
    "too_large": (413, "body_too_large", "The request body is larger than {limit} bytes."),
    "bad_length": (400, "invalid_content_length", "The Content-Length header is not a number of bytes."),
    "bad_query": (400, "invalid_query_string", "The query string is not UTF-8: percent-encode it."),
}


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return bytes(value)
    return None


async def _answer(scope: Scope, send: Send, verdict: str, limit: int) -> None:
    status, code, message = _ANSWERS[verdict]
    text = message.format(limit=limit)
    if str(scope.get("path", "")).startswith("/api/"):
        body, ctype = json.dumps({"error": {"code": code, "message": text}}).encode(), b"application/json"
    else:
        body, ctype = text.encode(), b"text/plain; charset=utf-8"
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    # The rest of the body is never read: tell the client this connection ends with the answer.
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Wraps an ASGI HTTP app; other scope types pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = int(settings.MAX_BODY_BYTES)
        declared = declared_length(_header(scope, b"content-length"))
        verdict = body_verdict(declared=declared, received=0, limit=limit)
        if not _utf8(bytes(scope.get("query_string") or b"")):
            verdict = "bad_query"
        if verdict != "ok":
            await _answer(scope, send, verdict, limit)
            return
        received, refused = 0, False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if body_verdict(declared=declared, received=received, limit=limit) != "ok":
                    # Tell the app the client left: Django then drops what it buffered (closing its
                    # temporary file) and returns without answering; the 413 is ours to send.
                    refused = True
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, counting_receive, send)
        if refused:
            await _answer(scope, send, "too_large", limit)
