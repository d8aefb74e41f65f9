"""The `usage` of messages and threads in the API's payloads: read from the calls' charges
(billing.UsageRecord), one query per page."""

from __future__ import annotations

from collections.abc import Collection

from django.db.models import OuterRef, Subquery, Sum

from billing.models import UsageRecord
from threads import events
from threads.models import Message

_CHARGE = UsageRecord.Kind.CHARGE


def messages_with_usage(messages: list[events.MessageData]) -> list[events.MessageData]:
    """Each message's `usage`: its call's charge (null for user messages and replies not charged)."""
    ids = [m["id"] for m in messages if m["role"] == "assistant"]
    found = {}
    if ids:
        rows = UsageRecord.objects.filter(kind=_CHARGE, message_id__in=ids).values_list(
            "message_id", "input_tokens", "output_tokens", "cost_usd"
        )
        found = {mid: events.usage_data(input_tokens=i, output_tokens=o, cost_usd=c) for mid, i, o, c in rows}
    for m in messages:
        m["usage"] = found.get(m["id"])
    return messages


def thread_usage(thread_ids: Collection[int]) -> dict[int, events.UsageData]:
    """Each thread's `usage`: the sum of the charges of its replies (zero for a thread never charged)."""
    usage = {tid: events.usage_data(input_tokens=0, output_tokens=0, cost_usd=None) for tid in thread_ids}
    if not usage:
        return usage
    thread_of = Message.objects.filter(pk=OuterRef("message_id")).values("thread_id")[:1]
    rows = (
        UsageRecord.objects.filter(
            kind=_CHARGE, message_id__in=Message.objects.filter(thread_id__in=usage).values("id")
        )
        .annotate(thread=Subquery(thread_of))
        .values("thread")
        .annotate(i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cost_usd"))
        .order_by()
    )
    for row in rows:
        usage[row["thread"]] = events.usage_data(
            input_tokens=row["i"], output_tokens=row["o"], cost_usd=row["c"]
        )
    return usage


def no_usage() -> events.UsageData:
    """A thread's usage before its first call (a new or an imported thread)."""
    return events.usage_data(input_tokens=0, output_tokens=0, cost_usd=None)


def thread_with_usage(thread: events.ThreadData) -> events.ThreadData:
    return {**thread, "usage": thread_usage([thread["id"]])[thread["id"]]}
