"""Pure decisions of the coalescer: key derivation, bypass choice, TTLs. No I/O, no clock reads."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Literal

Mode = Literal["bypass", "coalesce", "off"]


def normalize_content(content: str) -> str:
    """Whitespace differences (a trailing newline, double spaces) do not make a different question."""
    return " ".join(content.split())


def coalesce_key(
    *, thread_id: int, anchor_id: int | None, content: str, provider: str, model: str, params: str = ""
) -> str:
    """The key shared by every request of one burst.

    `anchor_id` is the message being answered: the client's parent_id, or the thread's head as it
    stood before the burst (see `burst_anchor`), so the key does not change once the leader has written
    its messages, and differs for the same words asked again later in the conversation.
    """
    raw = json.dumps(
        [thread_id, anchor_id, normalize_content(content), provider, model, params], separators=(",", ":")
    )
    return "coal:" + hashlib.sha256(raw.encode()).hexdigest()[:40]


def burst_prekey(
    *, thread_id: int, parent_id: int | None, content: str, provider: str, model: str, params: str = ""
) -> str:
    """What identifies a burst *while its leader is generating*, before the anchor is known: a send
    matching a running leader's prekey joins it without reading the thread's head (in a burst of 200
    identical sends, 199 database reads that would queue the leader's own writes)."""
    raw = json.dumps(
        [thread_id, parent_id, normalize_content(content), provider, model]
        + ([params] if params else []),  # without params, the key is what it always was
        separators=(",", ":"),
    )
    return "pre:" + hashlib.sha256(raw.encode()).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class LastExchange:
    """The newest user message of a thread and its assistant reply, as the anchor decision needs them."""

    head_id: int | None
    user_content: str | None = None
    user_parent_id: int | None = None
    # Seconds since the assistant reply finished (None while it streams).
    finished_ago_s: float | None = None


def burst_anchor(
    *, parent_id: int | None, content: str, last: LastExchange, result_ttl_s: float
) -> int | None:
    """The message a send answers. An explicit parent wins. Otherwise the head, unless the newest
    exchange is this same question, still streaming or finished within the result TTL: then this send
    belongs to that burst and answers what that one answered."""
    if parent_id is not None:
        return parent_id
    same = last.user_content is not None and normalize_content(last.user_content) == normalize_content(
        content
    )
    if same and (last.finished_ago_s is None or last.finished_ago_s <= result_ttl_s):
        return last.user_parent_id
    return last.head_id


def coalesce_mode(*, enabled: bool, idempotent: bool, tools: bool) -> Mode:
    """`bypass`: this request must not be merged (tools, idempotent=false). `off`: the flag is off."""
    if not idempotent or tools:
        return "bypass"
    return "coalesce" if enabled else "off"


def body_fingerprint(
    *, thread_id: int, content: str, parent_id: int | None, idempotent: bool, tools: bool
) -> str:
    """What must match for a reused request_id to be a replay rather than a 422."""
    raw = json.dumps([thread_id, content, parent_id, idempotent, tools], separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


def retention_s(*, ok: bool, result_ttl_s: float, error_ttl_s: float) -> float:
    """How long a finished result is handed to identical requests."""
    return result_ttl_s if ok else error_ttl_s
