"""Account pages of our own: the settings page (profile, password, two-factor, connected accounts, API
tokens, sessions) and invitation links. allauth serves the rest under /accounts/."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from accounts.invitations import invitation_find, invitation_remember
from accounts.sessions import other_session_count
from accounts.tokens import (
    MAX_EXPIRES_IN_DAYS,
    MAX_TOKEN_NAME_CHARS,
    api_token_create,
    api_token_list_for_user,
    api_token_revoke_own,
    token_expiry,
)


class TokenForm(forms.Form):
    name = forms.CharField(max_length=MAX_TOKEN_NAME_CHARS, required=True)
    expires_in_days = forms.IntegerField(
        min_value=1, max_value=MAX_EXPIRES_IN_DAYS, required=False, help_text="Empty: never expires."
    )


def _settings_context(request: HttpRequest) -> dict[str, Any]:
    from allauth.account.models import EmailAddress
    from allauth.mfa.models import Authenticator
    from allauth.socialaccount.models import SocialAccount
    from allauth.usersessions.models import UserSession

    user = request.user
    kinds = set(Authenticator.objects.filter(user=user).values_list("type", flat=True))
    sessions = UserSession.objects.purge_and_list(user)
    return {
        "emails": list(EmailAddress.objects.filter(user=user)),
        "has_totp": Authenticator.Type.TOTP in kinds,
        "has_recovery_codes": Authenticator.Type.RECOVERY_CODES in kinds,
        "has_webauthn": Authenticator.Type.WEBAUTHN in kinds,
        "social_accounts": list(SocialAccount.objects.filter(user=user)),
        "tokens": api_token_list_for_user(user=user),
        "sessions": sessions,
        # Counted in the session store: sessions allauth never listed (made before the migration, or
        # used only by the API) end too.
        "other_sessions": other_session_count(user_id=int(user.pk or 0), current=request.session.session_key),
    }


@login_required
@require_http_methods(["GET", "POST"])
def settings_page(request: HttpRequest) -> HttpResponse:
    """GET: the page. POST action=create_token: the page again, with the new secret shown once (never
    redirected through a message); POST action=revoke_token: revoke one, back to the page."""
    form = TokenForm()
    new_secret = None
    action = request.POST.get("action") if request.method == "POST" else None
    if action == "create_token":
        form = TokenForm(request.POST)
        if form.is_valid():
            expires_at = token_expiry(
                expires_in_days=form.cleaned_data["expires_in_days"], now=timezone.now()
            )
            _, new_secret = api_token_create(
                user=request.user,  # type: ignore[arg-type]
                name=form.cleaned_data["name"],
                expires_at=expires_at,
                request=request,
            )
            form = TokenForm()
    elif action == "revoke_token":
        try:
            token_id = int(request.POST.get("token_id", ""))
        except ValueError:
            token_id = 0
        if api_token_revoke_own(user=request.user, token_id=token_id, request=request):
            messages.success(request, "Token revoked: it no longer works.")
        else:
            messages.error(request, "No such token.")
        return redirect("account_settings")
    context = {**_settings_context(request), "token_form": form, "new_secret": new_secret}
    status = 400 if form.errors else 200
    response = render(request, "accounts/settings.html", context, status=status)
    if new_secret:
        response["Cache-Control"] = "no-store"  # no copy of the secret in any cache
    return response


def invitation(request: HttpRequest, key: str) -> HttpResponse:
    """An invitation link: remembered in the session, then on to sign-up."""
    if invitation_find(key) is None:
        return render(request, "accounts/invitation_invalid.html", status=404)
    invitation_remember(request=request, key=key)
    return redirect("account_signup")
