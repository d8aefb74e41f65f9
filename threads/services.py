"""Writes. Sync functions, each one transaction; async callers wrap a whole call in `db_async`.

Broadcasting is left to the caller, which runs after these return (that is, after commit), so
clients never see a row that was rolled back.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Collection
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, User
from django.db import IntegrityError, transaction
from django.db.models import Case, F, OuterRef, Q, Subquery, Value, When
from django.utils import timezone

from providers.catalog import catalog
from threads import branches, context, events, modelaccess, selectors
from threads.models import ChatPreferences, Message, Thread
from threads.validation import InvalidInput, SendRequest, ThreadCreate, ThreadPatch

# A provider's own error text kept for staff (Message.error_detail): an upstream's JSON error body, with
# its URL, fits many times over; a page of HTML from a proxy is cut.
ERROR_DETAIL_CHARS = 4000


class NotFound(Exception):
    message = "No such thread or message."


class Conflict(Exception):
    pass


@dataclass(slots=True)
class PreparedSend:
    """What a send needs after its rows exist: the two messages and the context for the provider."""

    request_id: str
    thread_id: int
    provider: str
    model: str
    user_message: events.MessageData
    assistant_message: events.MessageData
    # (role, content) pairs, oldest first, ending with the new user message.
    history: list[tuple[str, str]] = field(default_factory=list)
    # True when the rows already existed (a replayed request_id): nothing new was written.
    replay: bool = False
    system_prompt: str = ""


def default_system_prompt(owner: User) -> str:
    """The prompt a thread of `owner`'s gets when it names none (their settings page's default)."""
    return ChatPreferences.objects.filter(user=owner).values_list("system_prompt", flat=True).first() or ""


def thread_create(*, owner: User, data: ThreadCreate) -> Thread:
    """A thread on the model `data` names, if `owner` may use it (else 400 `model_not_allowed`), or
    their default model; its system prompt, else the owner's default one."""
    offer = modelaccess.choose(
        catalog(), modelaccess.group_ids(owner), model=data.model, provider=data.provider
    )
    prompt = data.system_prompt if data.system_prompt is not None else default_system_prompt(owner)
    return Thread.objects.create(
        owner=owner, title=data.title, provider=offer.connection, model=offer.model, system_prompt=prompt
    )


def thread_update(*, thread: Thread, user: AbstractBaseUser, patch: ThreadPatch) -> Thread:
    """Every change a PATCH may make, all or nothing: rename, switch model (checked like a creation),
    change the system prompt, archive or unarchive, switch branch (`current_leaf_id` may name any
    message of the thread; the branch through it is shown down to its newest end). Raises InvalidInput
    (model_not_allowed, invalid_leaf) or NotFound with nothing written."""
    fields: dict[str, object] = {}
    if patch.model is not None:
        offer = modelaccess.choose(catalog(), modelaccess.group_ids(user), model=patch.model, provider=None)
        fields.update(provider=offer.connection, model=offer.model)
    for name in ("title", "system_prompt"):
        if getattr(patch, name) is not None:
            fields[name] = getattr(patch, name)
    if fields:  # an edit of the thread; archiving or looking at another branch is not activity
        fields["updated_at"] = timezone.now()
    if patch.archived is not None:
        fields["archived"] = patch.archived
    with transaction.atomic():
        if patch.current_leaf_id is not None:
            if not Message.objects.filter(pk=patch.current_leaf_id, thread_id=thread.pk).exists():
                raise InvalidInput("invalid_leaf", "'current_leaf_id' is not a message of this thread.")
            fields["current_leaf_id"] = branches.leaf_below(
                thread_id=thread.pk, message_id=patch.current_leaf_id
            )
        if fields and not Thread.objects.filter(pk=thread.pk).update(**fields):
            raise NotFound()
        fresh = Thread.objects.filter(pk=thread.pk).first()
    if fresh is None:
        raise NotFound()
    return fresh


def chat_preferences_save(*, user: AbstractBaseUser, system_prompt: str) -> None:
    """The user's default system prompt for new threads."""
    ChatPreferences.objects.update_or_create(user_id=user.pk, defaults={"system_prompt": system_prompt})


def thread_delete(*, thread: Thread) -> list[int]:
    """Delete the thread with its messages. Returns the ids of its replies still `streaming`: the caller
    stops their generations once this returns (after commit), or the provider streams them to the end."""
    with transaction.atomic():
        running = Message.objects.filter(thread=thread, status=Message.Status.STREAMING)
        ids = list(running.values_list("id", flat=True))
        thread.delete()
    return ids


def context_for(*, thread: Thread, upto_id: int) -> list[tuple[str, str]]:
    """The context of a reply to `upto_id`: the path from the root to it (the conversation tree), at
    most CONTEXT_MESSAGES and at most the model's context size less CONTEXT_REPLY_TOKENS (with the
    system prompt), oldest dropped first; replies that failed without text are left out."""
    path = branches.context_path(thread_id=thread.pk, message_id=upto_id, limit=settings.CONTEXT_MESSAGES)
    offer = catalog().find(f"{thread.provider}/{thread.model}")
    budget = context.context_budget(
        context_tokens=offer.context_tokens if offer is not None else None,
        reply_tokens=settings.CONTEXT_REPLY_TOKENS,
    )
    return context.fit_context(path, system_prompt=thread.system_prompt, budget=budget)


def send_context(
    *, thread: Thread, content: str, parent_id: int | None, new_root: bool
) -> list[tuple[str, str]]:
    """The context a send would be sent, read before its rows exist (a budget reservation): the path
    the context builder gives up to the message answered, then the new message. At most one message
    more than the builder's bound: a reservation may overestimate, never under. Raises NotFound for a
    deleted thread."""
    if parent_id is None and not new_root:
        parent_id = _leaf_of(thread_id=thread.pk)
    path = [] if parent_id is None else context_for(thread=thread, upto_id=parent_id)
    return [*path, ("user", content)]


def regenerate_context(*, thread: Thread, user_message_id: int) -> list[tuple[str, str]]:
    """The context a regenerate of the reply to `user_message_id` is sent (read before its row exists)."""
    return context_for(thread=thread, upto_id=user_message_id)


def _existing(*, thread: Thread, request_id: str) -> PreparedSend | None:
    pair = {m.role: m for m in Message.objects.filter(thread=thread, request_id=request_id)}
    if "user" not in pair or "assistant" not in pair:
        return None
    return PreparedSend(
        request_id=request_id,
        thread_id=thread.pk,
        provider=thread.provider,
        model=thread.model,
        user_message=events.message_data(pair["user"]),
        assistant_message=events.message_data(pair["assistant"]),
        replay=True,
    )


def send_prepare(
    *,
    thread_id: int,
    req: SendRequest,
    parent_id: int | None,
    coalesce_key: str | None = None,
    reuse: tuple[float, float] = (0.0, 0.0),
    thread: Thread | None = None,
) -> PreparedSend:
    """Write the user message and the `streaming` assistant message of a send, or find them if the
    request_id was already used in this thread, or if this burst's pair already exists (same
    `coalesce_key`; still streaming, or finished within `reuse` = (result TTL, error TTL) seconds): a
    replay. The unique (thread, coalesce_key) constraint makes a second pair for one burst impossible,
    even when two processes race past the coalescer. `parent_id` is the message being answered.

    Optimistic: the pair is written first, and looked for only when a unique constraint refuses it (a
    replay is rare: the coalescer and the request_id aliases answer those before the database does).
    An old, finished burst of the same words that still holds the key lets go of it, and the pair is
    written again. `thread` (the caller's copy, for its provider and model) saves reading the row."""
    if parent_id is not None and not Message.objects.filter(pk=parent_id, thread_id=thread_id).exists():
        raise InvalidInput("invalid_parent_id", "'parent_id' is not a message of this thread.")
    windows = reuse
    for attempt in range(2):
        try:
            return _write_pair(
                thread_id=thread_id, req=req, parent_id=parent_id, coalesce_key=coalesce_key, thread=thread
            )
        except IntegrityError:
            found_thread = Thread.objects.filter(pk=thread_id).first()
            if found_thread is None:  # deleted meanwhile (its messages' foreign key refused them)
                raise NotFound() from None
            found = _existing(thread=found_thread, request_id=req.request_id)
            if found is None and coalesce_key is not None:
                found = _existing_burst(thread=found_thread, coalesce_key=coalesce_key, reuse=windows)
            if found is not None:
                return found
            if coalesce_key is None or attempt == 1:
                raise
            # The old pair let go of the key; whoever holds it after this is a concurrent send of this
            # burst (in another process): its rows are the answer, however old.
            windows = (math.inf, math.inf)
    raise AssertionError("unreachable")


def _write_pair(
    *,
    thread_id: int,
    req: SendRequest,
    parent_id: int | None,
    coalesce_key: str | None,
    thread: Thread | None,
) -> PreparedSend:
    with transaction.atomic():
        # The tree (#18): a send without a parent continues the thread's current branch; `parent_id`
        # null sent explicitly starts a new root (an edit of the first message). Read first, so a
        # deleted thread is a 404 before anything is written.
        if parent_id is None and not req.new_root:
            parent_id = _leaf_of(thread_id=thread_id)
        if thread is None:
            thread = Thread.objects.only("provider", "model", "system_prompt").get(pk=thread_id)
        user_msg = Message.objects.create(
            thread_id=thread_id,
            role=Message.Role.USER,
            content=req.content,
            request_id=req.request_id,
            parent_id=parent_id,
            coalesce_key=coalesce_key,
        )
        assistant = Message.objects.create(
            thread_id=thread_id,
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
            request_id=req.request_id,
            parent=user_msg,
            model_id=f"{thread.provider}/{thread.model}",
        )
        # A thread gets its title from its first message; the new reply ends the branch shown. A thread
        # deleted meanwhile updates nothing: 404, and the rows go with the rollback.
        title = Case(When(title="", then=Value(_title_from(req.content))), default=F("title"))
        if not Thread.objects.filter(pk=thread_id).update(
            updated_at=timezone.now(), title=title, current_leaf_id=assistant.pk
        ):
            raise NotFound()
        # Read inside the transaction: if it fails, no `streaming` row is left without a generation.
        history = context_for(thread=thread, upto_id=user_msg.pk)
    return PreparedSend(
        request_id=req.request_id,
        thread_id=thread_id,
        provider=thread.provider,
        model=thread.model,
        user_message=events.message_data(user_msg),
        assistant_message=events.message_data(assistant),
        history=history,
        system_prompt=thread.system_prompt,
    )


def _leaf_of(*, thread_id: int) -> int | None:
    """The end of the thread's current branch (its newest message for a thread written before the
    tree, whose leaf was never set). Raises NotFound for a deleted thread."""
    newest = Message.objects.filter(thread_id=OuterRef("pk")).order_by("-id").values("id")[:1]
    found = Thread.objects.filter(pk=thread_id).values_list("current_leaf_id", Subquery(newest)).first()
    if found is None:
        raise NotFound()
    return found[0] if found[0] is not None else found[1]


def _existing_burst(*, thread: Thread, coalesce_key: str, reuse: tuple[float, float]) -> PreparedSend | None:
    """The pair already written for this burst key, if recent enough to reuse (a success for the
    result TTL, a failure for the error TTL). An older one is a previous, finished burst of the same
    words: its key is released so this send can take it."""
    user_msg = Message.objects.filter(thread=thread, coalesce_key=coalesce_key).first()
    if user_msg is None:
        return None
    reply = Message.objects.filter(parent=user_msg, role=Message.Role.ASSISTANT).first()
    age = (timezone.now() - (reply.updated_at if reply else user_msg.created_at)).total_seconds()
    window = reuse[0] if reply is not None and reply.status == Message.Status.COMPLETE else reuse[1]
    if reply is not None and (reply.status == Message.Status.STREAMING or age <= window):
        return _existing(thread=thread, request_id=user_msg.request_id)
    Message.objects.filter(pk=user_msg.pk).update(coalesce_key=None)
    return None


def _title_from(content: str) -> str:
    line = " ".join(content.split())
    return line if len(line) <= 60 else line[:57].rstrip() + "…"


@transaction.atomic
def message_finalize(
    *,
    message_id: int,
    status: str,
    content: str,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    finish_reason: str | None = None,
    error_code: str = "",
    error_message: str = "",
    error_detail: str = "",
) -> events.MessageData | None:
    """Compare-and-set streaming -> `status`. Returns the final message, or None if it was no longer
    streaming (cancelled meanwhile, or finalized by someone else): the caller must then not broadcast.
    One transaction with the read-back, so a retry after a failed read finds the row still streaming."""
    updated = Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).update(
        status=status,
        content=content,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        finish_reason=finish_reason,
        error_code=error_code,
        error_message=error_message[:500],
        error_detail=error_detail[:ERROR_DETAIL_CHARS],
        updated_at=timezone.now(),
    )
    if not updated:
        return None
    return events.message_data(Message.objects.get(pk=message_id))


def message_cancel(*, user: AbstractBaseUser, request_id: str) -> events.MessageData:
    """Mark the streaming assistant message of `request_id` cancelled (compare-and-set, so a cancel that
    races completion loses cleanly). Raises NotFound or Conflict (already finished)."""
    msg = selectors.assistant_for_request(user=user, request_id=request_id)
    if msg is None:
        raise NotFound()
    # One transaction: a failure reading the result back undoes the cancel, so the caller's retry
    # (after its 503) cancels again instead of meeting a 409 for a cancel it was never told about.
    with transaction.atomic():
        if not message_cancel_by_id(message_id=msg.pk):
            raise Conflict(msg.status)
        return events.message_data(Message.objects.get(pk=msg.pk))


def message_cancel_by_id(*, message_id: int) -> bool:
    """Compare-and-set streaming -> cancelled; False when the message had already finished."""
    return bool(
        Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).update(
            status=Message.Status.CANCELLED, finish_reason="cancelled", updated_at=timezone.now()
        )
    )


def message_save_cancelled(
    *, message_id: int, content: str, output_tokens: int | None = None
) -> events.MessageData | None:
    """Store the partial text of a message that was cancelled (by anyone). None if it is not cancelled."""
    with transaction.atomic():
        updated = Message.objects.filter(pk=message_id, status=Message.Status.CANCELLED).update(
            content=content, output_tokens=output_tokens, updated_at=timezone.now()
        )
        if not updated:
            return None
        return events.message_data(Message.objects.get(pk=message_id))


def messages_fail_stale(*, older_than_s: float, spare: Collection[int] = ()) -> int:
    """Mark assistant messages stuck in `streaming` (their generator died) as errors, except `spare`
    (rows whose generation still holds its lease: a long reply, retried with fresh deadlines)."""
    cutoff = timezone.now() - datetime.timedelta(seconds=older_than_s)
    stale = Message.objects.filter(Q(status=Message.Status.STREAMING) & Q(updated_at__lt=cutoff))
    return stale.exclude(pk__in=list(spare)).update(
        status=Message.Status.ERROR,
        error_code="generation_lost",
        error_message="The server generating this reply stopped before it finished.",
        updated_at=timezone.now(),
    )
