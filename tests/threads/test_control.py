"""The control loop's memory of cancels heard for a generation this process does not run (yet):
threads/control.py's RecentCancels, on a clock the test moves."""

from __future__ import annotations

import pytest

from tests.threads.recording import FakeClock
from threads import control
from threads.control import RecentCancels


def test_a_cancel_heard_is_taken_once() -> None:
    heard = RecentCancels(clock=FakeClock())
    heard.add(7)
    assert heard.take(7) and not heard.take(7) and not heard.take(8)


@pytest.mark.parametrize(
    ("after_s", "kept"), [(0.0, True), (control.HEARD_TTL_S - 0.1, True), (control.HEARD_TTL_S, False)]
)
def test_a_cancel_heard_is_forgotten_after_its_ttl(after_s: float, kept: bool) -> None:
    clock = FakeClock()
    heard = RecentCancels(clock=clock)
    heard.add(7)
    clock.advance(after_s)
    assert heard.take(7) is kept


def test_the_oldest_cancels_go_first_past_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "HEARD_MAX", 3)
    heard = RecentCancels(clock=FakeClock())
    for message_id in range(1, 6):
        heard.add(message_id)
    assert [heard.take(m) for m in range(1, 6)] == [False, False, True, True, True]
