"""The provider interface: stream a completion for a list of messages.

A provider yields `TextDelta` events (text as it arrives) and then exactly one `Completion`
(finish reason and token usage). Errors are raised as `providers.ProviderError` subclasses.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """What the caller asks of the model; part of the coalesce key, so keep it hashable."""

    model: str
    max_tokens: int = 1024
    temperature: float | None = None
    # Opaque extra parameters (sorted key/value pairs) passed through to the upstream API.
    extra: tuple[tuple[str, str], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Completion:
    finish_reason: str
    input_tokens: int | None = None
    output_tokens: int | None = None


StreamEvent = TextDelta | Completion


class Provider(abc.ABC):
    """One upstream model API. Instances are bound to one event loop (they own an httpx client)."""

    name: str
    default_model: str

    @abc.abstractmethod
    def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[StreamEvent]:
        """Yield `TextDelta`s then one `Completion`. Cancelling the consumer closes the upstream."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, the demo provider owns nothing
        """Release connections. Safe to call twice."""
