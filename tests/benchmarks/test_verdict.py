"""The suite's PASS/FAIL comes from the measured figure against the bar, never by hand."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from benchmarks.report import rows_from
from benchmarks.run import FULL, QUICK
from benchmarks.verdict import Row, render, row, verdict

NAN = float("nan")


@pytest.mark.parametrize(
    ("measured", "op", "target", "complete", "expected"),
    [
        (1.0, ">=", 1.0, True, "PASS"),  # 100 % success
        (0.999, ">=", 1.0, True, "FAIL"),
        (1.05, "<=", 1.05, True, "PASS"),  # on the bar passes
        (1.0501, "<=", 1.05, True, "FAIL"),
        (1, "==", 1, True, "PASS"),  # provider calls
        (2, "==", 1, True, "FAIL"),
        (0.0, "==", 0.0, True, "PASS"),  # error rate
        (12.0, "<=", 250.0, False, "FAIL"),  # figure fine, but the measurement lost data
        (None, "<=", 5.0, True, "FAIL"),  # not measured
        (NAN, "<=", 5.0, True, "FAIL"),
    ],
)
def test_verdict(measured: float | None, op: str, target: float, complete: bool, expected: str) -> None:
    assert verdict(measured, op, target, complete=complete) == expected


def test_verdict_rejects_an_unknown_operator() -> None:
    with pytest.raises(ValueError, match="op must be one of"):
        verdict(1.0, "<", 2.0)


def test_row_shows_the_figure_and_judges_the_number() -> None:
    assert row("cancel p95", "<= 50 ms", "<=", 50.0, 51.0, "51.0 ms") == Row(
        "cancel p95", "<= 50 ms", "51.0 ms", "FAIL"
    )


def test_render_is_an_aligned_markdown_table() -> None:
    text = render([Row("a", "<= 1", "0.5", "PASS"), Row("longer name", "1", "2", "FAIL")])
    lines = text.splitlines()
    assert lines[0].startswith("| requirement") and lines[1].startswith("|---")
    assert len({len(line) for line in lines}) == 1


def _burst(n: int, ok: int, calls: int, rows: int, **extra: Any) -> dict[str, Any]:
    return {
        "n": n,
        "ok": ok,
        "errors": n - ok,
        "success_rate": ok / n,
        "provider_calls": calls,
        "rows": rows,
    } | extra


def _verdicts(results: dict[str, Any], plan: Any = QUICK) -> dict[str, str]:
    opts = argparse.Namespace(processes=2, contrast_n=0)
    return {r.requirement: r.verdict for r in rows_from(results, plan, opts)}


def test_a_run_that_crashed_everywhere_fails_every_row() -> None:
    verdicts = _verdicts({"provider": {"crashed": "RuntimeError: boom"}})
    # 19 rows straight to the processes (the search row, #18), 4 through nginx (#21).
    assert len(verdicts) == 25 and set(verdicts.values()) == {"FAIL"}


def _restart(**changes: Any) -> dict[str, Any]:
    res = {
        "viewers": 100,
        "exit_codes": [0, 0],
        "saved_status": "complete",
        "lost": 0,
        "repeated": 0,
        "mismatched": 0,
        "equal": 100,
        "reconnects": 150,
    }
    return res | changes


@pytest.mark.parametrize(
    ("changes", "verdict"),
    [
        ({}, "PASS"),
        ({"lost": 1}, "FAIL"),
        ({"repeated": 2}, "FAIL"),
        ({"equal": 99}, "FAIL"),
        ({"saved_status": "error"}, "FAIL"),
        ({"exit_codes": [0, -9]}, "FAIL"),
    ],
)
def test_the_rolling_restart_row_passes_only_when_nothing_went_wrong(
    changes: dict[str, Any], verdict: str
) -> None:
    verdicts = _verdicts({"rolling_restart": _restart(**changes)})
    (row,) = [v for k, v in verdicts.items() if k.startswith("rolling restart")]
    assert row == verdict


def test_rows_follow_the_figures() -> None:
    results = {
        "coalesce_on": {
            "small": {"burst": _burst(50, 50, 1, 2, p95_follower_s=4.2, p95_follower_ratio=4.2 / 4.3)},
            "mid": {"burst": _burst(100, 100, 1, 2, p95_follower_s=4.6, p95_follower_ratio=4.6 / 4.3)},
            "big": {
                "burst": _burst(200, 199, 1, 2, p95_follower_s=4.4, p95_follower_ratio=4.4 / 4.3),
                "provider": {"sequential_median_s": 4.3},
            },
        },
        "coalesce_off": {"contrast": {"burst": _burst(50, 50, 50, 100, p95_s=6.0)}},
        "pacer": {"wait_p95_ms": 5.5, "offered_rps": 25.0, "processes": 2, "admitted": 50},
        "search": {"p95_ms": 31.0, "p50_ms": 12.0, "threads": 10000, "messages": 200000, "queries": 200},
        "streaming": {
            "summary": {
                "ttft_overhead_p95_ms": 12.0,
                "ttft_overhead_p50_ms": 8.0,
                "cancel_p95_ms": 30.0,
                "cancelled": 10,
            },
            "cancel_client_disconnects": 9,  # one upstream connection was not closed: cancel fails
            "runs": [{"lag_p99_ms": 100.0, "delivered": 10, "expected": 10, "connected": 100}],
        },
    }
    verdicts = _verdicts(results)
    assert verdicts["burst: 50 identical sends, 10 concurrent"] == "PASS"
    assert verdicts["burst: 200 identical sends, all at once, 2 processes"] == "FAIL"  # 199/200
    assert verdicts["error rate"] == "FAIL"
    p95 = "end-to-end p95, followers, over the provider's own latency"
    assert verdicts[f"{p95} (50 identical sends, 10 concurrent)"] == "PASS"  # 0.977x
    assert verdicts[f"{p95} (100 identical sends, all at once, 2 processes)"] == "FAIL"  # 1.070x
    assert verdicts[f"{p95} (200 identical sends, all at once, 2 processes)"] == "PASS"  # 1.023x
    assert verdicts["burst: 100 identical sends, all at once, 2 processes"] == "PASS"
    assert verdicts["queue wait p95 at half the pacer limit"] == "FAIL"  # 5.5 ms
    assert verdicts["TTFT p95 over the provider's TTFT"] == "PASS"
    assert verdicts["cancel p95"] == "FAIL"
    assert verdicts["fan-out 100 clients, p99 lag"] == "PASS"
    assert verdicts["same burst (50 sends) with COALESCE_ENABLED off, for contrast"] == "PASS"
    assert verdicts["search p95 (GET /api/threads?q=)"] == "PASS"  # 31 ms


def test_the_full_plan_is_the_issue_s_suite() -> None:
    assert (FULL.small_n, FULL.small_c, FULL.mid_n, FULL.big_n, FULL.fanout_k) == (50, 10, 200, 1000, 1000)
