from __future__ import annotations

import pytest

from threads.flow import MAX_UNACKED, Flow


def test_untracked_until_the_first_ack() -> None:
    flow = Flow()
    assert not any(flow.on_send() for _ in range(MAX_UNACKED * 3))


def test_too_far_behind_after_acking() -> None:
    flow = Flow()
    flow.on_send()
    assert flow.on_ack(1)
    assert not any(flow.on_send() for _ in range(MAX_UNACKED))
    assert flow.on_send()  # MAX_UNACKED + 1 frames unacknowledged


def test_acks_keep_a_healthy_client_open() -> None:
    flow = Flow()
    for i in range(1, 5000):
        assert not flow.on_send()
        if i % 20 == 0:
            assert flow.on_ack(i)


@pytest.mark.parametrize("count", [-1, 5, "3", True, None, 2.0])
def test_malformed_acks_are_refused(count: object) -> None:
    flow = Flow()
    flow.on_send()
    flow.on_send()
    assert not flow.on_ack(count)


@pytest.mark.parametrize(
    ("limit", "unsent", "closed"),
    [
        (1000, None, False),  # not measured (no daphne): not bounded
        (1000, 0, False),
        (1000, 1000, False),
        (1000, 1001, True),
        (0, 10**9, False),  # 0: no limit
    ],
)
def test_bytes_bound_every_client_acknowledging_or_not(limit: int, unsent: int | None, closed: bool) -> None:
    assert Flow(max_unsent_bytes=limit).on_send(unsent) is closed
