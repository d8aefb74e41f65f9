"""PASS/FAIL from a measured figure and its bar, and the suite's table. Pure: no I/O, no clock."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

OPS = ("<=", ">=", "==")


def verdict(measured: float | None, op: str, target: float, *, complete: bool = True) -> str:
    """ "PASS" when `measured op target` holds; "FAIL" otherwise, and when the figure is missing (None or
    NaN: the measurement did not happen) or `complete` is false (part of what it rests on was lost, e.g.
    a fan-out that did not deliver every delta)."""
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, not {op!r}")
    if measured is None or math.isnan(measured) or not complete:
        return "FAIL"
    ok = {"<=": measured <= target, ">=": measured >= target, "==": measured == target}[op]
    return "PASS" if ok else "FAIL"


@dataclass(frozen=True, slots=True)
class Row:
    requirement: str
    bar: str
    measured: str
    verdict: str


def row(
    requirement: str,
    bar: str,
    op: str,
    target: float,
    measured: float | None,
    shown: str,
    *,
    complete: bool = True,
) -> Row:
    """One line of the table: `shown` is how the figure reads; the verdict comes from `measured`."""
    return Row(requirement, bar, shown, verdict(measured, op, target, complete=complete))


def render(rows: Sequence[Row]) -> str:
    """A Markdown table (readable in a terminal, pasteable into the README)."""
    head = ("requirement", "bar", "measured", "result")
    cells = [head, *((r.requirement, r.bar, r.measured, r.verdict) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells[1:])])
