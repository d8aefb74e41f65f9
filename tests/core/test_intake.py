"""core/intake.py: a crowded send turn stops the server's reading until its holder lets go, or MAX_HOLD_S."""

from __future__ import annotations

import asyncio

import pytest

from core import intake
from tests.conftest import RecordingIntake


async def test_the_reading_stops_once_for_all_holders_and_restarts_when_the_last_lets_go(
    intake_server: RecordingIntake,
) -> None:
    intake.hold("a")
    intake.hold("b")
    intake.hold("a")
    assert intake_server.calls == ["pause"]
    intake.let_go("a")
    assert intake_server.calls == ["pause"]
    intake.let_go("b")
    assert intake_server.calls == ["pause", "resume"]
    intake.let_go("b")  # twice, or a holder that never held: nothing
    intake.let_go("c")
    assert intake_server.calls == ["pause", "resume"]


async def test_a_hold_ends_by_itself_and_its_holder_cannot_stop_the_reading_again(
    intake_server: RecordingIntake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake, "MAX_HOLD_S", 0.01)
    intake.hold("stuck")
    await asyncio.wait_for(intake_server.resumed.wait(), 5)
    assert intake_server.calls == ["pause", "resume"]
    intake.hold("stuck")  # a new arrival on the same turn: the reading goes on
    assert intake_server.calls == ["pause", "resume"]
    intake.let_go("stuck")
    intake.hold("stuck")  # a later turn with the same key may hold again
    assert intake_server.calls == ["pause", "resume", "pause"]
    intake.let_go("stuck")


async def test_the_deadline_of_an_ended_hold_ends_no_later_one(
    intake_server: RecordingIntake, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(intake, "MAX_HOLD_S", 0.01)
    intake.hold("first")
    past_its_deadline = asyncio.Event()
    loop.call_later(0.02, past_its_deadline.set)  # a timer after the first hold's: it fires later
    intake.let_go("first")
    monkeypatch.setattr(intake, "MAX_HOLD_S", 60)
    intake.hold("second")
    await asyncio.wait_for(past_its_deadline.wait(), 5)
    assert intake_server.calls == ["pause", "resume", "pause"]
    intake.let_go("second")


async def test_each_hold_is_told_once_as_it_ends_how_long_and_whether_its_cap_ended_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    heard: list[tuple[float, bool]] = []
    server = RecordingIntake()
    intake.install(
        server, observe=lambda held_s, expired: heard.append((held_s, expired)), clock=lambda: now[0]
    )
    try:
        intake.hold("a")
        intake.hold("b")
        now[0] += 0.03
        intake.let_go("a")
        assert heard == []  # "b" still holds
        now[0] += 0.01
        intake.let_go("b")
        assert heard == [(pytest.approx(0.04), False)]
        monkeypatch.setattr(intake, "MAX_HOLD_S", 0.01)
        server.resumed.clear()
        intake.hold("stuck")
        now[0] += 0.1
        await asyncio.wait_for(server.resumed.wait(), 5)
        intake.let_go("stuck")  # spent already: its hold was told when it ended
        assert heard == [(pytest.approx(0.04), False), (pytest.approx(0.1), True)]
    finally:
        intake.install(None)


async def test_without_a_server_holding_does_nothing() -> None:
    intake.install(None)
    intake.hold("a")
    intake.let_go("a")
