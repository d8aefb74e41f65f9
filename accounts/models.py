"""API tokens: stored hashed (SHA-256 of a 256-bit random secret), shown once at creation."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.sessions.base_session import AbstractBaseSession
from django.db import models


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, default="")
    # A short, non-secret prefix so staff can tell tokens apart in admin.
    prefix = models.CharField(max_length=12, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # None: never expires. Past it the token stops authenticating (accounts/tokens.py user_for_token).
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"


class AuditEvent(models.Model):
    """Who did what to an account, from where: kept AUDIT_RETENTION_DAYS (accounts/retention.py)."""

    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    LOGIN_THROTTLED = "login_throttled"
    LOGOUT = "logout"
    PASSWORD_CHANGED = "password_changed"
    PASSWORD_RESET = "password_reset"
    MFA_ADDED = "mfa_added"
    MFA_REMOVED = "mfa_removed"
    TOKEN_CREATED = "token_created"
    TOKEN_REVOKED = "token_revoked"
    SIGNED_UP = "signed_up"
    APPROVED = "approved"
    SESSIONS_ENDED = "sessions_ended"
    KINDS = [
        (LOGIN, "Logged in"),
        (LOGIN_FAILED, "Log-in failed"),
        (LOGIN_THROTTLED, "Log-in refused (too many failures)"),
        (LOGOUT, "Logged out"),
        (PASSWORD_CHANGED, "Password changed"),
        (PASSWORD_RESET, "Password reset"),
        (MFA_ADDED, "Second factor added"),
        (MFA_REMOVED, "Second factor removed"),
        (TOKEN_CREATED, "API token created"),
        (TOKEN_REVOKED, "API token revoked"),
        (SIGNED_UP, "Signed up"),
        (APPROVED, "Approved by staff"),
        (SESSIONS_ENDED, "Other sessions ended"),
    ]

    at = models.DateTimeField(db_index=True)
    kind = models.CharField(max_length=32, choices=KINDS)
    # The account concerned (None: a failed log-in for a name that matches nobody); the name is kept
    # as typed or as it was, so a row outlives a deleted user.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    username = models.CharField(max_length=150, blank=True, default="")
    # Who acted, when not the user (staff approving, revoking in admin).
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    address = models.GenericIPAddressField(null=True, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.kind} {self.username}"


class Invitation(models.Model):
    """A sign-up link staff hand out (SIGNUP_MODE=closed): good once, until it expires."""

    # SHA-256 of the link's key (192 random bits, accounts/invitations.py): the link itself is shown to
    # staff once, at creation, and stored nowhere.
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    note = models.CharField(max_length=200, blank=True, default="", help_text="Who it is for.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Invitation {self.pk} ({self.note or 'no note'})"


class Session(AbstractBaseSession):
    """A Django session that names its user (accounts/sessions.py, SESSION_ENGINE), so ending a user's
    sessions reaches every one of them, not only those allauth's usersessions tracks."""

    # No database constraint: a session saved just as its user is deleted must not fail the request;
    # deleting a user through the ORM still deletes their sessions.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        db_constraint=False,
        related_name="+",
    )

    @classmethod
    def get_session_store_class(cls) -> Any:
        from accounts.sessions import SessionStore

        return SessionStore
