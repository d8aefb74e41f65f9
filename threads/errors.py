"""The one table from domain errors to what a client is told: an HTTP status and JSON error (threads/http.py),
a WebSocket `error` event (threads/consumers.py, and the SSE stream once its headers are sent), what the
followers of a leader that failed are answered (threads/coalescing.py), and the HTTP status of a send
whose generation ended in `message.error` (threads/api.py). Pure: the adapters log and count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from billing.budgets import BudgetExceeded
from core import retryafter
from core.outages import DEPENDENCY_RETRY_AFTER_S, unavailable
from providers import ProviderError
from threads import events
from threads.services import Conflict, NotFound
from threads.validation import InvalidInput


@dataclass(frozen=True, slots=True)
class ClientError:
    """What a client is told about a failure."""

    code: str
    message: str
    status: int
    retry_after: float | None = None
    # A provider's 429: counted as a rejected request in the metrics.
    rejected: bool = False
    # The database or Redis is down: logged as an outage, not as a bug; a socket is closed for it.
    outage: bool = False
    # On a socket: the message when it differs, and the retry time in whole seconds (only refusals of
    # the client's own input, its send budget, carry one there).
    socket_message: str | None = None
    socket_retry_after: int | None = None


def client_error(exc: BaseException) -> ClientError | None:
    """What a client is told about `exc`; None when it is none of the domain's errors (a bug: 500)."""
    if isinstance(exc, InvalidInput):
        return ClientError(
            exc.code, exc.message, exc.status, exc.retry_after, socket_retry_after=exc.retry_after
        )
    if isinstance(exc, BudgetExceeded):
        seconds = math.ceil(exc.retry_after)
        return ClientError(exc.code, exc.message, exc.status, seconds, socket_retry_after=seconds)
    if isinstance(exc, NotFound):
        # On a socket the only NotFound a client meets is a cancel naming a request it does not have.
        return ClientError("not_found", NotFound.message, 404, socket_message="No such request.")
    if isinstance(exc, Conflict):
        return ClientError("conflict", f"It has already finished (status {exc}).", 409)
    if isinstance(exc, ProviderError):
        return ClientError(
            exc.code, exc.message, exc.http_status, exc.retry_after, rejected=exc.http_status == 429
        )
    down = unavailable(exc)
    if down is not None:
        return ClientError(down[0], down[1], 503, DEPENDENCY_RETRY_AFTER_S, outage=True)
    return None


INTERNAL_ERROR = ClientError("internal_error", "Something went wrong on our side; it has been logged.", 500)


def retry_after_header(seconds: float) -> str:
    """HTTP's Retry-After header: whole seconds, rounded up, at least one."""
    return str(retryafter.retry_after_header(seconds))


# --- WebSocket ----------------------------------------------------------------------------------------


def socket_event(err: ClientError) -> events.SocketErrorEvent:
    """The `error` event a socket is sent for a failure (the socket stays open; outages close it
    instead, in chatapp/dependencies.py's guard)."""
    message = err.message if err.socket_message is None else err.socket_message
    return events.socket_error(err.code, message, retry_after=err.socket_retry_after)


def outage_event(exc: BaseException) -> events.SocketErrorEvent:
    """The `error` event of an outage met mid-stream (an SSE stream whose headers are sent)."""
    err = client_error(exc)
    if err is None or not err.outage:
        return events.socket_error("dependency_unavailable", "A dependency is not answering.")
    return events.socket_error(err.code, err.message)


# --- followers of a failed leader ---------------------------------------------------------------------


class FollowerFailure(TypedDict, total=False):
    """What the coalescer stores for the followers of a leader that failed before its rows existed."""

    code: str
    message: str
    status: int
    retry_after: int | None


# What a leader's failure tells its followers, when it is theirs too: the same bad input or send budget
# (they sent the same body), or the thread deleted elsewhere. Anything else (the leader cancelled, a bug)
# was the leader's own: they get coalesce_failed rather than waiting for its lease to lapse.
COALESCE_FAILED = FollowerFailure(code="coalesce_failed", message="The identical request failed.", status=502)


def follower_failure(exc: BaseException) -> FollowerFailure:
    """What the followers of a leader that raised `exc` before its rows existed are answered."""
    if isinstance(exc, InvalidInput):
        return FollowerFailure(
            code=exc.code, message=exc.message, status=exc.status, retry_after=exc.retry_after
        )
    if isinstance(exc, BudgetExceeded):  # the burst's sends are one user's, as a thread is
        return FollowerFailure(
            code=exc.code, message=exc.message, status=exc.status, retry_after=math.ceil(exc.retry_after)
        )
    if isinstance(exc, NotFound):  # deleted in another process, whose copy this one still had
        return FollowerFailure(code="not_found", message=NotFound.message, status=404)
    return COALESCE_FAILED


def follower_error(failure: Mapping[str, Any]) -> InvalidInput:
    """The error a follower raises for its leader's stored `failure` (mapped like any InvalidInput)."""
    return InvalidInput(
        failure.get("code", "coalesce_failed"),
        failure.get("message", "the identical request failed"),
        failure.get("status", 502),
        retry_after=failure.get("retry_after"),
    )


# --- a send whose generation failed ------------------------------------------------------------------

# HTTP status of a send whose generation ended in `message.error`, by its error code (429 rate limited
# or queue timeout, 502/504 provider failure or timeout). Codes not listed are upstream failures: 502.
GENERATION_ERROR_STATUS = {
    "queue_timeout": 429,
    "provider_rate_limited": 429,
    "provider_quota_exceeded": 429,
    "provider_timeout": 504,
    "provider_bad_request": 400,
    "unknown_provider": 400,
    "database_unavailable": 503,
    "dependency_unavailable": 503,
    # The thread (and so the reply a follower waited on) was deleted meanwhile.
    "not_found": 404,
}


def generation_error_status(code: str) -> int:
    return GENERATION_ERROR_STATUS.get(code, 502)
