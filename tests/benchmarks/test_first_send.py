"""benchmarks.first_send's arithmetic: the first send's extra time over the sends after it."""

from __future__ import annotations

import pytest

from benchmarks.first_send import first_extra, summary


def test_the_first_send_is_compared_with_the_median_of_the_rest() -> None:
    assert first_extra([0.56, 0.50, 0.52, 0.90]) == pytest.approx(0.04)  # a slow later send does not hide it


def test_the_summary_is_in_milliseconds() -> None:
    assert summary([0.06, 0.01, 0.02]) == pytest.approx({"median_ms": 20.0, "min_ms": 10.0, "max_ms": 60.0})
