"""The demo provider: a simulated model that needs no API key and no network.

It streams the text of `demo_reply` token by token, with the timing of a real model
(`ttft_ms` before the first token, then `tokens_per_s`), and stops at `max_tokens`. With `note` the
reply says first that it comes from the demo and how to connect a real model; `reply_tokens` pads it to
about that many tokens (settings: 400, ten seconds at 40 tokens/s: time to try Stop or a reload).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from ._base import ChatMessage, Completion, GenerationParams, Provider, StreamEvent, TextDelta
from ._demo_text import count_tokens, demo_reply, split_tokens


class DemoProvider(Provider):
    """A deterministic fake model: identical conversations give identical replies."""

    def __init__(
        self,
        *,
        name: str = "demo",
        model: str = "demo-1",
        ttft_ms: float = 300.0,
        tokens_per_s: float = 40.0,
        max_tokens: int = 120,
        reply_tokens: int = 0,
        note: bool = False,
    ) -> None:
        self.name = name
        self.default_model = model
        self.ttft_ms = ttft_ms
        # <= 0 means "as fast as possible" (tests use it).
        self.tokens_per_s = tokens_per_s
        self.max_tokens = max_tokens
        self.reply_tokens = reply_tokens
        self.note = note

    @classmethod
    def from_settings(cls, name: str, config: Mapping[str, Any], **overrides: Any) -> DemoProvider:
        """Build from one `settings.PROVIDERS` entry; `overrides` win over the settings."""
        options: dict[str, Any] = {
            "model": config.get("model", "demo-1"),
            "ttft_ms": float(config.get("ttft_ms", 300.0)),
            "tokens_per_s": float(config.get("tokens_per_s", 40.0)),
            "max_tokens": int(config.get("max_tokens", 120)),
            "reply_tokens": int(config.get("reply_tokens", 0)),
            "note": bool(config.get("note", False)),
        }
        options.update(overrides)
        return cls(name=name, **options)

    def __repr__(self) -> str:
        return f"<DemoProvider {self.name!r} ttft_ms={self.ttft_ms} tokens_per_s={self.tokens_per_s}>"

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[StreamEvent]:
        """Yield the reply's tokens on the simulated schedule, then one `Completion`."""
        tokens = split_tokens(demo_reply(messages, min_tokens=self.reply_tokens, note=self.note))
        limit = max(0, min(self.max_tokens, params.max_tokens))
        finish_reason = "stop" if len(tokens) <= limit else "length"
        tokens = tokens[:limit]
        loop = asyncio.get_running_loop()
        first_at = loop.time() + self.ttft_ms / 1000
        interval = 1 / self.tokens_per_s if self.tokens_per_s > 0 else 0.0
        for i, token in enumerate(tokens):
            # Absolute schedule, so the overhead of each sleep does not add up over a long reply.
            # asyncio.sleep(0) still yields to the loop: a fast demo stays fair and cancellable.
            await asyncio.sleep(max(0.0, first_at + i * interval - loop.time()))
            yield TextDelta(token)
        yield Completion(finish_reason, input_tokens=count_tokens(messages), output_tokens=len(tokens))
