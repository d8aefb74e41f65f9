from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest

from accounts.models import ApiToken
from accounts.tokens import api_token_revoke, token_generate, token_hash


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["prefix", "user", "name", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["user__username", "name", "prefix"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]
    fields = ["user", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if not change:
            raw = token_generate()
            obj.prefix, obj.key_hash = raw[:12], token_hash(raw)
            messages.warning(request, f"New token (copy it now, it is not shown again): {raw}")
        super().save_model(request, obj, form, change)

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        # Row by row through the service, not queryset.update(): saving each one drops it from the
        # token cache and closes its WebSockets (accounts/signals.py, then threads/signals.py).
        n = api_token_revoke(tokens=queryset)
        messages.info(request, f"Revoked {n} token(s).")
