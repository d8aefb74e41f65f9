"""Usage arithmetic, pure: token estimates, costs in Decimal, budget periods and decisions.

No clock, no I/O: callers pass `now`, prices and the amounts spent, so every rule is a table test away.
"""

from __future__ import annotations

import calendar
import datetime
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

MILLION = Decimal(1_000_000)
# Costs are kept to 10 decimal places of a dollar (the column's precision): a token of the cheapest
# model (0.01 USD per million) is 1e-8 USD.
COST_QUANTUM = Decimal("0.0000000001")
# Budgets in USD are counted in Redis as whole micro-dollars (INCRBY is exact on integers).
MICROS = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Prices:
    """USD per million tokens."""

    input_usd_per_mtok: Decimal = Decimal(0)
    output_usd_per_mtok: Decimal = Decimal(0)


def cost_usd(*, input_tokens: int, output_tokens: int, prices: Prices) -> Decimal:
    """tokens x price per million, exact in Decimal, rounded half-up to COST_QUANTUM."""
    raw = (
        Decimal(input_tokens) * prices.input_usd_per_mtok
        + Decimal(output_tokens) * prices.output_usd_per_mtok
    ) / MILLION
    return raw.quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)


def estimate_tokens(text: str) -> int:
    """A labelled estimate where no provider report and no offline tokenizer is at hand: about four
    characters of ASCII per token (OpenAI's rule of thumb for English), one per other character (CJK
    text runs about one token a character), and never fewer than the words. (No tokenizer: none that
    works offline ships its vocabulary in a well-kept package; see the commit that wrote this line.)"""
    if not text:
        return 0
    ascii_chars = sum(1 for c in text if c.isascii())
    other = len(text) - ascii_chars
    return max(len(text.split()), math.ceil(ascii_chars / 4) + other)


def estimate_prompt_tokens(history: Iterable[tuple[str, str]]) -> int:
    """The input of a call: every message's text, plus a few tokens of framing per message (as the
    chat formats add)."""
    return sum(estimate_tokens(content) + 4 for _, content in history)


# --- budgets ------------------------------------------------------------------------------------------

UNITS = ("tokens", "usd")
PERIODS = ("day", "month")


def period_bounds(period: str, now: datetime.datetime) -> tuple[datetime.datetime, datetime.datetime]:
    """[start, end) of the UTC day or month holding `now` (an aware datetime)."""
    now = now.astimezone(datetime.UTC)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return start, start + datetime.timedelta(days=1)
    start = start.replace(day=1)
    days = calendar.monthrange(start.year, start.month)[1]
    return start, start + datetime.timedelta(days=days)


def seconds_until_reset(period: str, now: datetime.datetime) -> float:
    return (period_bounds(period, now)[1] - now).total_seconds()


@dataclass(frozen=True, slots=True)
class Rule:
    """One budget that applies to a user: how much (`limit`, in tokens or USD) per day or month."""

    unit: str
    period: str
    limit: Decimal
    scope: str  # "user", "group" or "default": which row it came from


def applicable(rules: Sequence[Rule]) -> list[Rule]:
    """For each (unit, period), the most specific rule: the user's own, else the most generous of their
    groups', else the deployment default. A user with a daily token budget and a monthly USD one is
    held to both."""
    rank = {"user": 0, "group": 1, "default": 2}
    best: dict[tuple[str, str], Rule] = {}
    for rule in rules:
        key = (rule.unit, rule.period)
        held = best.get(key)
        if (
            held is None
            or rank[rule.scope] < rank[held.scope]
            or (rank[rule.scope] == rank[held.scope] and rule.limit > held.limit)
        ):
            best[key] = rule
    return sorted(best.values(), key=lambda r: (r.unit, r.period))


def amount(unit: str, *, tokens: int, cost: Decimal) -> int:
    """What a call spends of a budget in `unit`, as the integer Redis counts: tokens, or micro-dollars
    (rounded up: a reservation must not undercount)."""
    if unit == "tokens":
        return tokens
    return int((cost * MICROS).to_integral_value(rounding=ROUND_CEILING))


def limit_amount(rule: Rule) -> int:
    """The rule's limit in the counter's integer unit."""
    return int(rule.limit) if rule.unit == "tokens" else int((rule.limit * MICROS).to_integral_value())


def admits(*, spent: int, limit: int) -> bool:
    """A generation may start while what is spent and reserved is below the limit. The last one
    admitted may end past it, by at most its own cost: the over-run bound of the README."""
    return spent < limit
