"""Reads. Every function returns plain data (dicts) or a model instance with what callers need loaded."""

from __future__ import annotations

import datetime
from collections.abc import Collection
from typing import Any, TypedDict

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection
from django.db.models import Case, IntegerField, Value, When
from django.utils import timezone

from threads import events, usage
from threads.limits import id_in_range
from threads.models import Message, Thread

PAGE_SIZE = 50
# The largest `?limit=` of a thread's messages (HISTORY_PAGE_SIZE is the default).
MAX_HISTORY_LIMIT = 200
# A history page stops growing past this many characters of content (its newest message always comes):
# even fully JSON-escaped (6 bytes a character) that is about 600 KB, well under WS_MAX_BUFFER_BYTES, so
# a healthy client is never closed for the size of a snapshot.
PAGE_MAX_CHARS = 100_000


class StreamingRow(TypedDict):
    """A `streaming` assistant message as the sweeps see it; times are Unix timestamps."""

    id: int
    request_id: str
    thread_id: int
    created: float
    updated: float


def thread_visible_to(*, user: AbstractBaseUser | AnonymousUser, thread_id: int) -> Thread | None:
    """The thread if `user` may see it (its owner, or staff); None otherwise (the API then says 404)."""
    thread = thread_by_id(thread_id=thread_id)
    return thread if thread is not None and may_see(user, thread) else None


def thread_by_id(*, thread_id: int) -> Thread | None:
    if not id_in_range(thread_id):  # a path id past BIGINT: the database would raise, not miss
        return None
    return Thread.objects.filter(pk=thread_id).first()


def may_see(user: AbstractBaseUser | AnonymousUser, thread: Thread) -> bool:
    """Its owner and staff may see a thread."""
    return bool(getattr(user, "is_staff", False)) or thread.owner_id == user.pk


def thread_list_for_user(
    *, user: AbstractBaseUser, before: int | None = None, limit: int = PAGE_SIZE, archived: bool = False
) -> dict[str, Any]:
    """Newest first, keyset-paginated on (updated_at, id) via the id of the last thread of the previous page;
    the archived threads, or (by default) the others."""
    qs = Thread.objects.filter(owner_id=user.pk, archived=archived).order_by("-updated_at", "-id")
    if before is not None:
        anchor = Thread.objects.filter(owner_id=user.pk, pk=before).values("updated_at", "id").first()
        if anchor is not None:
            qs = qs.filter(updated_at__lte=anchor["updated_at"]).exclude(
                updated_at=anchor["updated_at"], id__gte=anchor["id"]
            )
    rows = list(qs[: limit + 1])
    page = rows[:limit]
    spent = usage.thread_usage([t.pk for t in page])
    return {
        "threads": [{**events.thread_data(t), "usage": spent[t.pk]} for t in page],
        "next_before": page[-1].id if len(rows) > limit else None,
        "next_cursor": str(page[-1].id) if len(rows) > limit else None,
    }


def message_page(
    *, thread_id: int, before: int | None = None, limit: int | None = None
) -> events.MessagePage:
    """The newest `limit` (HISTORY_PAGE_SIZE) messages of the thread with ids below `before` (any, when
    None), at most PAGE_MAX_CHARS of content, oldest first. One query on the (thread, id) index."""
    limit = settings.HISTORY_PAGE_SIZE if limit is None else limit
    qs = Message.objects.filter(thread_id=thread_id)
    if before is not None:
        qs = qs.filter(id__lt=before)
    rows = list(qs.order_by("-id")[: limit + 1])
    has_more = len(rows) > limit
    page: list[Message] = []
    chars = 0
    for m in rows[:limit]:  # newest first
        chars += len(m.content)
        if page and chars > PAGE_MAX_CHARS:
            has_more = True
            break
        page.append(m)
    messages = usage.messages_with_usage([events.message_data(m) for m in reversed(page)])
    return {"messages": messages, "has_more": has_more}


def thread_detail(*, thread: Thread, before: int | None = None, limit: int | None = None) -> dict[str, Any]:
    """The thread with one page of its messages (message_page)."""
    return {
        **usage.thread_with_usage(events.thread_data(thread)),
        **message_page(thread_id=thread.pk, before=before, limit=limit),
    }


def message_by_id(*, message_id: int) -> events.MessageData | None:
    msg = Message.objects.filter(pk=message_id).first()
    return None if msg is None else usage.messages_with_usage([events.message_data(msg)])[0]


def assistant_for_request(*, user: AbstractBaseUser, request_id: str) -> Message | None:
    """The assistant message of a send, if `user` may act on it. A request_id is unique only per
    thread: the user's own messages come first (staff may act on anyone's, after their own), and
    among them one still streaming, then the newest."""
    qs = Message.objects.filter(request_id=request_id, role=Message.Role.ASSISTANT).annotate(
        mine=Case(
            When(thread__owner_id=user.pk, then=Value(0)), default=Value(1), output_field=IntegerField()
        ),
        live=Case(
            When(status=Message.Status.STREAMING, then=Value(0)),
            default=Value(1),
            output_field=IntegerField(),
        ),
    )
    if not getattr(user, "is_staff", False):
        qs = qs.filter(mine=0)
    return qs.order_by("mine", "live", "-id").first()


# What the burst anchor needs in one statement: the newest user message, its reply, and the thread's
# head. Plain SQL: it is on every send's way to the provider, and compiling it through the ORM took
# three times as long as running it (1.8 ms against 0.6 ms on PostgreSQL, measured).
_LAST_EXCHANGE_SQL = """
SELECT u.content, u.parent_id, r.status, r.updated_at,
       COALESCE((SELECT th.current_leaf_id FROM {th} th WHERE th.id = %s),
                (SELECT h.id FROM {t} h WHERE h.thread_id = %s ORDER BY h.id DESC LIMIT 1))
FROM {t} u LEFT JOIN {t} r ON r.parent_id = u.id AND r.role = %s
WHERE u.thread_id = %s AND u.role = %s
ORDER BY u.id DESC LIMIT 1
"""


def last_exchange(*, thread_id: int) -> dict[str, Any]:
    """The thread's head (its current leaf) and its newest user message with its reply: what the burst
    anchor needs."""
    sql = _LAST_EXCHANGE_SQL.format(
        t=connection.ops.quote_name(Message._meta.db_table),
        th=connection.ops.quote_name(Thread._meta.db_table),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [thread_id, thread_id, Message.Role.ASSISTANT, thread_id, Message.Role.USER])
        row = cursor.fetchone()
    if row is None:  # no user message, so no message at all
        return {"head_id": None}
    content, parent_id, reply_status, reply_updated_at, head_id = row
    finished_ago = None
    if reply_status is not None and reply_status != Message.Status.STREAMING:
        finished_ago = (timezone.now() - _updated_at_from_db(reply_updated_at)).total_seconds()
    return {
        "head_id": head_id,
        "user_content": content,
        "user_parent_id": parent_id,
        "finished_ago_s": finished_ago,
    }


def _updated_at_from_db(value: Any) -> datetime.datetime:
    """`Message.updated_at` as read without the ORM, converted as the ORM would (SQLite gives text)."""
    col = Message._meta.get_field("updated_at").get_col(Message._meta.db_table)
    for convert in connection.ops.get_db_converters(col) + col.get_db_converters(connection):
        value = convert(value, col, connection)
    return value


def messages_streaming(
    *,
    after_id: int = 0,
    exclude: Collection[int] = (),
    idle_for_s: float | None = None,
    limit: int = 500,
) -> list[StreamingRow]:
    """A page of the assistant messages still `streaming` (the sweeps' candidates; a partial index covers
    this), oldest first from `after_id`, without `exclude` (the caller's own generations); with
    `idle_for_s`, only those not updated for that long."""
    qs = Message.objects.filter(status=Message.Status.STREAMING, id__gt=after_id)
    if idle_for_s is not None:
        qs = qs.filter(updated_at__lt=timezone.now() - datetime.timedelta(seconds=idle_for_s))
    rows = (
        qs.exclude(id__in=list(exclude))
        .order_by("id")
        .values_list("id", "request_id", "thread_id", "created_at", "updated_at")[:limit]
    )
    return [
        {
            "id": pk,
            "request_id": rid,
            "thread_id": tid,
            "created": created.timestamp(),
            "updated": updated.timestamp(),
        }
        for pk, rid, tid, created, updated in rows
    ]
