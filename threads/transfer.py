"""Export a thread (the whole tree as JSON, the branch shown as Markdown) and import threads (our JSON,
or a ChatGPT `conversations.json`), #18. Parsing is pure and checks everything before a row is
written; the writes are one transaction, so a bad file leaves nothing behind.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from providers.catalog import catalog
from threads import branches, events, modelaccess, services
from threads.models import Message, Thread
from threads.validation import InvalidInput, text_problem

FORMAT = "chatapp.thread.v1"
# An import writes at most this many threads and messages (a ChatGPT export of years fits; a bigger one
# is split by its owner): one transaction holds them all.
MAX_IMPORT_THREADS = 1000
MAX_IMPORT_MESSAGES = 50_000


@dataclass
class Draft:
    """A thread to import: messages as (key, parent key, role, content), parents before children."""

    title: str
    messages: list[tuple[str, str | None, str, str]] = field(default_factory=list)
    leaf: str | None = None
    system_prompt: str | None = None  # None: the owner's default, as for a thread created without one


def export_json(*, thread: Thread) -> dict[str, Any]:
    """The whole tree: every message with its parent, and the branch shown."""
    rows = Message.objects.filter(thread=thread).order_by("id")
    return {
        "format": FORMAT,
        "thread": {**events.thread_data(thread)},
        "messages": [
            {
                "id": m.pk,
                "parent_id": m.parent_id,
                "role": m.role,
                "content": m.content,
                "status": m.status,
                "created_at": events.iso(m.created_at),
            }
            for m in rows
        ],
    }


def export_markdown(*, thread: Thread) -> str:
    """The branch shown, as Markdown: a heading, then each message under its speaker."""
    leaf = (
        thread.current_leaf_id
        or Message.objects.filter(thread=thread).order_by("-id").values_list("id", flat=True).first()
    )
    ids = (
        list(reversed(branches.path_ids(thread_id=thread.pk, message_id=leaf, limit=100_000))) if leaf else []
    )
    rows = Message.objects.in_bulk(ids)
    out = [f"# {thread.title or 'Untitled'}", "", f"_{thread.provider} · {thread.model}_", ""]
    for pk in ids:
        m = rows[pk]
        out += [f"## {'You' if m.role == 'user' else 'Assistant'}", "", m.content, ""]
    return "\n".join(out)


def filename(thread: Thread, ext: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", thread.title).strip("-").lower()[:60] or "thread"
    return f"{slug}-{thread.pk}.{ext}"


# --- import --------------------------------------------------------------------------------------------


def parse_import(data: Any) -> list[Draft]:
    """Our export (an object with `format`) or a ChatGPT `conversations.json` (a list of conversations
    with a `mapping`). Raises InvalidInput `invalid_import` saying what is wrong."""
    if isinstance(data, dict) and data.get("format") == FORMAT:
        drafts = [_ours(data)]
    elif isinstance(data, list) and all(isinstance(c, dict) and "mapping" in c for c in data):
        drafts = [_chatgpt(c, i) for i, c in enumerate(data)]
    elif isinstance(data, dict) and "mapping" in data:
        drafts = [_chatgpt(data, 0)]
    else:
        raise _bad(f'not a chatapp export ("format": "{FORMAT}") nor a ChatGPT conversations.json')
    drafts = [d for d in drafts if d.messages]
    if not drafts:
        raise _bad("there are no messages in it")
    if len(drafts) > MAX_IMPORT_THREADS or sum(len(d.messages) for d in drafts) > MAX_IMPORT_MESSAGES:
        raise _bad(
            f"it holds more than {MAX_IMPORT_THREADS} threads or {MAX_IMPORT_MESSAGES} messages; split it"
        )
    return drafts


def _bad(reason: str) -> InvalidInput:
    return InvalidInput("invalid_import", f"The file cannot be imported: {reason}.")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _bad(f"{where} is not text")
    problem = text_problem(value)
    if problem:
        raise _bad(f"{where} {problem}")
    return value


def _title(value: Any) -> str:
    return " ".join(_text(value or "", "a title").split())[:200]


def _ours(data: dict[str, Any]) -> Draft:
    thread = data.get("thread")
    messages = data.get("messages")
    if not isinstance(thread, dict) or not isinstance(messages, list):
        raise _bad("'thread' must be an object and 'messages' a list")
    draft = Draft(
        title=_title(thread.get("title")), system_prompt=_system_prompt(thread.get("system_prompt"))
    )
    seen: set[str] = set()
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise _bad(f"message {i} has no role 'user' or 'assistant'")
        key, parent = str(m.get("id")), m.get("parent_id")
        if parent is not None and str(parent) not in seen:
            raise _bad(f"message {i}'s parent_id is not an earlier message")
        if key in seen:
            raise _bad(f"message {i}'s id is used twice")
        seen.add(key)
        draft.messages.append(
            (
                key,
                None if parent is None else str(parent),
                m["role"],
                _text(m.get("content", ""), f"message {i}'s content"),
            )
        )
    leaf = thread.get("current_leaf_id")
    draft.leaf = str(leaf) if leaf is not None and str(leaf) in seen else None
    return draft


def _system_prompt(value: Any) -> str | None:
    if value is None:
        return None
    prompt = _text(value, "the system prompt")
    if len(prompt) > settings.MAX_SYSTEM_PROMPT_CHARS:
        raise _bad(f"the system prompt is longer than {settings.MAX_SYSTEM_PROMPT_CHARS} characters")
    return prompt


def _chatgpt(conv: dict[str, Any], n: int) -> Draft:
    """ChatGPT's `mapping` tree onto ours: system and tool nodes and empty ones are skipped, their
    children hung on the nearest message kept above them."""
    mapping = conv.get("mapping")
    if not isinstance(mapping, dict):
        raise _bad(f"conversation {n}'s 'mapping' is not an object")
    draft = Draft(title=_title(conv.get("title")))
    kept: dict[str, str | None] = {}  # node id -> the kept message it stands for (itself, or an ancestor)
    roots = [
        k
        for k, v in mapping.items()
        if not isinstance(v, dict) or not v.get("parent") or v.get("parent") not in mapping
    ]
    stack = list(reversed(roots))
    parent_of: dict[str, str | None] = {}
    visited: set[str] = set()
    while stack:
        node_id = stack.pop()
        if node_id in visited:
            raise _bad(f"conversation {n}'s mapping has a cycle")
        visited.add(node_id)
        node = mapping.get(node_id)
        if not isinstance(node, dict):
            raise _bad(f"conversation {n}'s node {node_id!r} is not an object")
        above = kept.get(parent_of.get(node_id) or "") if parent_of.get(node_id) else None
        role, content = _chatgpt_message(node.get("message"), n)
        if role is not None and content:
            draft.messages.append((node_id, above, role, content))
            kept[node_id] = node_id
        else:
            kept[node_id] = above
        children = node.get("children") or []
        if not isinstance(children, list):
            raise _bad(f"conversation {n}'s node {node_id!r} has bad children")
        for child in reversed(children):
            if child in mapping:
                parent_of[child] = node_id
                stack.append(child)
    current = conv.get("current_node")
    draft.leaf = kept.get(current) if isinstance(current, str) else None
    return draft


def _chatgpt_message(message: Any, n: int) -> tuple[str | None, str]:
    if message is None:
        return None, ""
    if not isinstance(message, dict):
        raise _bad(f"conversation {n} has a message that is not an object")
    role = (message.get("author") or {}).get("role")
    if role not in ("user", "assistant"):
        return None, ""
    content = message.get("content") or {}
    parts = content.get("parts") if isinstance(content, dict) else None
    if parts is None and isinstance(content, dict) and isinstance(content.get("text"), str):
        parts = [content["text"]]
    texts = [p for p in parts or [] if isinstance(p, str)]
    return role, _text("\n".join(texts), f"a message of conversation {n}").strip()


def import_threads(*, owner: Any, drafts: list[Draft]) -> list[Thread]:
    """Write the drafts, all or nothing, on the model a new thread naming none gets: the owner's default
    (#17; raises InvalidInput `model_not_allowed` when no model is offered to them), with the file's
    system prompt, else the owner's default one."""
    offer = modelaccess.choose(catalog(), modelaccess.group_ids(owner), model=None, provider=None)
    default_prompt = services.default_system_prompt(owner)
    made: list[Thread] = []
    with transaction.atomic():
        for draft in drafts:
            thread = Thread.objects.create(
                owner=owner,
                title=draft.title,
                provider=offer.connection,
                model=offer.model,
                system_prompt=draft.system_prompt if draft.system_prompt is not None else default_prompt,
            )
            ids: dict[str, int] = {}
            for i, (key, parent, role, content) in enumerate(draft.messages):
                msg = Message.objects.create(
                    thread=thread,
                    role=role,
                    content=content,
                    status=Message.Status.COMPLETE,
                    request_id=f"import-{uuid.uuid4().hex[:12]}-{i}",
                    parent_id=ids.get(parent) if parent is not None else None,
                    finish_reason="stop" if role == "assistant" else None,
                )
                ids[key] = msg.pk
            leaf = ids.get(draft.leaf) if draft.leaf else None
            thread.current_leaf_id = branches.leaf_below(
                thread_id=thread.pk, message_id=leaf or min(ids.values())
            )
            if leaf is not None:
                thread.current_leaf_id = leaf
            thread.save(update_fields=["current_leaf_id"])
            made.append(thread)
    return made
