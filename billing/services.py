"""Writes: a call's charge, a follower's saving, a budget refusal. Sync, one transaction each."""

from __future__ import annotations

import datetime
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
) -> bool:
    """Record what one provider call cost, charged to `user_id` (the leader's user). False if this
    call was already charged (a retried save)."""
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
        return False
    return True


def usage_saved(
    *, user_id: int, message_id: int, request_id: str, provider: str, model: str
) -> Decimal | None:
    """A coalesced follower's send: one call saved. Its tokens and cost are those of the charge of
    `message_id` (read with it in the reports: the leader's call may still be running). Returns that
    charge's cost if it is already recorded."""
    UsageRecord.objects.create(
        user_id=user_id,
        kind=UsageRecord.Kind.SAVED,
        message_id=message_id,
        request_id=request_id,
        provider=provider,
        model=model,
    )
    return (
        UsageRecord.objects.filter(kind=UsageRecord.Kind.CHARGE, message_id=message_id)
        .values_list("cost_usd", flat=True)
        .first()
    )


def usage_saved_count(*, message_id: int) -> int:
    """How many followers saved the call of `message_id` so far."""
    return UsageRecord.objects.filter(kind=UsageRecord.Kind.SAVED, message_id=message_id).count()


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
