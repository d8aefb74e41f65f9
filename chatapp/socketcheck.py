"""GET /api/socket-check: why this page's WebSocket would be refused, for the page to say so.

A refused handshake reaches a browser as a bare close 1006, the same as a server that is down; the page
asks here once its socket fails before opening, then tells the person what is wrong (signed out, this
address not allowed, plain http...) instead of reconnecting forever. The same rules as the handshake:
chatapp/origin.py for Origin and Host, the session for the user, the thread's visibility.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, JsonResponse

from chatapp.origin import REFUSALS, origin_refusal
from threads import chat

NOT_AUTHENTICATED = "You are signed out: log in again."
NOT_FOUND = "This thread no longer exists, or is not yours."


def _answer(code: str | None, message: str = "") -> JsonResponse:
    reason = {"code": code, "message": message} if code else None
    return JsonResponse({"ok": code is None, "reason": reason}, headers={"Cache-Control": "no-store"})


async def socket_check(request: HttpRequest) -> JsonResponse:
    """`?origin=<the page's location.origin>&thread=<id>` -> `{"ok": bool, "reason": {code, message} | null}`."""
    if request.method != "GET":
        return JsonResponse(
            {"error": {"code": "method_not_allowed", "message": "Use GET."}},
            status=405,
            headers={"Allow": "GET"},
        )
    refusal = origin_refusal(
        request.GET.get("origin") or None,
        bearer=False,
        host=request.META.get("HTTP_HOST"),
        allowed_hosts=settings.ALLOWED_HOSTS,
        trusted_origins=settings.CSRF_TRUSTED_ORIGINS,
        debug=settings.DEBUG,
    )
    if refusal:
        return _answer(refusal, REFUSALS[refusal])
    user = await request.auser()
    if not user.is_authenticated:
        return _answer("unauthenticated", NOT_AUTHENTICATED)
    thread_id = request.GET.get("thread", "")
    if thread_id.isdigit() and len(thread_id) < 19:
        if await chat.thread_for_send(user=user, thread_id=int(thread_id)) is None:
            return _answer("not_found", NOT_FOUND)
    return _answer(None)
