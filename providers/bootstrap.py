"""Start-up: the stored API keys open with FIELD_ENCRYPTION_KEY, and the environment's providers
(OPENAI_*, ANTHROPIC_*, GEMINI_*, DEMO_*: `settings.PROVIDERS`) exist as connections of the same name,
so a deployment configured the old way keeps working and its connections appear in admin.

The environment wins for what it names (kind, base URL, key, pacer limits) at every start; what staff
set in admin besides (more models, labels, groups, prices, `enabled`) is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, transaction

from core.crypto import InvalidToken
from providers.catalog import env_configured
from providers.models import Connection, ModelOffer

log = logging.getLogger(__name__)


def check_keys() -> None:
    """Raise ImproperlyConfigured, naming the connection, if a stored API key does not open."""
    for row in Connection.objects.exclude(api_key_encrypted="").only("name", "api_key_encrypted"):
        try:
            _ = row.api_key
        except InvalidToken:
            raise ImproperlyConfigured(
                f"FIELD_ENCRYPTION_KEY cannot decrypt the API key of connection {row.name!r}: it is not the "
                "key the keys were stored with. Set the old key again (to rotate, list the new key first: "
                "FIELD_ENCRYPTION_KEY=new,old, then run `manage.py rotate_encryption_key`), or enter the "
                "connection's API key again in admin."
            ) from None


@transaction.atomic
def connection_from_env(name: str, config: Mapping[str, Any]) -> Connection:
    """Create or update connection `name` from its settings entry, and offer its model."""
    kind = str(config.get("kind", name))
    pace = settings.PACER_LIMITS.get(name, {"rps": 0.0 if kind == "demo" else 50.0, "burst": 10})
    row = Connection.objects.select_for_update().filter(name=name).first() or Connection(name=name)
    row.kind, row.base_url, row.from_env = kind, str(config.get("base_url", "")), True
    row.rps, row.burst = float(pace["rps"]), int(pace["burst"])
    key = str(config.get("api_key") or "")
    try:
        unchanged = row.api_key == key
    except InvalidToken:
        unchanged = False
    if not unchanged:
        row.set_api_key(key)
    row.save()
    model = str(config["model"])
    has_default = ModelOffer.objects.filter(is_default=True).exists()
    ModelOffer.objects.get_or_create(
        connection=row,
        model=model,
        defaults={"label": model, "is_default": name == settings.DEFAULT_PROVIDER and not has_default},
    )
    return row


def connections_from_env() -> list[str]:
    """The environment's usable providers as connections; returns their names."""
    names = []
    for name, config in settings.PROVIDERS.items():
        if env_configured(name, config):
            connection_from_env(name, config)
            names.append(name)
    return names


def start_up() -> None:
    """At server start: a wrong FIELD_ENCRYPTION_KEY stops it here (not at the first send), then the
    environment's connections are written. A database without the tables yet (migrate not run) is
    skipped with a warning: the settings still serve until then."""
    try:
        check_keys()
        names = connections_from_env()
    except DatabaseError as exc:
        log.warning("connections not read or written at start-up (%s); run `manage.py migrate`", exc)
        return
    log.info("connections from the environment: %s", ", ".join(names) or "(none)")
