"""Reads. Every function returns plain data (dicts) or a model instance with what callers need loaded."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from threads import events
from threads.models import Message, Thread

PAGE_SIZE = 50


def thread_visible_to(*, user: AbstractBaseUser | AnonymousUser, thread_id: int) -> Thread | None:
    """The thread if `user` may see it (its owner, or staff); None otherwise (the API then says 404)."""
    qs = Thread.objects.filter(pk=thread_id)
    if not getattr(user, "is_staff", False):
        qs = qs.filter(owner_id=user.pk)
    return qs.first()


def thread_list_for_user(
    *, user: AbstractBaseUser, before: int | None = None, limit: int = PAGE_SIZE
) -> dict[str, Any]:
    """Newest first, keyset-paginated on (updated_at, id) via the id of the last thread of the previous page."""
    qs = Thread.objects.filter(owner_id=user.pk).order_by("-updated_at", "-id")
    if before is not None:
        anchor = Thread.objects.filter(owner_id=user.pk, pk=before).values("updated_at", "id").first()
        if anchor is not None:
            qs = qs.filter(updated_at__lte=anchor["updated_at"]).exclude(
                updated_at=anchor["updated_at"], id__gte=anchor["id"]
            )
    rows = list(qs[: limit + 1])
    page = rows[:limit]
    return {
        "threads": [events.thread_data(t) for t in page],
        "next_before": page[-1].id if len(rows) > limit else None,
    }


def message_list(*, thread_id: int) -> list[dict[str, Any]]:
    return [events.message_data(m) for m in Message.objects.filter(thread_id=thread_id).order_by("id")]


def thread_detail(*, thread: Thread) -> dict[str, Any]:
    return {**events.thread_data(thread), "messages": message_list(thread_id=thread.pk)}


def thread_head_id(*, thread_id: int) -> int | None:
    return Message.objects.filter(thread_id=thread_id).order_by("-id").values_list("id", flat=True).first()


def assistant_for_request(*, user: AbstractBaseUser, request_id: str) -> Message | None:
    """The assistant message of a send, if `user` may act on it."""
    qs = Message.objects.select_related("thread").filter(request_id=request_id, role=Message.Role.ASSISTANT)
    if not getattr(user, "is_staff", False):
        qs = qs.filter(thread__owner_id=user.pk)
    return qs.order_by("-id").first()
