"""The exception tree: API codes, statuses and retryability are part of the public contract."""

from __future__ import annotations

import re

import pytest

import providers
from providers import (
    ProviderAuthError,
    ProviderBadRequest,
    ProviderConnectionError,
    ProviderError,
    ProviderMalformedStream,
    ProviderOverloaded,
    ProviderQuotaExceeded,
    ProviderRateLimited,
    ProviderStatusError,
    ProviderStreamError,
    ProviderTimeout,
    ProviderTransportError,
    UnknownProvider,
)


@pytest.mark.parametrize(
    ("error", "code", "status", "retryable", "parent"),
    [
        (UnknownProvider("x"), "unknown_provider", 400, False, ProviderError),
        (ProviderRateLimited("x", retry_after=2.0), "provider_rate_limited", 429, True, ProviderStatusError),
        (ProviderQuotaExceeded("x"), "provider_quota_exceeded", 429, False, ProviderStatusError),
        (ProviderOverloaded("x"), "provider_overloaded", 502, True, ProviderStatusError),
        (ProviderBadRequest("x"), "provider_bad_request", 400, False, ProviderStatusError),
        (ProviderAuthError("x"), "provider_auth_failed", 502, False, ProviderStatusError),
        (ProviderTimeout("x", phase="connect"), "provider_timeout", 504, True, ProviderTransportError),
        (ProviderTimeout("x", phase="first_byte"), "provider_timeout", 504, True, ProviderTransportError),
        (ProviderTimeout("x", phase="idle"), "provider_timeout", 504, True, ProviderTransportError),
        (ProviderTimeout("x", phase="total"), "provider_timeout", 504, False, ProviderTransportError),
        (ProviderConnectionError("x"), "provider_connection_error", 502, True, ProviderTransportError),
        (ProviderStreamError("x"), "provider_stream_error", 502, False, ProviderError),
        (ProviderStreamError("x", retryable=True), "provider_stream_error", 502, True, ProviderError),
        (ProviderMalformedStream("x"), "provider_malformed_stream", 502, True, ProviderStreamError),
    ],
)
def test_error_contract(error: ProviderError, code: str, status: int, retryable: bool, parent: type) -> None:
    assert (error.code, error.http_status, error.retryable) == (code, status, retryable)
    assert isinstance(error, parent)
    assert error.message == type(error).public_message
    assert error.detail == str(error) == "x"


def test_the_public_message_never_carries_the_detail() -> None:
    # #16 item 9: the detail names the base URL and quotes the upstream; users read the class's sentence.
    detail = "Connection to openai at http://10.0.3.7:8000/v1 failed: org-s3cret over its limit"
    for cls in (ProviderError, ProviderConnectionError, ProviderRateLimited, ProviderStreamError):
        error = cls(detail)
        assert error.detail == detail and error.message == cls.public_message
        assert "10.0.3.7" not in error.message and "org-" not in error.message
    assert ProviderTimeout(detail, phase="idle").message == ProviderTimeout.public_message


def test_every_public_message_is_a_plain_sentence() -> None:
    errors = [
        obj
        for name in providers.__all__
        if isinstance(obj := getattr(providers, name), type) and issubclass(obj, ProviderError)
    ]
    for error in errors:
        message = error.public_message
        assert message.endswith(".") and "http" not in message and "{" not in message, error


def test_a_message_built_from_safe_parts_may_be_given() -> None:
    error = UnknownProvider("detail for logs", message="Unknown provider 'x'. Use one of: demo.")
    assert error.message == "Unknown provider 'x'. Use one of: demo." and error.detail == "detail for logs"


def test_attributes_are_kept() -> None:
    error = ProviderRateLimited("slow down", provider="openai", retry_after=1.5, upstream_status=429)
    assert (error.detail, error.provider, error.retry_after, error.upstream_status) == (
        "slow down",
        "openai",
        1.5,
        429,
    )
    assert str(error) == "slow down"
    assert ProviderStreamError("x", upstream_type="overloaded_error").upstream_type == "overloaded_error"
    assert ProviderTimeout("x", phase="idle").phase == "idle"


def test_every_exported_error_has_a_unique_snake_case_code() -> None:
    errors = [
        obj
        for name in providers.__all__
        if isinstance(obj := getattr(providers, name), type) and issubclass(obj, ProviderError)
    ]
    concrete = [e for e in errors if e not in (ProviderError, ProviderTransportError, ProviderStatusError)]
    codes = [e.code for e in concrete]
    assert len(codes) == len(set(codes)) == 10
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", code) for code in codes)
    assert all(e.http_status in (400, 429, 502, 504) for e in errors)
