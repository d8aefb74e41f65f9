"""Failed replies in admin, read-only, with what the provider really said (#16 item 9): users and
viewers get a code and a fixed sentence; the detail (the base URL, the upstream's words, which can name
the operator's organisation) is logged and shown here, to staff only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from threads.models import FailedReply, Message

SHOWN = (
    "thread",
    "request_id",
    "model_id",
    "error_code",
    "error_message",
    "error_detail",
    "created_at",
    "updated_at",
)


@admin.register(FailedReply)
class FailedReplyAdmin(admin.ModelAdmin):
    list_display = ["id", "thread_id", "error_code", "model_id", "updated_at"]
    list_filter = ["error_code"]
    search_fields = ["error_code", "error_detail", "request_id"]
    fields = readonly_fields = SHOWN
    ordering = ["-id"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        return super().get_queryset(request).filter(status=Message.Status.ERROR)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
