"""API tokens in Django admin: created hashed (the secret shown once, on the answer to the add form),
revoked through the service, never un-revoked or handed to another user."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from accounts.models import ApiToken
from accounts.tokens import api_token_revoke, token_generate, token_hash

# The secret of the token this add request just created, from save_model to response_add (one call of
# changeform_view, so one context); never stored, never put in the message framework's cookie.
_new_secret: ContextVar[str | None] = ContextVar("new_api_token_secret", default=None)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["prefix", "user", "name", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["user__username", "name", "prefix"]
    fields = ["user", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> list[str]:
        # Revoking is the action's (through the service); a token keeps the user it was made for.
        readonly = ["prefix", "created_at", "last_used_at", "revoked_at"]
        return readonly if obj is None else ["user", *readonly]

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if not change:
            raw = token_generate()
            obj.prefix, obj.key_hash = raw[:12], token_hash(raw)
            _new_secret.set(raw)
        super().save_model(request, obj, form, change)

    def response_add(
        self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None
    ) -> HttpResponse:
        """The one page that shows the secret, instead of a redirect carrying it in a message."""
        raw = _new_secret.get()
        if raw is None:  # not created by save_model (cannot happen through the add form)
            return super().response_add(request, obj, post_url_continue)
        _new_secret.set(None)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "token": obj,
            "raw_token": raw,
            "title": "API token created",
        }
        response = TemplateResponse(request, "admin/accounts/apitoken/created.html", context)
        response["Cache-Control"] = "no-store"  # no copy of the secret in any cache
        return response

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        # Row by row through the service, not queryset.update(): saving each one drops it from the
        # token cache and closes its WebSockets (accounts/signals.py).
        n = api_token_revoke(tokens=queryset)
        messages.info(request, f"Revoked {n} token(s).")
