"""Decisions behind the limits of README's "Limits" table. Pure functions only: no clock, no I/O.

The storage and the waiting live elsewhere: the per-user send budget and the open-socket registry in
`threads/quotas.py`, the request-body cap in `chatapp/bodylimit.py`. The settings are read by those
callers and passed in, so every rule here is a table test away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.gcra import Limit

# Primary keys are BIGINT (DEFAULT_AUTO_FIELD is BigAutoField). A larger number cannot name a row, and
# handing it to the database raises (SQLite: OverflowError; PostgreSQL: "bigint out of range") instead
# of finding nothing, so callers answer "not found" / "invalid" before any query.
MAX_ID = 2**63 - 1


def id_in_range(value: int) -> bool:
    """True if `value` could be a primary key (1..MAX_ID)."""
    return 1 <= value <= MAX_ID


def parse_id(raw: str) -> int | None:
    """An id from a path or query string: ASCII digits naming 1..MAX_ID, else None.

    `str.isdigit()` alone is not enough: it accepts "²" (which int() refuses) and Arabic-Indic digits."""
    if not raw or len(raw) > 19 or not raw.isascii() or not raw.isdigit():
        return None
    value = int(raw)
    return value if id_in_range(value) else None


# --- request bodies -------------------------------------------------------------------------------


def declared_length(raw: bytes | None) -> int | None:
    """The Content-Length header's value; None if absent; -1 if it is not a non-negative integer."""
    if raw is None:
        return None
    text = raw.strip()
    if not text or len(text) > 20 or not text.isdigit():
        return -1
    return int(text)


def body_verdict(*, declared: int | None, received: int, limit: int) -> str:
    """'ok', 'too_large' or 'bad_length' for a body whose header says `declared` bytes (None when the
    client sent none, e.g. chunked) and of which `received` bytes have arrived so far."""
    if declared is not None and declared < 0:
        return "bad_length"
    if (declared is not None and declared > limit) or received > limit:
        return "too_large"
    return "ok"


# --- WebSocket frames -----------------------------------------------------------------------------


def frame_size(text: str | None, data: bytes | None) -> int:
    """Size in bytes of a frame as it came over the wire (text frames are UTF-8)."""
    if data is not None:
        return len(data)
    if text is None:
        return 0
    if text.isascii():  # the usual case, without copying the frame
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


# --- per-user send rate ----------------------------------------------------------------------------


def send_rate_limit(*, per_min: float, burst: int) -> Limit | None:
    """The token bucket of SEND_RATE_PER_MIN / SEND_RATE_BURST (GCRA, the pacer's arithmetic); None
    when unlimited (per_min 0)."""
    if per_min == 0:
        return None
    return Limit.per_second(per_min / 60.0, max(1, burst))


# A follower or a replay calls no provider and writes no rows, yet holds a wait and writes a 24 h
# request_id record: half a send, from a bucket of its own (twice the send budget), so a person's double
# clicks and retries leave their sends alone while a script's flood of them meets 429.
FOLLOWER_SHARE = 0.5


def follow_rate_limit(*, per_min: float, burst: int) -> Limit | None:
    """The followers' and replays' bucket: the send budget's rate and burst over FOLLOWER_SHARE."""
    if per_min == 0:
        return None
    return Limit.per_second(per_min / FOLLOWER_SHARE / 60.0, math.ceil(max(1, burst) / FOLLOWER_SHARE))


# --- open WebSockets per user ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SocketAdmission:
    admitted: bool
    # Entries whose heartbeat is older than the TTL: sockets of a process that died; drop them.
    expired: tuple[str, ...]
    # Live sockets after the decision (the new one included when admitted).
    open_count: int


def socket_admit(
    sockets: dict[str, float], *, socket_id: str, now: float, ttl: float, limit: int
) -> SocketAdmission:
    """Admit socket `socket_id` for a user whose open sockets are `sockets` (id -> last heartbeat), if
    fewer than `limit` (0: unlimited) are alive; a socket is alive if its heartbeat is within `ttl`."""
    expired = tuple(sorted(sid for sid, beat in sockets.items() if beat < now - ttl))
    live = len(sockets) - len(expired) - (1 if socket_id in sockets and socket_id not in expired else 0)
    if limit and live >= limit:
        return SocketAdmission(False, expired, live)
    return SocketAdmission(True, expired, live + 1)
