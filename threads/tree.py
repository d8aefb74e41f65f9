"""Writes of the conversation tree (#18): a regenerated reply (a thread's PATCH, branch switches
included, is threads.services.thread_update). Sync functions, each one transaction, like
threads/services.py; the caller broadcasts after they return (after commit).
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from threads import events
from threads.models import Message, Thread
from threads.services import NotFound, PreparedSend, context_for
from threads.validation import InvalidInput


def regenerate_target(*, thread_id: int, message_id: int) -> events.MessageData:
    """The user message a regenerate of assistant message `message_id` answers again. Raises NotFound
    (not a message of this thread) or InvalidInput 400 (a user message)."""
    target = Message.objects.filter(pk=message_id, thread_id=thread_id).select_related("parent").first()
    if target is None:
        raise NotFound()
    if target.role != Message.Role.ASSISTANT or target.parent is None:
        raise InvalidInput(
            "not_regenerable",
            "Only an assistant message can be regenerated; to change a question, edit it (send with its parent_id).",
        )
    return events.message_data(target.parent)


def regenerate_prepare(*, thread: Thread, message_id: int, request_id: str) -> PreparedSend:
    """Write a new `streaming` assistant sibling of `message_id` (answering the same user message) and
    make it the thread's current leaf; or find it again for a request_id already used for this
    regenerate (a replay). The context is the path from the root to the user message."""
    user_msg = regenerate_target(thread_id=thread.pk, message_id=message_id)
    try:
        with transaction.atomic():
            reply = Message.objects.create(
                thread_id=thread.pk,
                role=Message.Role.ASSISTANT,
                status=Message.Status.STREAMING,
                request_id=request_id,
                parent_id=user_msg["id"],
                model_id=f"{thread.provider}/{thread.model}",
            )
            if not Thread.objects.filter(pk=thread.pk).update(
                updated_at=timezone.now(), current_leaf_id=reply.pk
            ):
                raise NotFound()
            history = context_for(thread=thread, upto_id=user_msg["id"])
    except IntegrityError:
        return _replayed(thread=thread, user_msg=user_msg, request_id=request_id)
    return PreparedSend(
        request_id=request_id,
        thread_id=thread.pk,
        provider=thread.provider,
        model=thread.model,
        user_message=user_msg,
        assistant_message=events.message_data(reply),
        history=history,
        system_prompt=thread.system_prompt,
    )


def _replayed(*, thread: Thread, user_msg: events.MessageData, request_id: str) -> PreparedSend:
    """A request_id already answered in this thread: the same regenerate again is a replay; any other
    use of it (the send it was first used for, another message) is refused."""
    found = Message.objects.filter(thread=thread, request_id=request_id, role=Message.Role.ASSISTANT).first()
    if found is None or found.parent_id != user_msg["id"] or user_msg["request_id"] == request_id:
        raise InvalidInput(
            "idempotency_mismatch",
            "This request_id was already used for another request; use a new request_id.",
            status=422,
        )
    return PreparedSend(
        request_id=request_id,
        thread_id=thread.pk,
        provider=thread.provider,
        model=thread.model,
        user_message=user_msg,
        assistant_message=events.message_data(found),
        replay=True,
    )
