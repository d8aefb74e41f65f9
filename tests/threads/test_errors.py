"""threads/errors.py: the one table from domain errors to what clients are told."""

from __future__ import annotations

import pytest
from django.db import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from providers import ProviderRateLimited, ProviderTimeout
from threads import errors
from threads.services import Conflict, NotFound
from threads.validation import InvalidInput

BUDGET = InvalidInput("rate_limited", "Too many messages.", 429, retry_after=7)


@pytest.mark.parametrize(
    ("exc", "code", "status", "retry_after", "socket_message"),
    [
        (
            InvalidInput("invalid_content", "Say something.", 400),
            "invalid_content",
            400,
            None,
            "Say something.",
        ),
        (BUDGET, "rate_limited", 429, 7, "Too many messages."),
        (NotFound(), "not_found", 404, None, "No such request."),
        (Conflict("complete"), "conflict", 409, None, "It has already finished (status complete)."),
        (ProviderTimeout("slow", phase="total"), "provider_timeout", 504, None, None),
        (OperationalError("gone"), "database_unavailable", 503, errors.DEPENDENCY_RETRY_AFTER_S, None),
        (RedisConnectionError("gone"), "dependency_unavailable", 503, errors.DEPENDENCY_RETRY_AFTER_S, None),
    ],
)
def test_each_domain_error_has_one_answer(
    exc: Exception, code: str, status: int, retry_after: float | None, socket_message: str | None
) -> None:
    err = errors.client_error(exc)
    assert err is not None and (err.code, err.status, err.retry_after) == (code, status, retry_after)
    if socket_message is not None:
        event = errors.socket_event(err)
        assert event["type"] == "error" and event["error"]["message"] == socket_message


def test_a_bug_is_not_in_the_table() -> None:
    assert errors.client_error(RuntimeError("bug")) is None
    assert errors.INTERNAL_ERROR.status == 500


def test_a_provider_429_counts_as_rejected_and_an_outage_closes_the_socket() -> None:
    limited = errors.client_error(ProviderRateLimited("slow down", retry_after=2.5))
    down = errors.client_error(OperationalError("gone"))
    assert limited is not None and limited.rejected and not limited.outage
    assert down is not None and down.outage
    assert errors.outage_event(OperationalError("gone"))["error"]["code"] == "database_unavailable"


def test_only_a_refusal_of_the_client_s_own_input_carries_a_retry_time_on_a_socket() -> None:
    budget, limited = (
        errors.client_error(BUDGET),
        errors.client_error(ProviderRateLimited("x", retry_after=2.5)),
    )
    assert budget is not None and errors.socket_event(budget)["error"].get("retry_after") == 7
    assert limited is not None and "retry_after" not in errors.socket_event(limited)["error"]


@pytest.mark.parametrize(
    ("exc", "told"),
    [
        (BUDGET, {"code": "rate_limited", "message": "Too many messages.", "status": 429, "retry_after": 7}),
        (NotFound(), {"code": "not_found", "message": NotFound.message, "status": 404}),
        (RuntimeError("a bug"), errors.COALESCE_FAILED),
        (ProviderTimeout("slow", phase="total"), errors.COALESCE_FAILED),
    ],
)
def test_what_a_failed_leader_s_followers_are_told_and_raise(exc: Exception, told: dict[str, object]) -> None:
    failure = errors.follower_failure(exc)
    assert failure == told
    raised = errors.follower_error(failure)
    assert (raised.code, raised.status, raised.retry_after) == (
        told["code"],
        told["status"],
        told.get("retry_after"),
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("provider_rate_limited", 429),
        ("provider_timeout", 504),
        ("not_found", 404),
        ("provider_overloaded", 502),
    ],
)
def test_a_failed_generation_s_status_by_its_code(code: str, status: int) -> None:
    assert errors.generation_error_status(code) == status
