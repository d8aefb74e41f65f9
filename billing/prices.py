"""Model prices, from one place: `prices_for(provider, model)` (`aprices_for` in async code).

Staff set prices on each model offer in admin (providers/models.py: price_input_usd_per_mtok,
price_output_usd_per_mtok); where an offer has none, settings.MODEL_PRICES answers:
{"connection/model": ["0.15", "0.60"], "connection": [...]} in USD per million input and output tokens,
the exact model first, then the connection's default; anything unpriced costs 0 (its tokens still count).
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings

from billing.rules import Prices
from providers.catalog import Catalog, acatalog


def prices_for(provider: str, model: str, offers: Catalog | None = None) -> Prices:
    offer = offers.find(f"{provider}/{model}") if offers is not None else None
    if offer is not None and (
        offer.price_input_usd_per_mtok is not None or offer.price_output_usd_per_mtok is not None
    ):
        return Prices(
            offer.price_input_usd_per_mtok or Decimal(0), offer.price_output_usd_per_mtok or Decimal(0)
        )
    table = settings.MODEL_PRICES
    entry = table.get(f"{provider}/{model}") or table.get(provider)
    if not entry:
        return Prices()
    return Prices(Decimal(str(entry[0])), Decimal(str(entry[1])))


async def aprices_for(provider: str, model: str) -> Prices:
    """The prices of a connection's model, from the catalog this process holds (a query when stale)."""
    return prices_for(provider, model, await acatalog())
