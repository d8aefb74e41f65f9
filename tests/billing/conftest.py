"""Fixtures of the usage and budget tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _fresh_budget_caches(settings: Any) -> Iterator[None]:
    """Budget rules and noted refusals are cached per process by user id, and ids are reused after each
    test's flush: start and end every test with none."""
    from billing import budgets

    settings.MODEL_PRICES = {"demo/demo-1": ["0.15", "0.60"], "openai": ["3", "15"]}
    budgets.forget_rules()
    budgets._noted.clear()
    yield
    budgets.forget_rules()
    budgets._noted.clear()
