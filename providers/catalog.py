"""The model catalog: every usable connection and the models it offers, to whom, read from the database
(providers/models.py) with the settings' PROVIDERS as the fallback for names the database lacks.

A process keeps one catalog in memory for MODEL_CATALOG_TTL_S (a send checks access without a query);
a change saved in this process drops it at once. Deciding who may use what is pure (`Catalog`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings

from core.crypto import InvalidToken
from core.singleflight import Singleflight

log = logging.getLogger(__name__)

PUBLIC_OPENAI_URL = "https://api.openai.com/v1"


@dataclass(frozen=True, slots=True)
class Offer:
    connection: str
    kind: str
    model: str
    label: str
    is_default: bool = False
    everyone: bool = True
    groups: frozenset[int] = frozenset()
    context_tokens: int | None = None
    price_input_usd_per_mtok: Decimal | None = None
    price_output_usd_per_mtok: Decimal | None = None

    @property
    def id(self) -> str:
        return f"{self.connection}/{self.model}"

    def open_to(self, group_ids: Iterable[int]) -> bool:
        return self.everyone or not self.groups.isdisjoint(group_ids)


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    name: str
    kind: str
    # What the provider registry builds from (base_url, api_key, model, timeouts, kind's extras). Not in
    # the repr: it holds the plain API key.
    config: Mapping[str, Any] = field(repr=False)
    bucket: str
    rps: float
    burst: int


@dataclass(frozen=True, slots=True)
class Catalog:
    connections: Mapping[str, ConnectionInfo] = field(default_factory=dict)
    offers: tuple[Offer, ...] = ()
    # Every send looks its model up: by id, not by a scan of the offers.
    _by_id: dict[str, Offer] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_id.update((o.id, o) for o in reversed(self.offers))  # the first of an id wins

    def allowed(self, group_ids: Iterable[int]) -> list[Offer]:
        groups = frozenset(group_ids)
        return [o for o in self.offers if o.connection in self.connections and o.open_to(groups)]

    def find(self, model_id: str) -> Offer | None:
        return self._by_id.get(model_id)

    def may_use(self, model_id: str, group_ids: Iterable[int]) -> bool:
        offer = self.find(model_id)
        return (
            offer is not None and offer.connection in self.connections and offer.open_to(frozenset(group_ids))
        )

    def default_for(self, group_ids: Iterable[int], *, preferred_connection: str = "") -> Offer | None:
        """The model a new thread gets when it names none: a default one, else the first of the
        preferred connection (DEFAULT_PROVIDER), else the first allowed."""
        allowed = self.allowed(group_ids)
        return (
            next((o for o in allowed if o.is_default), None)
            or next((o for o in allowed if o.connection == preferred_connection), None)
            or (allowed[0] if allowed else None)
        )


def split_model_id(model_id: str) -> tuple[str, str] | None:
    """("<connection>", "<model>") of a model id, or None if it has no connection part."""
    connection, sep, model = model_id.partition("/")
    return (connection, model) if sep and connection and model else None


def env_configured(name: str, config: Mapping[str, Any]) -> bool:
    """Whether a settings entry can answer at all: an HTTP API needs a key, except an OpenAI-compatible
    server of one's own (a base URL other than OpenAI's: Ollama and vLLM need none)."""
    kind = str(config.get("kind", name))
    if kind == "demo":
        return True
    if config.get("api_key"):
        return True
    return (
        kind == "openai" and str(config.get("base_url", PUBLIC_OPENAI_URL)).rstrip("/") != PUBLIC_OPENAI_URL
    )


def _settings_connection(name: str, config: Mapping[str, Any]) -> tuple[ConnectionInfo, Offer]:
    kind = str(config.get("kind", name))
    pace = settings.PACER_LIMITS.get(name, {"rps": 0.0, "burst": 10})
    info = ConnectionInfo(
        name=name,
        kind=kind,
        config={**config, "kind": kind},
        bucket=name,
        rps=float(pace["rps"]),
        burst=int(pace["burst"]),
    )
    model = str(config["model"])
    return info, Offer(connection=name, kind=kind, model=model, label=model)


def _timeouts(row: Any) -> dict[str, float]:
    pairs = {
        "connect": row.connect_timeout_s,
        "first_byte": row.first_byte_timeout_s,
        "idle": row.idle_timeout_s,
        "total": row.total_timeout_s,
    }
    return {**settings.PROVIDER_TIMEOUTS, **{k: v for k, v in pairs.items() if v is not None}}


def _db_connection(row: Any, api_key: str, offers: list[dict[str, Any]]) -> ConnectionInfo:
    base = settings.PROVIDERS.get(row.name, {})
    # The kind's own tuning in settings (e.g. the demo's speed) stays, under what the row says.
    extras = base if str(base.get("kind", row.name)) == row.kind else {}
    default = next((o["model"] for o in offers if o["is_default"]), offers[0]["model"] if offers else "")
    config = {
        **extras,
        "kind": row.kind,
        "base_url": row.base_url,
        "api_key": api_key,
        "model": default or str(extras.get("model", "")),
        "timeouts": _timeouts(row),
    }
    return ConnectionInfo(
        name=row.name, kind=row.kind, config=config, bucket=row.pacer_bucket, rps=row.rps, burst=row.burst
    )


def _db_offers(
    row: Any, offers: list[dict[str, Any]], groups: Mapping[int, set[int]]
) -> list[tuple[int, Offer]]:
    return [
        (
            o["position"],
            Offer(
                connection=row.name,
                kind=row.kind,
                model=o["model"],
                label=o["label"] or o["model"],
                is_default=o["is_default"],
                everyone=o["everyone"],
                groups=frozenset(groups.get(o["id"], ())),
                context_tokens=o["context_tokens"],
                price_input_usd_per_mtok=o["price_input_usd_per_mtok"],
                price_output_usd_per_mtok=o["price_output_usd_per_mtok"],
            ),
        )
        for o in offers
    ]


_OFFER_FIELDS = (
    "id",
    "connection_id",
    "model",
    "label",
    "is_default",
    "everyone",
    "context_tokens",
    "price_input_usd_per_mtok",
    "price_output_usd_per_mtok",
    "position",
)


def load_catalog() -> Catalog:
    """Read the catalog (three queries). Connections in the database win over settings entries of the
    same name; a disabled one, or one whose key FIELD_ENCRYPTION_KEY cannot open, offers nothing.

    The offers and their groups are read as plain rows, not model instances: with the groups prefetched
    onto each offer the ORM took about 20 ms of CPU at 200 offers (a send after a quiet spell waits on
    this load; benchmarks/catalog_bench.py)."""
    from providers.models import Connection, ModelOffer

    rows = list(Connection.objects.all())
    offers: dict[int, list[dict[str, Any]]] = {}
    for offer in ModelOffer.objects.filter(offered=True).values(*_OFFER_FIELDS):  # in the pickers' order
        offers.setdefault(offer["connection_id"], []).append(offer)
    groups: dict[int, set[int]] = {}
    for offer_id, group_id in ModelOffer.groups.through.objects.values_list("modeloffer_id", "group_id"):
        groups.setdefault(offer_id, set()).add(group_id)
    connections: dict[str, ConnectionInfo] = {}
    ranked: list[tuple[int, int, Offer]] = []
    for row in rows:
        if not row.enabled:
            continue
        try:
            key = row.api_key
        except InvalidToken:
            log.error("connection %s: its API key cannot be decrypted with FIELD_ENCRYPTION_KEY", row.name)
            continue
        mine = offers.get(row.pk, [])
        connections[row.name] = _db_connection(row, key, mine)
        ranked += [(pos, 1, offer) for pos, offer in _db_offers(row, mine, groups)]
    known = {row.name for row in rows}
    for name, config in settings.PROVIDERS.items():
        if name not in known and env_configured(name, config):
            info, offer = _settings_connection(name, config)
            connections[name] = info
            ranked.append((0, 0, offer))
    ranked.sort(key=lambda r: (r[0], r[1]))
    return Catalog(connections=connections, offers=tuple(o for _, _, o in ranked))


# --- the process's copy -------------------------------------------------------------------------------

_lock = threading.Lock()
# (loaded at, the settings.PROVIDERS it was built with, the catalog)
_cached: tuple[float, object, Catalog] | None = None


def _fresh() -> Catalog | None:
    entry = _cached
    if entry is None or entry[1] is not settings.PROVIDERS:
        return None
    if time.monotonic() - entry[0] > settings.MODEL_CATALOG_TTL_S:
        return None
    return entry[2]


def catalog() -> Catalog:
    """The catalog (sync code: may query)."""
    global _cached
    found = _fresh()
    if found is not None:
        return found
    loaded = load_catalog()
    with _lock:
        _cached = (time.monotonic(), settings.PROVIDERS, loaded)
    return loaded


# Callers meeting a stale catalog together share one load: after a quiet spell, the first sends to many
# threads each ran the three queries.
_loads: Singleflight[Catalog] = Singleflight()


async def acatalog() -> Catalog:
    """The catalog (async code: one hop to the database when it is stale, shared by those waiting)."""
    found = _fresh()
    if found is not None:
        return found
    from core.dbasync import db_async

    return await _loads.do("catalog", db_async(catalog))


def peek() -> Catalog | None:
    """The catalog in memory, however old (None if never loaded or built for other settings)."""
    entry = _cached
    return entry[2] if entry is not None and entry[1] is settings.PROVIDERS else None


def reset(*, drop: bool = False) -> None:
    """Read the catalog again at its next use. Until then `peek` still answers the old one (a generation
    starting meanwhile keeps its connection's pacer bucket); `drop` forgets it (tests: a flushed database)."""
    global _cached
    with _lock:
        entry = _cached
        _cached = None if drop or entry is None else (float("-inf"), entry[1], entry[2])


def _changed(*args: Any, **kwargs: Any) -> None:
    reset()


def connect_signals() -> None:
    from django.db.models.signals import m2m_changed, post_delete, post_save

    from providers.models import Connection, ModelOffer

    for model in (Connection, ModelOffer):
        post_save.connect(_changed, sender=model, dispatch_uid=f"catalog-save-{model.__name__}")
        post_delete.connect(_changed, sender=model, dispatch_uid=f"catalog-delete-{model.__name__}")
    m2m_changed.connect(_changed, sender=ModelOffer.groups.through, dispatch_uid="catalog-groups")
