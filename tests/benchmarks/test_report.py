"""The table benchmarks.report builds reads the same for the same figures: a stored quick run
(tests/benchmarks/data/quick-run.json, `make bench ARGS=--quick` on 2026-12-04, trimmed to the fields the
report reads, with the table that run printed) and runs with steps missing, against the tables the
report printed before its row builders shared one "measured, or 'not measured'" helper
(tests/benchmarks/data/report-tables.json)."""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks.report import rows_from
from benchmarks.run import QUICK
from benchmarks.verdict import Row, render

DATA = Path(__file__).parent / "data"
RUN = json.loads((DATA / "quick-run.json").read_text())
TABLES: dict[str, str] = json.loads((DATA / "report-tables.json").read_text())
OPTS = argparse.Namespace(processes=2, contrast_n=0)


def _without(*paths: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The stored run with the steps (or fields) at `paths` ("a/b/c") missing, as when a step crashed."""

    def derive(results: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(results)
        for path in paths:
            *parents, leaf = path.split("/")
            node = out
            for key in parents:
                node = node[key]
            del node[leaf]
        return out

    return derive


def _crashed(results: dict[str, Any]) -> dict[str, Any]:
    return {"provider": {"crashed": "RuntimeError: boom"}, "rolling_restart": {"crashed": "OSError: gone"}}


CASES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "stored run": _without(),
    "nothing ran": lambda results: {},
    "every step crashed": _crashed,
    # The provider's own latency lost, the figures over it kept: the ratio rows say "not measured".
    "no provider latency": _without("provider", "coalesce_on/big/provider"),
    "some steps lost": _without(
        "coalesce_on/mid",
        "streaming/summary",
        "front_bursts/big",
        "front_fanout",
        "coalesce_off",
        "budget",
        "search",
        "pacer",
        "rolling_restart",
    ),
}


def test_the_stored_run_gives_the_table_it_printed() -> None:
    rows = rows_from(RUN["results"], QUICK, OPTS)
    assert rows == [Row(**r) for r in RUN["table"]]


@pytest.mark.parametrize("case", CASES)
def test_the_table_reads_as_before(case: str) -> None:
    results = CASES[case](RUN["results"])
    assert render(rows_from(results, QUICK, OPTS)) == TABLES[case]


def test_every_case_has_its_table() -> None:
    assert set(TABLES) == set(CASES)


@pytest.mark.parametrize("lost", ["cost_on", "cost_off"])
def test_a_cost_step_that_crashed_leaves_its_row_not_measured(lost: str) -> None:
    # Before, a crashed cost_off step (cost_on measured) raised KeyError here, after the whole run:
    # make bench printed no table and wrote no JSON.
    results = RUN["results"] | {lost: {"crashed": "RuntimeError: boom"}}
    (cost,) = [r for r in rows_from(results, QUICK, OPTS) if r.requirement.startswith("cost of a")]
    assert (cost.measured, cost.verdict) == ("not measured", "FAIL")
