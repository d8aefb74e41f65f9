"""Retry-After as HTTP says it: whole seconds. The one rounding every refusal uses (the JSON API's,
billing's outage answer)."""

from __future__ import annotations

import math


def retry_after_header(seconds: float) -> int:
    """The `Retry-After` value for a wait of `seconds`: whole seconds, rounded up, at least 1 (a client
    that retried after 0 s would be refused again)."""
    if not seconds > 0 or math.isinf(seconds):
        return 1
    return max(1, math.ceil(seconds))
