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


def _shown_once(
    model_admin: admin.ModelAdmin, request: HttpRequest, template: str, context: dict[str, Any]
) -> HttpResponse:
    """The answer to an add form that shows a secret (a token, an invitation link) this one time."""
    full = {**model_admin.admin_site.each_context(request), "opts": model_admin.opts, **context}
    response = TemplateResponse(request, template, full)
    response["Cache-Control"] = "no-store"  # no copy of the secret in any cache
    return response


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
        if not change:
            from accounts.audit import audit_record
            from accounts.models import AuditEvent

            audit_record(
                kind=AuditEvent.TOKEN_CREATED,
                user=obj.user,
                actor=request.user,
                request=request,
                detail={"token": obj.pk, "name": obj.name},
            )

    def response_add(
        self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None
    ) -> HttpResponse:
        """The one page that shows the secret, instead of a redirect carrying it in a message."""
        raw = _new_secret.get()
        if raw is None:  # not created by save_model (cannot happen through the add form)
            return super().response_add(request, obj, post_url_continue)
        _new_secret.set(None)
        context = {"token": obj, "raw_token": raw, "title": "API token created"}
        return _shown_once(self, request, "admin/accounts/apitoken/created.html", context)

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        # Row by row through the service, not queryset.update(): saving each one drops it from the
        # token cache and closes its WebSockets (accounts/signals.py).
        n = api_token_revoke(tokens=queryset, request=request, actor=request.user)
        messages.info(request, f"Revoked {n} token(s).")


# --- Accounts (#20): log-in through allauth, audit log, invitations, approval ---------------------------

from allauth.account.decorators import secure_admin_login  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.auth.admin import UserAdmin  # noqa: E402
from django.db import transaction  # noqa: E402
from django.urls import reverse  # noqa: E402
from django.utils import timezone  # noqa: E402

from accounts.audit import audit_record  # noqa: E402
from accounts.invitations import invitation_create  # noqa: E402
from accounts.models import AuditEvent, Invitation  # noqa: E402

# Admin's own log-in form would skip allauth's throttling and second factor: send it to allauth's.
admin.site.login = secure_admin_login(admin.site.login)  # type: ignore[method-assign]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["at", "kind", "username", "address", "actor"]
    list_filter = ["kind"]
    search_fields = ["username", "address"]
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # only retention (accounts/retention.py, manage.py prune_audit) deletes rows


# The key of the invitation this add request just made, from save_model to response_add (as tokens).
_new_invitation_key: ContextVar[str | None] = ContextVar("new_invitation_key", default=None)


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    """Invitations store only a hash of their link's key: the link is on the answer to the add form,
    once (not in a message: Django's messages ride in a readable cookie)."""

    list_display = ["note", "state", "created_by", "created_at", "expires_at", "used_by", "used_at"]
    fields = ["note"]

    @admin.display(description="State")
    def state(self, obj: Invitation) -> str:
        if obj.used_at is not None:
            return "used"
        return "expired" if obj.expires_at <= timezone.now() else "waiting (link shown at creation)"

    def save_model(self, request: HttpRequest, obj: Invitation, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        made, key = invitation_create(created_by=request.user, note=obj.note)
        obj.pk, obj.key_hash, obj.expires_at = made.pk, made.key_hash, made.expires_at
        _new_invitation_key.set(key)

    def response_add(
        self, request: HttpRequest, obj: Invitation, post_url_continue: str | None = None
    ) -> HttpResponse:
        key = _new_invitation_key.get()
        if key is None:  # not made by save_model (cannot happen through the add form)
            return super().response_add(request, obj, post_url_continue)
        _new_invitation_key.set(None)
        link = request.build_absolute_uri(reverse("account_invitation", args=[key]))
        context = {"invitation": obj, "link": link, "title": "Invitation created"}
        return _shown_once(self, request, "admin/accounts/invitation/created.html", context)


User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class ChatUserAdmin(UserAdmin):
    """Django's user admin, with approval of accounts waiting under SIGNUP_MODE=approval."""

    actions = ["approve"]
    list_display = ["username", "email", "is_active", "is_staff", "date_joined", "last_login"]

    @admin.action(description="Approve selected accounts (activate them)")
    def approve(self, request: HttpRequest, queryset: Any) -> None:
        n = 0
        with transaction.atomic():
            for user in queryset.filter(is_active=False):
                user.is_active = True
                user.save(update_fields=["is_active"])
                audit_record(kind=AuditEvent.APPROVED, user=user, actor=request.user, request=request)
                n += 1
        messages.info(request, f"Approved {n} account(s).")
