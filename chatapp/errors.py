"""Error handlers: JSON under /api/ (docs/api.md: never an HTML error page there), HTML elsewhere."""

from __future__ import annotations

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import csrf, defaults


def _json(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler400: Django's answer to a SuspiciousOperation, such as a Host ALLOWED_HOSTS refuses."""
    if request.path.startswith("/api/"):
        if isinstance(exception, DisallowedHost):
            return _json("invalid_host", "The Host header names no site this server serves.", 400)
        return _json("bad_request", "The request could not be understood.", 400)
    return defaults.bad_request(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith("/api/"):
        return _json("not_found", "No such endpoint.", 404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return _json("internal_error", "Something went wrong on our side; it has been logged.", 500)
    return defaults.server_error(request)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: the 403 of a session-authenticated write without a valid CSRF token."""
    if request.path.startswith("/api/"):
        return _json(
            "csrf_failed", "CSRF check failed: send the csrftoken cookie's value in X-CSRFToken.", 403
        )
    return csrf.csrf_failure(request, reason)
