"""Who may use which model: the caller's models, the model a new thread gets, and the check every send,
creation and switch makes (400 `model_not_allowed`). The decisions are pure over a catalog
(providers/catalog.py) and the caller's group ids; the lookups sit at the edges."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db.models.signals import m2m_changed
from django.dispatch import receiver

from core.dbasync import db_async
from core.ttlcache import TTLCache
from providers.catalog import Catalog, Offer, acatalog, catalog, split_model_id
from threads.validation import InvalidInput

# A user's groups, per process, for as long as the catalog (a change made here applies at once).
_groups: TTLCache[frozenset[int]] = TTLCache(5.0)


def group_ids(user: AbstractBaseUser | AnonymousUser) -> frozenset[int]:
    if not user.is_authenticated:
        return frozenset()
    return frozenset(User.groups.through.objects.filter(user_id=user.pk).values_list("group_id", flat=True))


async def agroup_ids(user: AbstractBaseUser | AnonymousUser) -> frozenset[int]:
    _groups.ttl_s = _groups.negative_ttl_s = settings.MODEL_CATALOG_TTL_S
    return await _groups.get_or_load(user.pk, lambda: db_async(group_ids)(user))


@receiver(m2m_changed, sender=User.groups.through, dispatch_uid="threads.modelaccess.groups_changed")
def _groups_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    if isinstance(instance, User):
        _groups.discard(instance.pk)
    else:  # a group's members changed
        _groups.clear()


def reset() -> None:
    _groups.clear()


def offer_payload(offer: Offer, *, default: bool) -> dict[str, Any]:
    return {
        "id": offer.id,
        "connection": offer.connection,
        "provider": offer.kind,
        "model": offer.model,
        "label": offer.label,
        "default": default,
        "context_tokens": offer.context_tokens,
    }


def models_for(cat: Catalog, groups: frozenset[int]) -> list[dict[str, Any]]:
    """GET /api/models: the caller's models, their default flagged."""
    default = cat.default_for(groups, preferred_connection=settings.DEFAULT_PROVIDER)
    return [offer_payload(o, default=o is default) for o in cat.allowed(groups)]


def _not_allowed(model_id: str) -> InvalidInput:
    return InvalidInput(
        "model_not_allowed",
        f"Model {model_id[:200]!r} is not offered to you. GET /api/models lists the models you may use.",
    )


def choose(cat: Catalog, groups: frozenset[int], *, model: str | None, provider: str | None) -> Offer:
    """The offer a new thread gets. `model` is "<connection>/<model>", or (the v1 form) a model name of
    `provider`'s connection; neither: the caller's default. Raises InvalidInput."""
    if model is not None:
        parts = split_model_id(model)
        if parts is None:
            connection = provider or _default_connection(cat, groups)
            parts = (connection, model)
        model_id = f"{parts[0]}/{parts[1]}"
        if provider is not None and parts[0] != provider:
            raise _not_allowed(model_id)
        offer = cat.find(model_id)
        if offer is None or not cat.may_use(model_id, groups):
            raise _not_allowed(model_id)
        return offer
    if provider is not None:
        mine = [o for o in cat.allowed(groups) if o.connection == provider]
        if not mine:
            if provider not in cat.connections:
                names = ", ".join(sorted({o.connection for o in cat.allowed(groups)})) or "(none)"
                raise InvalidInput(
                    "unknown_provider", f"Unknown provider {provider[:40]!r}; choose one of: {names}."
                )
            raise _not_allowed(f"{provider}/")
        return next((o for o in mine if o.is_default), mine[0])
    offer = cat.default_for(groups, preferred_connection=settings.DEFAULT_PROVIDER)
    if offer is None:
        raise InvalidInput("model_not_allowed", "No model is offered to you yet: ask the operator.")
    return offer


def _default_connection(cat: Catalog, groups: frozenset[int]) -> str:
    offer = cat.default_for(groups, preferred_connection=settings.DEFAULT_PROVIDER)
    return offer.connection if offer is not None else settings.DEFAULT_PROVIDER


def check(cat: Catalog, groups: frozenset[int], *, provider: str, model: str) -> None:
    """Raise `model_not_allowed` unless the thread's model may be used by the caller now (a model
    withdrawn since the thread was created is refused, saying how to go on)."""
    model_id = f"{provider}/{model}"
    if cat.may_use(model_id, groups):
        return
    raise InvalidInput(
        "model_not_allowed",
        f"Model {model_id[:200]!r} is no longer offered to you. Switch this thread to another model "
        "(GET /api/models lists yours) and send again.",
    )


def check_sync(user: AbstractBaseUser | AnonymousUser, *, provider: str, model: str) -> None:
    check(catalog(), group_ids(user), provider=provider, model=model)


async def acheck(user: AbstractBaseUser | AnonymousUser, *, provider: str, model: str) -> None:
    check(await acatalog(), await agroup_ids(user), provider=provider, model=model)
