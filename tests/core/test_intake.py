"""core/intake.py: a crowded send turn stops the server's reading until its holder lets go, or MAX_HOLD_S."""

from __future__ import annotations

import asyncio

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
    intake_server: RecordingIntake,
) -> None:
    intake.hold("stuck", max_hold_s=0.01)
    await asyncio.wait_for(intake_server.resumed.wait(), 5)
    assert intake_server.calls == ["pause", "resume"]
    intake.hold("stuck")  # a new arrival on the same turn: the reading goes on
    assert intake_server.calls == ["pause", "resume"]
    intake.let_go("stuck")
    intake.hold("stuck")  # a later turn with the same key may hold again
    assert intake_server.calls == ["pause", "resume", "pause"]
    intake.let_go("stuck")


async def test_the_deadline_of_an_ended_hold_ends_no_later_one(intake_server: RecordingIntake) -> None:
    intake.hold("first", max_hold_s=0.01)
    intake.let_go("first")
    intake.hold("second", max_hold_s=60)
    await asyncio.sleep(0.05)  # past the first hold's deadline: the scenario, not a wait for a result
    assert intake_server.calls == ["pause", "resume", "pause"]
    intake.let_go("second")


async def test_without_a_server_holding_does_nothing() -> None:
    intake.install(None)
    intake.hold("a")
    intake.let_go("a")
