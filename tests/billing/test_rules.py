"""The pure arithmetic of billing/rules.py: costs in Decimal, estimates, periods, which budget applies."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest

from billing.rules import (
    Prices,
    Rule,
    admits,
    amount,
    applicable,
    cost_usd,
    estimate_tokens,
    limit_amount,
    period_bounds,
    seconds_until_reset,
)

UTC = datetime.UTC


@pytest.mark.parametrize(
    ("inp", "out", "prices", "expected"),
    [
        (1_000_000, 0, Prices(Decimal("0.15"), Decimal("0.60")), Decimal("0.15")),
        (0, 1_000_000, Prices(Decimal("0.15"), Decimal("0.60")), Decimal("0.60")),
        (1234, 567, Prices(Decimal("0.15"), Decimal("0.60")), Decimal("0.0005253000")),
        (3, 7, Prices(Decimal("3"), Decimal("15")), Decimal("0.0001140000")),
        (1, 0, Prices(Decimal("0.01"), Decimal(0)), Decimal("0.0000000100")),
        (10, 10, Prices(), Decimal(0)),
    ],
)
def test_cost_is_exact_decimal(inp: int, out: int, prices: Prices, expected: Decimal) -> None:
    cost = cost_usd(input_tokens=inp, output_tokens=out, prices=prices)
    assert isinstance(cost, Decimal) and cost == expected


def test_costs_add_up_exactly() -> None:
    # 0.1 + 0.2 in floats is 0.30000000000000004; a thousand small calls must sum to the cent.
    one = cost_usd(input_tokens=100, output_tokens=0, prices=Prices(Decimal(1), Decimal(0)))
    assert sum([one] * 1000, Decimal(0)) == Decimal("0.1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", 0), ("hello", 2), ("hello world, how are you", 6), ("你好世界", 4), ("a b c d e f", 6)],
)
def test_estimate(text: str, expected: int) -> None:
    assert estimate_tokens(text) == expected


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("day", datetime.datetime(2026, 12, 4, 10, 3, tzinfo=UTC), datetime.datetime(2026, 12, 4, tzinfo=UTC), datetime.datetime(2026, 12, 5, tzinfo=UTC)),
        ("month", datetime.datetime(2026, 12, 31, 23, 59, tzinfo=UTC), datetime.datetime(2026, 12, 1, tzinfo=UTC), datetime.datetime(2027, 1, 1, tzinfo=UTC)),
        ("month", datetime.datetime(2028, 2, 10, tzinfo=UTC), datetime.datetime(2028, 2, 1, tzinfo=UTC), datetime.datetime(2028, 3, 1, tzinfo=UTC)),
        # 23:30 in UTC-5 is the next day in UTC.
        ("day", datetime.datetime(2026, 3, 1, 23, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=-5))), datetime.datetime(2026, 3, 2, tzinfo=UTC), datetime.datetime(2026, 3, 3, tzinfo=UTC)),
    ],
)  # fmt: skip
def test_periods_are_utc(
    period: str, now: datetime.datetime, start: datetime.datetime, end: datetime.datetime
) -> None:
    assert period_bounds(period, now) == (start, end)
    assert seconds_until_reset(period, now) == (end - now).total_seconds()


def rule(unit: str, period: str, limit: str, scope: str) -> Rule:
    return Rule(unit=unit, period=period, limit=Decimal(limit), scope=scope)


def test_the_most_specific_budget_applies() -> None:
    rules = [
        rule("tokens", "day", "100", "default"),
        rule("tokens", "day", "500", "group"),
        rule("tokens", "day", "800", "group"),
        rule("usd", "month", "5", "default"),
        rule("usd", "month", "1", "user"),
    ]
    assert applicable(rules) == [rule("tokens", "day", "800", "group"), rule("usd", "month", "1", "user")]
    assert applicable([]) == []


def test_amounts_and_the_admission_edge() -> None:
    assert amount("tokens", tokens=120, cost=Decimal("0.5")) == 120
    assert amount("usd", tokens=120, cost=Decimal("0.0000001")) == 1  # rounded up to a micro-dollar
    assert limit_amount(rule("usd", "day", "2.5", "user")) == 2_500_000
    assert admits(spent=49, limit=50) and not admits(spent=50, limit=50)
    assert not admits(spent=0, limit=0)  # a zero budget admits nothing
