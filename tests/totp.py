"""An authenticator app's code, for tests that sign in with a second factor through a real server."""

from __future__ import annotations

import time

from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value

from tests.waiting import wait_until

PERIOD_S = 30  # allauth's MFA_TOTP_PERIOD
# allauth accepts the current period's code only (MFA_TOTP_TOLERANCE 0): a code read in a period's last
# seconds could be stale by the time a browser has typed it and the server checks it.
MARGIN_S = 5


def fresh_code(secret: str) -> str:
    """The code of the current period, read with at least MARGIN_S of the period left."""
    wait_until(lambda: time.time() % PERIOD_S < PERIOD_S - MARGIN_S, timeout=MARGIN_S + 1, interval=0.1)
    return format_hotp_value(hotp_value(secret, int(time.time()) // PERIOD_S))
