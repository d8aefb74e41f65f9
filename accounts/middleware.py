"""Staff need a second factor: a staff member without one who opens admin is sent to set up TOTP first
(and comes back to admin after). Other paths cost nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.contrib import messages
from django.http import HttpRequest, HttpResponseRedirect
from django.http.response import HttpResponseBase
from django.urls import reverse

ADMIN_PREFIX = "/admin/"


def needs_mfa_setup(*, path: str, is_staff: bool, has_mfa: bool) -> bool:
    """Is this request to be sent to set up a second factor (pure)?"""
    return path.startswith(ADMIN_PREFIX) and is_staff and not has_mfa


def user_has_mfa(user: Any) -> bool:
    from allauth.mfa.models import Authenticator

    return Authenticator.objects.filter(
        user=user, type__in=[Authenticator.Type.TOTP, Authenticator.Type.WEBAUTHN]
    ).exists()


def _setup_redirect(request: HttpRequest) -> HttpResponseRedirect:
    messages.warning(request, "Staff accounts need two-factor authentication: set it up to open admin.")
    return HttpResponseRedirect(
        f"{reverse('mfa_activate_totp')}?{urlencode({'next': request.get_full_path()})}"
    )


class StaffMfaMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        if request.path.startswith(ADMIN_PREFIX):
            user = request.user
            if needs_mfa_setup(
                path=request.path,
                is_staff=bool(user.is_authenticated and user.is_staff),
                has_mfa=bool(user.is_authenticated and user.is_staff and user_has_mfa(user)),
            ):
                return _setup_redirect(request)
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        if request.path.startswith(ADMIN_PREFIX):
            from asgiref.sync import sync_to_async

            user = await request.auser()
            if user.is_authenticated and user.is_staff:
                has = await sync_to_async(user_has_mfa)(user)
                if needs_mfa_setup(path=request.path, is_staff=True, has_mfa=has):
                    return await sync_to_async(_setup_redirect)(request)
        return await get_response(request)
