"""Connections and their models in Django admin. An API key is entered once and never shown again."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core.crypto import InvalidToken
from providers.listing import ListingError, fetch_model_ids
from providers.models import Connection, ModelOffer


class ConnectionForm(forms.ModelForm):
    api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Stored encrypted and never shown again. Leave empty to keep the stored key.",
    )
    clear_api_key = forms.BooleanField(label="Remove the stored API key", required=False)

    class Meta:
        model = Connection
        fields = "__all__"

    def save(self, commit: bool = True) -> Connection:
        row: Connection = super().save(commit=False)
        if self.cleaned_data.get("clear_api_key"):
            row.set_api_key("")
        elif self.cleaned_data.get("api_key"):
            row.set_api_key(self.cleaned_data["api_key"])
        if commit:
            row.save()
            self.save_m2m()
        return row


class ModelOfferInline(admin.TabularInline):
    model = ModelOffer
    extra = 0
    fields = [
        "model",
        "label",
        "offered",
        "is_default",
        "everyone",
        "groups",
        "context_tokens",
        "price_input_usd_per_mtok",
        "price_output_usd_per_mtok",
        "position",
    ]
    filter_horizontal = ["groups"]


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    form = ConnectionForm
    list_display = ["name", "kind", "base_url", "enabled", "key_stored", "from_env", "offered_models"]
    list_filter = ["kind", "enabled", "from_env"]
    readonly_fields = ["key_stored", "from_env"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "base_url", "api_key", "clear_api_key", "key_stored", "enabled"]}),
        (
            "Timeouts (seconds; empty = the deployment's)",
            {
                "fields": [
                    "connect_timeout_s",
                    "first_byte_timeout_s",
                    "idle_timeout_s",
                    "total_timeout_s",
                ]
            },
        ),  # fmt: skip
        ("Pacer", {"fields": ["rps", "burst", "bucket"]}),
        ("Origin", {"fields": ["from_env"]}),
    ]
    inlines = [ModelOfferInline]
    actions = ["fetch_models"]

    @admin.display(boolean=True, description="API key stored")
    def key_stored(self, obj: Connection) -> bool:
        return bool(obj.api_key_encrypted)

    @admin.display(description="Offered models")
    def offered_models(self, obj: Connection) -> int:
        return obj.offers.filter(offered=True).count()

    @admin.action(description="Fetch models (new ones are added unticked)")
    def fetch_models(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        for row in queryset:
            try:
                ids = fetch_model_ids(kind=row.kind, base_url=row.base_url, api_key=row.api_key)
            except (ListingError, InvalidToken) as exc:
                why = str(exc) if isinstance(exc, ListingError) else "its API key cannot be decrypted."
                self.message_user(request, f"{row.name}: {why}", messages.ERROR)
                continue
            known = set(row.offers.values_list("model", flat=True))
            new = [ModelOffer(connection=row, model=i, label=i, offered=False) for i in ids if i not in known]
            ModelOffer.objects.bulk_create(new)
            self.message_user(
                request,
                f"{row.name}: {len(ids)} models listed, {len(new)} new (tick 'offered' to offer them).",
                messages.SUCCESS,
            )
