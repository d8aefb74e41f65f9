"""Prices: a model offer's own (staff set them in admin) before settings.MODEL_PRICES."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from billing.prices import prices_for
from billing.rules import Prices
from providers.catalog import Catalog, ConnectionInfo, Offer


def _catalog(**prices: Decimal | None) -> Catalog:
    conn = ConnectionInfo(name="openai", kind="openai", config={}, bucket="openai", rps=5, burst=5)
    offer = Offer(connection="openai", kind="openai", model="gpt-x", label="GPT X", **prices)  # type: ignore[arg-type]
    return Catalog(connections={"openai": conn}, offers=(offer,))


def test_an_offers_own_prices_come_first(settings: Any) -> None:
    settings.MODEL_PRICES = {"openai/gpt-x": ["9", "9"]}
    offers = _catalog(price_input_usd_per_mtok=Decimal("0.15"), price_output_usd_per_mtok=Decimal("0.6"))
    assert prices_for("openai", "gpt-x", offers) == Prices(Decimal("0.15"), Decimal("0.6"))
    # One price set: the other is free, not the settings' (staff priced this model).
    offers = _catalog(price_input_usd_per_mtok=Decimal("1"), price_output_usd_per_mtok=None)
    assert prices_for("openai", "gpt-x", offers) == Prices(Decimal("1"), Decimal("0"))


def test_without_offer_prices_the_settings_table_answers(settings: Any) -> None:
    settings.MODEL_PRICES = {"openai/gpt-x": ["2", "8"], "openai": ["1", "1"]}
    assert prices_for("openai", "gpt-x", _catalog()) == Prices(Decimal("2"), Decimal("8"))
    assert prices_for("openai", "other", _catalog()) == Prices(Decimal("1"), Decimal("1"))
    assert prices_for("anthropic", "claude", None) == Prices()
