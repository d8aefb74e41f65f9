"""Provider deadlines for tests against the in-process fake provider.

Short deadlines only where the scenario is a timeout: on a loaded 2-core machine the fake's first byte
can take longer than 0.3 s, and a test expecting any other fault then saw a timeout instead.
"""

from __future__ import annotations

from providers import Timeouts

# Far above what a loopback server needs even when the suite shares the machine.
ROOMY = {"connect": 1.0, "first_byte": 5.0, "idle": 5.0, "total": 10.0}
# Short, to keep the timeout scenarios fast; a loaded machine only makes them time out sooner.
SHORT = {"connect": 1.0, "first_byte": 0.3, "idle": 0.3, "total": 5.0}


def deadlines(expects_timeout: bool) -> dict[str, float]:
    """The provider deadlines (as `settings.PROVIDER_TIMEOUTS`) for a scenario."""
    return dict(SHORT if expects_timeout else ROOMY)


def provider_timeouts(expects_timeout: bool) -> Timeouts:
    """The same, as a provider's `Timeouts`."""
    return Timeouts(**deadlines(expects_timeout))
