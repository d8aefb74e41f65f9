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
    assert error.to_dict() == {"code": code, "message": "x"}


def test_attributes_are_kept() -> None:
    error = ProviderRateLimited("slow down", provider="openai", retry_after=1.5, upstream_status=429)
    assert (error.message, error.provider, error.retry_after, error.upstream_status) == (
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
