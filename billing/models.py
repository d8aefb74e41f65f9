"""What every call cost, who paid, what coalescing saved, and the budgets.

A usage row outlives the thread it came from (deleting a thread does not refund its spend): it names
the assistant message by id, without a foreign key.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models import Q
from django.utils import timezone


class UsageRecord(models.Model):
    class Kind(models.TextChoices):
        CHARGE = "charge"  # a provider call, charged to the user whose send led it
        SAVED = "saved"  # a coalesced follower: the call it did not make (its cost is the leader's)

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_records")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    message_id = models.BigIntegerField(help_text="The assistant message the call produced.")
    request_id = models.CharField(max_length=64, blank=True, default="")
    provider = models.CharField(max_length=32, help_text="The connection the call went to.")
    model = models.CharField(max_length=128)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=10, default=0)
    # The provider reported no usage: the counts are estimates (billing.rules.estimate_tokens).
    estimated = models.BooleanField(default=False)
    status = models.CharField(max_length=16, blank=True, default="", help_text="How the call ended.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # One charge per call: finish's retries and a second settle write nothing twice.
            models.UniqueConstraint(
                fields=["message_id"], condition=Q(kind="charge"), name="usage_one_charge_per_message"
            ),
            models.CheckConstraint(condition=Q(kind__in=["charge", "saved"]), name="usage_kind_valid"),
        ]
        indexes = [
            models.Index(fields=["user", "created_at"], name="usage_user_time"),
            models.Index(fields=["created_at"], name="usage_time"),
            models.Index(fields=["message_id"], name="usage_message"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.message_id} {self.input_tokens}+{self.output_tokens} tokens"


class Budget(models.Model):
    """A spending limit: for one user, for each member of a group, or (neither) the deployment default."""

    class Unit(models.TextChoices):
        TOKENS = "tokens"
        USD = "usd", "USD"

    class Period(models.TextChoices):
        DAY = "day", "per day (UTC)"
        MONTH = "month", "per month (UTC)"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets")
    unit = models.CharField(max_length=8, choices=Unit.choices)
    period = models.CharField(max_length=8, choices=Period.choices)
    limit = models.DecimalField(max_digits=20, decimal_places=6, help_text="Tokens, or US dollars.")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=True) | Q(group__isnull=True), name="budget_user_or_group"
            ),
            models.CheckConstraint(condition=Q(limit__gte=0), name="budget_limit_not_negative"),
            models.UniqueConstraint(
                fields=["user", "unit", "period"], condition=Q(user__isnull=False), name="budget_one_per_user"
            ),
            models.UniqueConstraint(
                fields=["group", "unit", "period"],
                condition=Q(group__isnull=False),
                name="budget_one_per_group",
            ),
            models.UniqueConstraint(
                fields=["unit", "period"],
                condition=Q(user__isnull=True, group__isnull=True),
                name="budget_one_default",
            ),
        ]

    @property
    def scope(self) -> str:
        return "user" if self.user_id else "group" if self.group_id else "default"

    def __str__(self) -> str:
        who = f"user {self.user}" if self.user_id else f"group {self.group}" if self.group_id else "default"
        return f"{who}: {self.limit} {self.unit} {self.period}"


class BudgetHit(models.Model):
    """A user refused by a budget in one period: what the staff dashboard lists."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="budget_hits")
    unit = models.CharField(max_length=8)
    period = models.CharField(max_length=8)
    period_start = models.DateTimeField()
    limit = models.DecimalField(max_digits=20, decimal_places=6)
    first_at = models.DateTimeField(default=timezone.now)
    last_at = models.DateTimeField(default=timezone.now)
    refusals = models.PositiveIntegerField(default=1)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "unit", "period", "period_start"], name="budget_hit_one_per_period"
            )
        ]
        indexes = [models.Index(fields=["-last_at"], name="budget_hit_recent")]
