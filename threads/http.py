"""Adapters between Django requests and the use cases: auth, CSRF for session callers, JSON errors."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import RequestDataTooBig
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from accounts.auth import request_user
from core.outages import DEPENDENCY_DOWN
from ops import metrics
from threads import errors, events
from threads.validation import InvalidInput

log = logging.getLogger(__name__)

ApiView = Callable[..., Awaitable[HttpResponseBase]]


# orjson with Django's formats for what JSON has no type for (datetimes to the millisecond, Decimal, lazy
# text: DjangoJSONEncoder's `default`); non-ASCII text is written as UTF-8 rather than \u escapes.
_JSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS
_django_json = DjangoJSONEncoder().default


def json_response(data: Any, status: int = 200) -> HttpResponse:
    """An API answer. orjson, not Django's JsonResponse: 4 us against 16 us for a send's answer (timeit,
    this machine), which a process builds ~500 times in one turn when a burst's reply is done."""
    body = orjson.dumps(data, default=_django_json, option=_JSON_OPTIONS)
    return HttpResponse(body, status=status, content_type="application/json")


def error_response(code: str, message: str, status: int, *, retry_after: float | None = None) -> HttpResponse:
    resp = json_response(events.error_body(code, message), status=status)
    if retry_after is not None:
        resp["Retry-After"] = errors.retry_after_header(retry_after)
    return resp


def exception_response(exc: BaseException, request: HttpRequest) -> HttpResponse:
    """The JSON error of threads/errors.py's table for `exc`; a bug is logged and answered 500."""
    err = errors.client_error(exc)
    if err is None:
        # Never an HTML error page under /api/, even with DEBUG on: log it, answer JSON.
        log.exception("unhandled error in %s %s", request.method, request.path)
        err = errors.INTERNAL_ERROR
    elif err.outage:
        log.warning("dependency down: %s: %s", type(exc).__name__, exc)
    elif err.rejected:
        metrics.request("rejected")
    return error_response(err.code, err.message, err.status, retry_after=err.retry_after)


def _csrf_failure(request: HttpRequest) -> HttpResponse | None:
    check = CsrfViewMiddleware(lambda r: HttpResponse())
    # process_view only reads the request; it does no I/O, so calling it on the event loop is fine.
    rejected = check.process_view(request, lambda r: HttpResponse(), (), {})
    return rejected


def api_view(methods: set[str]) -> Callable[[ApiView], Any]:
    """Async JSON API view: method check, authentication (Bearer token or session), CSRF for session
    callers, and translation of domain exceptions into the JSON errors of docs/api.md."""

    def deco(view: ApiView) -> Any:
        @csrf_exempt
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in methods:
                resp = error_response("method_not_allowed", f"Use {' or '.join(sorted(methods))}.", 405)
                resp["Allow"] = ", ".join(sorted(methods))
                return resp
            try:
                user, how = await request_user(request)
            except DEPENDENCY_DOWN as exc:  # the token lookup needs the database
                return exception_response(exc, request)
            if how == "none":
                return error_response(
                    "unauthenticated",
                    "Log in, or send 'Authorization: Bearer <token>' with an API token.",
                    401,
                )
            if (
                how == "session"
                and request.method not in {"GET", "HEAD", "OPTIONS"}
                and _csrf_failure(request)
            ):
                return error_response(
                    "csrf_failed", "CSRF check failed: send the csrftoken cookie's value in X-CSRFToken.", 403
                )
            request.user = user  # type: ignore[assignment]
            request.auth_method = how  # type: ignore[attr-defined]  # 'token' or 'session'
            try:
                return await view(request, *args, **kwargs)
            except Exception as exc:
                return exception_response(exc, request)

        return wrapper

    return deco


def body_json(request: HttpRequest) -> dict[str, Any]:
    """The body's JSON object. A body over MAX_BODY_BYTES never gets here under daphne (the ASGI cap in
    chatapp/bodylimit.py answers 413 before reading it); Django's own check, set to the same number
    (DATA_UPLOAD_MAX_MEMORY_SIZE), covers the other entry points, such as the test client."""
    from threads.validation import parse_json_object

    try:
        raw = request.body
    except RequestDataTooBig as exc:
        raise InvalidInput(
            "body_too_large", f"The body is larger than {settings.MAX_BODY_BYTES} bytes.", status=413
        ) from exc
    ctype = request.content_type or ""
    if raw and ctype not in ("application/json", "") and not ctype.endswith("+json"):
        raise InvalidInput("unsupported_media_type", "Send the body as application/json.", status=415)
    return parse_json_object(raw)


def authed_user(request: HttpRequest) -> AbstractBaseUser:
    return request.user  # type: ignore[return-value]


def sse(event: Mapping[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()
