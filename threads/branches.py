"""Reads of the conversation tree (#18): the path from a message to the root, a page of the branch shown,
and each message's siblings. Plain data, like threads/selectors.py.

A message's parent always has a smaller id than it (it existed first), so a branch read from its leaf
upwards is newest first, and `?before=<id>` pages are the ancestors of that message.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.conf import settings
from django.db import connection

from threads import events, usage
from threads.models import Message, Thread

# The walk from a message to the root: one recursive query on the primary key, `depth` steps at most.
_PATH_SQL = """
WITH RECURSIVE path(id, depth) AS (
    SELECT id, 0 FROM {t} WHERE id = %s AND thread_id = %s
    UNION ALL
    SELECT m.parent_id, p.depth + 1 FROM {t} m JOIN path p ON m.id = p.id
    WHERE m.parent_id IS NOT NULL AND p.depth < %s
)
SELECT {cols} FROM path JOIN {t} m ON m.id = path.id {where} ORDER BY path.depth LIMIT %s
"""


def _sql(cols: str, where: str = "") -> str:
    return _PATH_SQL.format(t=connection.ops.quote_name(Message._meta.db_table), cols=cols, where=where)


def context_path(*, thread_id: int, message_id: int, limit: int) -> list[tuple[str, str]]:
    """(role, content) from the root to `message_id`, the newest `limit` of them; replies that failed
    without text are skipped (still walked through). One query."""
    # A failed reply is skipped, so the walk may go further than `limit` steps; a bound all the same.
    depth = 4 * limit + 16
    where = "WHERE NOT (m.role = 'assistant' AND m.content = '')"
    with connection.cursor() as cursor:
        cursor.execute(_sql("m.role, m.content", where), [message_id, thread_id, depth, limit])
        rows = cursor.fetchall()
    return [(role, content) for role, content in reversed(rows)]


def path_ids(*, thread_id: int, message_id: int, limit: int) -> list[int]:
    """The ids from `message_id` up towards the root (at most `limit`), newest first."""
    with connection.cursor() as cursor:
        cursor.execute(_sql("m.id"), [message_id, thread_id, limit, limit])
        return [row[0] for row in cursor.fetchall()]


def leaf_below(*, thread_id: int, message_id: int) -> int:
    """The end of the branch through `message_id`: its newest child, that child's newest, and so on
    (switching to a sibling shows the branch last written under it)."""
    current = message_id
    children = defaultdict(list)
    for pk, parent in Message.objects.filter(thread_id=thread_id, id__gt=message_id).values_list(
        "id", "parent_id"
    ):
        children[parent].append(pk)
    while children.get(current):
        current = max(children[current])
    return current


def siblings_of(*, thread_id: int, messages: list[events.MessageData]) -> dict[str, list[int]]:
    """For each of `messages` that has siblings (an edit, a regenerated reply): every id of its group,
    oldest first, keyed by the message's id. One query."""
    parents = {m["parent_id"] for m in messages}
    if not messages:
        return {}
    groups: dict[int | None, list[int]] = defaultdict(list)
    qs = Message.objects.filter(thread_id=thread_id, parent_id__in=[p for p in parents if p is not None])
    if None in parents:
        qs = qs | Message.objects.filter(thread_id=thread_id, parent_id__isnull=True)
    for pk, parent in qs.order_by("id").values_list("id", "parent_id"):
        groups[parent].append(pk)
    return {str(m["id"]): groups[m["parent_id"]] for m in messages if len(groups[m["parent_id"]]) > 1}


def branch_page(
    *, thread: Thread | int, before: int | None = None, limit: int | None = None
) -> dict[str, Any]:
    """A page of the branch shown (the thread's current leaf up towards the root): the newest `limit`
    (HISTORY_PAGE_SIZE) messages, or the ancestors of `before`, at most PAGE_MAX_CHARS of content,
    oldest first, with `has_more`, `siblings` and `current_leaf_id`. A thread written before the tree
    (no leaf) pages by id, as selectors.message_page does."""
    from threads.selectors import PAGE_MAX_CHARS, message_page

    thread_id = thread if isinstance(thread, int) else thread.pk
    limit = settings.HISTORY_PAGE_SIZE if limit is None else limit
    leaf = Thread.objects.filter(pk=thread_id).values_list("current_leaf_id", flat=True).first()
    if leaf is None:
        page: dict[str, Any] = dict(message_page(thread_id=thread_id, before=before, limit=limit))
        page["siblings"], page["current_leaf_id"] = {}, None
        return page
    start: int | None = leaf
    if before is not None:
        start = (
            Message.objects.filter(pk=before, thread_id=thread_id).values_list("parent_id", flat=True).first()
        )
    rows: list[Message] = []
    if start is not None:
        rows = list(Message.objects.raw(_sql("m.*"), [start, thread_id, limit, limit + 1]))
    has_more = len(rows) > limit
    kept: list[Message] = []
    chars = 0
    for m in rows[:limit]:  # newest first
        chars += len(m.content)
        if kept and chars > PAGE_MAX_CHARS:
            has_more = True
            break
        kept.append(m)
    if kept and kept[-1].parent_id is None:
        has_more = False
    messages = usage.messages_with_usage([events.message_data(m) for m in reversed(kept)])
    return {
        "messages": messages,
        "has_more": has_more,
        "siblings": siblings_of(thread_id=thread_id, messages=messages),
        "current_leaf_id": leaf,
    }
