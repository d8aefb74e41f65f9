"""benchmarks.ab: two codes compared on paired runs, and coalesce_bench's half run it relies on."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks import ab, coalesce_bench


def _result(p95: float, *, first: float | None = 0.25, n: int = 1000) -> dict[str, Any]:
    """The parts of a coalesce_bench JSON result that benchmarks.ab reads."""
    return {
        "direct": {"single_median_s": 1.25, f"whole{n}_p95_s": 1.35},
        "runs": {
            "on": {
                str(n): {
                    "p95_follower_ratio": p95,
                    "errors": 0,
                    "provider_calls": 1,
                    "breakdown": {
                        "first_call_s": first,
                        "after_gen_p95_s": 0.2,
                        "cpu_app_per_request_ms": 0.9,
                    },
                }
            },
            "off": {},
        },
    }


def test_figures_are_read_from_the_flag_on_burst() -> None:
    f = ab.figures(_result(1.3), 1000)
    assert (f.p95_ratio, f.first_call_s, f.after_gen_p95_s, f.cpu_ms, f.errors, f.calls) == (
        1.3,
        0.25,
        0.2,
        0.9,
        0,
        1,
    )
    assert f.floor == pytest.approx(1.35 / 1.25)
    assert math.isnan(ab.figures(_result(1.3, first=None), 1000).first_call_s)  # no call was made


def test_the_paired_difference_and_its_standard_error() -> None:
    mean, se = ab.paired([1.30, 1.40, 1.25], [1.28, 1.35, 1.24])
    assert mean == pytest.approx(-0.0267, abs=1e-4)
    assert se == pytest.approx(0.0120, abs=1e-4)  # stdev of (-0.02, -0.05, -0.01) / sqrt(3)
    mean, se = ab.paired([1.3], [1.2])
    assert mean == pytest.approx(-0.1) and math.isnan(se)
    with pytest.raises(ValueError):
        ab.paired([1.3, 1.2], [1.3])  # runs must pair up


def test_one_burst_size_is_compared() -> None:
    assert ab.burst_size(["--processes", "2", "--n", "1000"]) == 1000
    assert ab.burst_size([]) == 200  # coalesce_bench's default
    with pytest.raises(SystemExit):
        ab.burst_size(["--n", "200,1000"])


def test_the_summary_puts_each_codes_mean_beside_the_paired_difference() -> None:
    a = [ab.figures(_result(x), 1000) for x in (1.30, 1.40)]
    b = [ab.figures(_result(x), 1000) for x in (1.28, 1.34)]
    line = next(row for row in ab.summary(a, b) if row.startswith("p95_ratio"))
    assert line.split()[1:4] == ["1.350", "1.310", "-0.040"]


def test_every_run_is_this_checkouts_bench_against_the_other_app(tmp_path: Path) -> None:
    cmd = ab.bench_command(tmp_path, ["--n", "1000"], tmp_path / "r.json")
    assert cmd[1:3] == ["-m", "benchmarks.coalesce_bench"] and "--no-contrast" in cmd
    opts = coalesce_bench.parse_args(cmd[3:])
    assert (opts.app_dir, opts.no_contrast, opts.n) == (tmp_path, True, "1000")


def test_coalesce_bench_reports_a_run_without_the_contrast(capsys: pytest.CaptureFixture[str]) -> None:
    """--no-contrast (benchmarks.ab's runs) has no flag-off burst: its column stays empty."""
    result = _result(1.3)
    on = result["runs"]["on"]["1000"] | {
        "rows_written": 2,
        "roles": {"leader": 1, "follower": 999},
        **{
            f"p{q}_{who}_{kind}": 1.0
            for q in (50, 95)
            for who in ("follower", "all")
            for kind in ("s", "ratio")
        },
    }
    on["p95_follower_ratio"] = 1.3
    direct = result["direct"] | {"streams1000_p50_s": 1.3, "streams1000_p95_s": 1.4, "whole1000_p50_s": 1.3}
    met = coalesce_bench.report(1000, direct, on, None)
    out = capsys.readouterr().out
    assert met["calls == 1"] and not met["p95 ratio <= 1.05"]
    assert "p95 follower / provider" in out and "1.300" in out
    assert coalesce_bench.parse_args([]).app_dir == coalesce_bench.ROOT
