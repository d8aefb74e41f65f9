"""Writes: a call's charge, a follower's saving, a budget refusal. Sync, one transaction each."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from billing.models import BudgetHit, UsageRecord
from billing.rules import Rule


def usage_charge(
    *,
    user_id: int,
    message_id: int,
    request_id: str,
    provider: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    cost_usd: Decimal,
    estimated: bool,
    status: str,
) -> int | None:
    """Record what one provider call cost, charged to `user_id` (the leader's user). Returns how many
    followers saved the call so far (read with the write), or None if the call was already charged
    (a retried save)."""
    with transaction.atomic():
        try:
            with transaction.atomic():
                UsageRecord.objects.create(
                    user_id=user_id,
                    kind=UsageRecord.Kind.CHARGE,
                    message_id=message_id,
                    request_id=request_id,
                    provider=provider,
                    model=model,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    cost_usd=cost_usd,
                    estimated=estimated,
                    status=status,
                )
        except IntegrityError:
            return None
        return UsageRecord.objects.filter(kind=UsageRecord.Kind.SAVED, message_id=message_id).count()


@dataclass(frozen=True, slots=True)
class Saved:
    """A coalesced follower's send: the call of `message_id` it did not make."""

    user_id: int
    message_id: int
    request_id: str
    provider: str
    model: str


def usage_saved_many(*, entries: list[Saved]) -> list[Decimal]:
    """Record followers' savings, one row each. Their tokens and cost are those of the charge of their
    `message_id` (read with it in the reports: the leader's call may still be running). Returns the
    cost of each entry whose call is already charged."""
    with transaction.atomic():
        UsageRecord.objects.bulk_create(
            UsageRecord(
                user_id=e.user_id,
                kind=UsageRecord.Kind.SAVED,
                message_id=e.message_id,
                request_id=e.request_id,
                provider=e.provider,
                model=e.model,
            )
            for e in entries
        )
        charged = dict(
            UsageRecord.objects.filter(
                kind=UsageRecord.Kind.CHARGE, message_id__in={e.message_id for e in entries}
            ).values_list("message_id", "cost_usd")
        )
    return [charged[e.message_id] for e in entries if e.message_id in charged]


def budget_hit_record(*, user_id: int, rule: Rule, period_start: datetime.datetime) -> None:
    """Note that `user_id` was refused by `rule` in the period starting `period_start`."""
    now = timezone.now()
    with transaction.atomic():
        updated = BudgetHit.objects.filter(
            user_id=user_id, unit=rule.unit, period=rule.period, period_start=period_start
        ).update(last_at=now, refusals=F("refusals") + 1, limit=rule.limit)
        if updated:
            return
        try:
            with transaction.atomic():
                BudgetHit.objects.create(
                    user_id=user_id,
                    unit=rule.unit,
                    period=rule.period,
                    period_start=period_start,
                    limit=rule.limit,
                    first_at=now,
                    last_at=now,
                )
        except IntegrityError:  # another process noted it first
            BudgetHit.objects.filter(
                user_id=user_id, unit=rule.unit, period=rule.period, period_start=period_start
            ).update(last_at=now, refusals=F("refusals") + 1)
