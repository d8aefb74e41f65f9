"""Model prices, from one place: `prices_for(provider, model)`.

Until models are managed as rows (the models issue: price_input_usd_per_mtok and
price_output_usd_per_mtok on each offer), prices come from settings.MODEL_PRICES:
{"provider/model": ["0.15", "0.60"], "provider": [...]} in USD per million input and output tokens, the
exact model first, then the provider's default; anything unlisted costs 0 (and its tokens still count).
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings

from billing.rules import Prices


def prices_for(provider: str, model: str) -> Prices:
    table = settings.MODEL_PRICES
    entry = table.get(f"{provider}/{model}") or table.get(provider)
    if not entry:
        return Prices()
    return Prices(Decimal(str(entry[0])), Decimal(str(entry[1])))
