"""Threads and their messages.

A send writes one user message and one assistant message that share the send's `request_id`.
The assistant message is created `streaming` and finalized once (compare-and-set on `status`).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Thread(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="threads")
    title = models.CharField(max_length=200, blank=True, default="")
    provider = models.CharField(max_length=32)
    model = models.CharField(max_length=128)
    # Sent before the conversation, the way the thread's provider expects (providers/_*.py).
    system_prompt = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The conversation tree (#18): the end of the branch shown and continued; null before any message.
    current_leaf = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False
    )
    # Archived threads leave the list and stay searchable.
    archived = models.BooleanField(default=False)

    class Meta:
        indexes = [
            models.Index(fields=["owner", "-updated_at", "-id"], name="thread_owner_recent"),
            models.Index(fields=["owner", "archived", "-updated_at", "-id"], name="thread_owner_listed"),
        ]

    def __str__(self) -> str:
        return self.title or f"Thread {self.pk}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        COMPLETE = "complete"
        STREAMING = "streaming"
        CANCELLED = "cancelled"
        ERROR = "error"

    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    # The send that produced this message: the client's idempotency key and the handle for cancel.
    request_id = models.CharField(max_length=64)
    # The message this one answers (user -> the thread head it was sent after; assistant -> its user message).
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    # User messages of a coalesced send carry the burst's key: the database then refuses a second pair
    # for one burst even when two processes race (cleared when a later, legitimate repeat reuses it).
    coalesce_key = models.CharField(max_length=64, null=True, blank=True, default=None)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    # null until the provider says why it stopped: a failed or streaming reply has no reason to show.
    finish_reason = models.CharField(max_length=32, null=True, blank=True, default=None)
    error_code = models.CharField(max_length=64, blank=True, default="")
    error_message = models.CharField(max_length=500, blank=True, default="")
    # What the provider really said (ProviderError.detail: its URL, the upstream's words, which can name
    # the operator's organisation): for staff in admin, never in a payload a user or viewer gets. A
    # database default too: processes still on the code before it insert rows without it.
    error_detail = models.TextField(blank=True, default="", db_default="")
    # The model that answered ("<connection>/<model>"): a thread may switch model between sends.
    model_id = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        ordering = ["id"]
        constraints = [
            # One user and one assistant message per send: a retried or raced request cannot write twice.
            models.UniqueConstraint(
                fields=["thread", "request_id", "role"], name="message_one_per_request_role"
            ),
            models.UniqueConstraint(
                fields=["thread", "coalesce_key"],
                condition=Q(coalesce_key__isnull=False),
                name="message_one_pair_per_burst",
            ),
            models.CheckConstraint(condition=Q(role__in=["user", "assistant"]), name="message_role_valid"),
            models.CheckConstraint(
                condition=Q(status__in=["complete", "streaming", "cancelled", "error"]),
                name="message_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(role="assistant") | Q(status="complete"), name="message_user_always_complete"
            ),
        ]
        indexes = [
            models.Index(fields=["thread", "id"], name="message_thread_order"),
            models.Index(fields=["request_id"], name="message_request"),
            models.Index(
                fields=["status", "updated_at"], name="message_streaming", condition=Q(status="streaming")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role} #{self.pk} ({self.status})"


class FailedReply(Message):
    """Replies that ended `error`, as staff see them in admin: with the provider's own words."""

    class Meta:
        proxy = True
        verbose_name = "failed reply"
        verbose_name_plural = "failed replies"


class ChatPreferences(models.Model):
    """A user's chat defaults: the system prompt new threads start with."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_preferences"
    )
    system_prompt = models.TextField(blank=True, default="")

    def __str__(self) -> str:
        return f"Chat preferences of user {self.user_id}"


class ShareLink(models.Model):
    """A read-only snapshot of a thread anyone with the link can open at /s/<token> (#18): the branch
    that was current when shared (its leaf then; messages are never edited, so the path up from it is
    the thread as it was). Deleting the row revokes the link."""

    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="share_links")
    # secrets.token_urlsafe(24): 192 random bits, unguessable.
    token = models.CharField(max_length=64, unique=True)
    leaf = models.ForeignKey(Message, null=True, on_delete=models.CASCADE, related_name="+")
    title = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"share of thread {self.thread_id}"
