"""Small async helpers shared by the providers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

T = TypeVar("T")


@asynccontextmanager
async def closing_iter(iterator: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Like `contextlib.aclosing`, for any async iterator (closed only if it has `aclose`).

    Leaving an `async for` early does not close an async generator; without this its `finally`
    (which closes the upstream HTTP response) would wait for garbage collection.
    """
    try:
        yield iterator
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


def as_object(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty dict (lenient reading of vendor JSON)."""
    return value if isinstance(value, dict) else {}


def as_int(value: Any) -> int | None:
    """`value` if it is a JSON integer (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None
