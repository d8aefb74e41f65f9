"""Budget checks before a generation starts, and their settlement when it ends.

    reservation = await admit(user_id=..., provider=..., model=..., prompt_tokens=...)  # or BudgetExceeded
    ...
    await settle(reservation, tokens=..., cost=...)     # the real usage replaces the reservation
    await settle(reservation, tokens=0, cost=Decimal(0))  # the call never happened

A reservation is what a call could cost: its prompt (estimated: the context it would be sent) plus BUDGET_RESERVE_OUTPUT_TOKENS of
output. It is taken atomically from every counter that applies (billing/store.py), only while each is
below its limit: across processes a budget is over-run by at most one call (the last one admitted),
as long as calls cost no more than their reservations. No budget applies: nothing is read or counted.
Redis unreachable: the send goes through (a budget never takes the chat down) and a warning is logged.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal

from cachetools import TTLCache as _Memo
from django.conf import settings
from django.utils import timezone

from billing import selectors, services
from billing.prices import aprices_for
from billing.rules import (
    Prices,
    Rule,
    amount,
    applicable,
    cost_usd,
    limit_amount,
    period_bounds,
    seconds_until_reset,
)
from billing.store import MISSING, Check, budget_store
from core.dbasync import db_async
from core.outages import DATABASE_DOWN, REDIS_DOWN
from core.ttlcache import TTLCache

log = logging.getLogger(__name__)

# Budget rows are read once per user per BUDGET_RULES_TTL_S in each process: a change made in admin
# applies within that time, and a send reads nothing when the user's rules are cached.
BUDGET_RULES_TTL_S = 10.0
_rules: TTLCache[list[Rule]] = TTLCache(BUDGET_RULES_TTL_S)
# A refusal is noted in the database at most once a minute per user and budget in each process.
_noted: _Memo[tuple[object, ...], bool] = _Memo(maxsize=10_000, ttl=60.0)


class BudgetExceeded(Exception):
    """A generation would start past a budget: 429 budget_exceeded, Retry-After until it resets."""

    code = "budget_exceeded"
    status = 429

    def __init__(self, rule: Rule, retry_after_s: float) -> None:
        self.rule, self.retry_after = rule, max(1.0, retry_after_s)
        what = f"{rule.limit.normalize():f} tokens" if rule.unit == "tokens" else f"{rule.limit:.2f} USD"
        when = "tomorrow (00:00 UTC)" if rule.period == "day" else "on the 1st of next month (UTC)"
        self.message = (
            f"You have used your budget of {what} per {rule.period}; it resets {when}. "
            "Ask an administrator to raise it."
        )
        super().__init__(self.message)


@dataclass(slots=True)
class Reservation:
    user_id: int
    parts: list[tuple[str, str, int]] = field(default_factory=list)  # (counter key, unit, reserved)
    settled: bool = False


def _key(user_id: int, rule: Rule, start: datetime.datetime) -> str:
    return f"{settings.REDIS_KEY_PREFIX}:budget:{user_id}:{rule.unit}:{rule.period}:{start:%Y%m%d}"


async def rules_for(user_id: int) -> list[Rule]:
    return await _rules.get_or_load(user_id, lambda: db_async(selectors.budget_rules_for)(user_id=user_id))


def forget_rules() -> None:
    """Budgets changed in this process (admin): read them again at the next send."""
    _rules.clear()


async def admit(
    *,
    user_id: int,
    provider: str,
    model: str,
    prompt_tokens: int | Callable[[], Awaitable[int]],
    now: Callable[[], datetime.datetime] = timezone.now,
) -> Reservation | None:
    """Reserve a call's worth of every budget that applies to `user_id`, or raise BudgetExceeded.
    `prompt_tokens` may be a coroutine function: it is awaited only when a budget applies."""
    rules = applicable(await rules_for(user_id))
    if not rules:
        return None
    if not isinstance(prompt_tokens, int):
        prompt_tokens = await prompt_tokens()
    at = now()
    starts = [period_bounds(r.period, at)[0] for r in rules]
    prices = await aprices_for(provider, model)
    checks = _checks(
        user_id=user_id, rules=rules, starts=starts, at=at, prompt_tokens=prompt_tokens, prices=prices
    )
    store = budget_store()
    try:
        verdict, index = await store.reserve(checks)
        if verdict == MISSING:  # a counter's first use this period: start it from the database
            spent = await db_async(_spent_all)(user_id=user_id, rules=rules, starts=starts)
            checks = [
                Check(c.key, c.limit, c.reserve, c.ttl_s, s) for c, s in zip(checks, spent, strict=True)
            ]
            verdict, index = await store.reserve(checks)
    except REDIS_DOWN as exc:
        log.warning("budget: Redis unreachable (%s); letting the send through", exc)
        return None
    if verdict != 1:
        rule = rules[index - 1]
        await _note_refusal(user_id, rule, starts[index - 1])
        raise BudgetExceeded(rule, seconds_until_reset(rule.period, at))
    return Reservation(user_id, [(c.key, r.unit, c.reserve) for c, r in zip(checks, rules, strict=True)])


def _checks(
    *,
    user_id: int,
    rules: list[Rule],
    starts: list[datetime.datetime],
    at: datetime.datetime,
    prompt_tokens: int,
    prices: Prices,
) -> list[Check]:
    """One counter check per rule: a call's worth (its prompt and BUDGET_RESERVE_OUTPUT_TOKENS of output)."""
    reserve_tokens = prompt_tokens + settings.BUDGET_RESERVE_OUTPUT_TOKENS
    reserve_cost = cost_usd(
        input_tokens=prompt_tokens, output_tokens=settings.BUDGET_RESERVE_OUTPUT_TOKENS, prices=prices
    )
    return [
        Check(
            key=_key(user_id, r, start),
            limit=limit_amount(r),
            reserve=amount(r.unit, tokens=reserve_tokens, cost=reserve_cost),
            ttl_s=int(seconds_until_reset(r.period, at)) + 86400,
        )
        for r, start in zip(rules, starts, strict=True)
    ]


def _spent_all(*, user_id: int, rules: list[Rule], starts: list[datetime.datetime]) -> list[int]:
    return [
        selectors.spent_since(user_id=user_id, unit=r.unit, start=s)
        for r, s in zip(rules, starts, strict=True)
    ]


async def _note_refusal(user_id: int, rule: Rule, start: datetime.datetime) -> None:
    key = (user_id, rule.unit, rule.period, start)
    if key in _noted:
        return
    _noted[key] = True
    try:
        await db_async(services.budget_hit_record)(user_id=user_id, rule=rule, period_start=start)
    except DATABASE_DOWN:
        log.warning("budget: refusal of user %s not noted (database down)", user_id)


async def settle(reservation: Reservation | None, *, tokens: int, cost: Decimal) -> None:
    """Replace the reservation with what the call really spent (once; 0 if it never ran)."""
    if reservation is None or reservation.settled:
        return
    reservation.settled = True
    deltas = [(key, amount(unit, tokens=tokens, cost=cost) - held) for key, unit, held in reservation.parts]
    try:
        await budget_store().settle(deltas)
    except REDIS_DOWN as exc:  # the counter lapses with its period; the database has the charge
        log.warning("budget: settling failed (%s)", exc)
