"""Provider instances by name, one per (name, event loop), built from the model catalog's connection of
that name (providers/catalog.py: the database's connections), else from `settings.PROVIDERS`.

HTTP providers own an `httpx.AsyncClient`, whose connections belong to the loop that opened them,
so instances are cached per running loop (like channels_redis keeps connections per loop) and never
at import time. They close with the loop's other resources (`core.loopres.aclose_all()`).

A `settings.PROVIDERS` entry may name its implementation with `"kind"` (default: the entry's name),
so several OpenAI-compatible servers can be configured side by side:
`PROVIDERS["vllm"] = {"kind": "openai", "base_url": ..., "model": ...}`.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings

from core import loopres
from providers import catalog

from ._anthropic import AnthropicProvider
from ._base import Provider
from ._demo import DemoProvider
from ._errors import UnknownProvider
from ._gemini import GeminiProvider
from ._http import Timeouts
from ._openai import OpenAIProvider

ProviderFactory = Callable[[str, Mapping[str, Any]], Provider]


def _http_factory(
    cls: type[OpenAIProvider] | type[AnthropicProvider] | type[GeminiProvider],
) -> ProviderFactory:
    def build(name: str, config: Mapping[str, Any]) -> Provider:
        timeouts = Timeouts.from_settings(config.get("timeouts") or settings.PROVIDER_TIMEOUTS)
        return cls.from_settings(name, config, timeouts=timeouts)

    return build


_FACTORIES: dict[str, ProviderFactory] = {
    "demo": DemoProvider.from_settings,
    "openai": _http_factory(OpenAIProvider),
    "anthropic": _http_factory(AnthropicProvider),
    "gemini": _http_factory(GeminiProvider),
}

# Weak keys: a closed and dropped loop takes its instances with it instead of leaking them.
_instances: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, tuple[str, Provider]]] = (
    weakref.WeakKeyDictionary()
)
# Several threads may each run a loop (sync_to_async workers, test servers): guard the dict itself.
_lock = threading.Lock()


def _kind(name: str, config: Mapping[str, Any]) -> str:
    return str(config.get("kind", name))


# Instances replaced because their connection changed, closed with the loop (one may still be streaming).
_retired: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Provider]] = weakref.WeakKeyDictionary()


def _config(name: str) -> Mapping[str, Any] | None:
    """The connection `name` of the catalog in memory, else the settings entry."""
    known = catalog.peek()
    info = known.connections.get(name) if known is not None else None
    return info.config if info is not None else settings.PROVIDERS.get(name)


def _fingerprint(config: Mapping[str, Any]) -> str:
    return repr(sorted((k, repr(v)) for k, v in config.items()))


def available_providers() -> list[str]:
    """Names of the configured providers that this code can build, in settings order."""
    return [name for name, config in settings.PROVIDERS.items() if _kind(name, config) in _FACTORIES]


def build_provider(name: str) -> Provider:
    """A new, uncached instance of provider `name` (the caller must `aclose()` it)."""
    config = _config(name)
    factory = _FACTORIES.get(_kind(name, config)) if config is not None else None
    if config is None or factory is None:
        known = ", ".join(available_providers()) or "(none)"
        raise UnknownProvider(
            f"Unknown provider {name!r}. Use one of: {known} "
            "(configured in settings.PROVIDERS; DEFAULT_PROVIDER picks the default).",
            # Safe for users: the configured names are the API's vocabulary, the asked name is cut short.
            message=f"Unknown provider {name[:40]!r}. Use one of: {known}.",
            provider=name,
        )
    return factory(name, config)


def get_provider(name: str | None = None) -> Provider:
    """The provider `name` (default: `settings.DEFAULT_PROVIDER`) for the running event loop.

    Called outside a running loop (sync code that only wants `default_model`), it returns a fresh
    uncached instance: its HTTP client is created lazily, so nothing leaks unless it streams.
    Raises `UnknownProvider` for names missing from `settings.PROVIDERS`.
    """
    name = name or settings.DEFAULT_PROVIDER
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return build_provider(name)
    config = _config(name)
    stamp = _fingerprint(config) if config is not None else ""
    with _lock:
        per_loop = _instances.get(loop)
        if per_loop is None:
            per_loop = _instances[loop] = {}
            loopres.register(_close_providers, stage=loopres.Stage.CLIENT)
        found = per_loop.get(name)
        if found is not None and found[0] == stamp:
            return found[1]
        provider = build_provider(name)
        if (
            found is not None
        ):  # staff changed the connection (its key, URL...): the next call uses the new one
            _retired.setdefault(loop, []).append(found[1])
        per_loop[name] = (stamp, provider)
    return provider


async def _close_providers() -> None:
    """Close and forget every provider instance bound to the running loop."""
    loop = asyncio.get_running_loop()
    with _lock:
        providers = [p for _, p in _instances.pop(loop, {}).values()] + _retired.pop(loop, [])
    for provider in providers:
        await provider.aclose()
