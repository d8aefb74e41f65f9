"""Feature flags. `flag_enabled(name)` is cheap (no DB query per call)."""

from __future__ import annotations

from django.conf import settings


def flag_enabled(name: str) -> bool:
    return bool(settings.FLAG_DEFAULTS.get(name, False))
