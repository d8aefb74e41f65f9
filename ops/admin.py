"""Feature flags in Django admin.

Saving or deleting a flag records who did it (`updated_by`, and admin's history via LogEntry, which
ModelAdmin writes itself) and, after the commit, propagates the change to every process
(`ops.flags.flags_changed`). The list shows every flag code knows, including those still on
their environment default, with a link that pre-fills the form, so no seed rows are needed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import admin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from ops.flags import flags_changed, flags_snapshot
from ops.models import FeatureFlag


class FeatureFlagForm(forms.ModelForm):
    """Only names that code reads are offered: a typo would otherwise be a flag nothing obeys."""

    name = forms.ChoiceField(choices=())

    class Meta:
        model = FeatureFlag
        fields = ["name", "enabled", "description"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = sorted(settings.FLAG_DEFAULTS)
        current = self.instance.name if self.instance.pk else None
        if current and current not in names:  # a row of a flag that code no longer reads
            names.append(current)
        self.fields["name"].choices = [(n, n) for n in names]  # type: ignore[attr-defined]


@admin.register(FeatureFlag)
class FeatureFlagAdmin(admin.ModelAdmin):
    form = FeatureFlagForm
    list_display = ["name", "enabled", "env_default", "description", "updated_at", "updated_by"]
    list_editable = ["enabled"]
    readonly_fields = ["updated_at", "updated_by"]
    search_fields = ["name", "description"]
    change_list_template = "admin/ops/featureflag/change_list.html"

    @admin.display(description="Environment default", boolean=True)
    def env_default(self, obj: FeatureFlag) -> bool:
        return bool(settings.FLAG_DEFAULTS.get(obj.name, False))

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        # "?name=X" from the list's links: start from the flag's current default, flipped.
        initial: dict[str, Any] = dict(super().get_changeform_initial_data(request))
        name = initial.get("name")
        if isinstance(name, str) and name in settings.FLAG_DEFAULTS and "enabled" not in request.GET:
            initial["enabled"] = not settings.FLAG_DEFAULTS[name]
        return initial

    def save_model(self, request: HttpRequest, obj: FeatureFlag, form: Any, change: bool) -> None:
        obj.updated_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)
        # Admin views run in a transaction: other processes must not reload before the commit.
        transaction.on_commit(flags_changed)

    def delete_model(self, request: HttpRequest, obj: FeatureFlag) -> None:
        super().delete_model(request, obj)
        transaction.on_commit(flags_changed)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[FeatureFlag]) -> None:
        super().delete_queryset(request, queryset)
        transaction.on_commit(flags_changed)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        stored = set(FeatureFlag.objects.values_list("name", flat=True))
        add_url = reverse("admin:ops_featureflag_add")
        effective = flags_snapshot()
        defaults = [
            {
                "name": name,
                "default": bool(settings.FLAG_DEFAULTS[name]),
                "effective": effective.get(name),
                "add_url": f"{add_url}?{urlencode({'name': name})}",
            }
            for name in sorted(settings.FLAG_DEFAULTS)
            if name not in stored
        ]
        context = {**(extra_context or {}), "flags_on_default": defaults, "flags_effective": effective}
        return super().changelist_view(request, extra_context=context)
