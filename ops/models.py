"""Feature flags that staff switch in Django admin.

A `FeatureFlag` row overrides the environment default of its flag (`settings.FLAG_DEFAULTS`); without a
row the default applies. Code never reads this table directly: it calls `ops.flags.flag_enabled`,
which answers from process memory (see ops/flags.py for how changes reach every process).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class FeatureFlag(models.Model):
    # The names code asks for (keys of settings.FLAG_DEFAULTS); the admin form only offers those.
    name = models.CharField(max_length=64, unique=True)
    enabled = models.BooleanField(default=True)
    description = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
    )

    class Meta:
        ordering = ["name"]
        verbose_name = "feature flag"
        # The table kept its name when the model moved from the providers app (ops/migrations/0001).
        db_table = "providers_featureflag"

    def __str__(self) -> str:
        return f"{self.name} ({'on' if self.enabled else 'off'})"
