"""A WebSocket viewer that follows one reply across reconnects, as the page does (static/chat/chat.js):
on a close it reconnects, takes the reply's text and seq from the snapshot, then applies deltas. It
counts what a person would notice: deltas lost (a seq skipped), deltas repeated (a seq already applied),
and whether its text ends equal to the saved message. Used by `make bench`'s rolling-restart row
(benchmarks/restart_bench.py) and the end-to-end tests of tests/deploy.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

# Close codes after which the page gives up instead of reconnecting.
FINAL_CLOSE_CODES = frozenset({4401, 4404})
MARK_SEQ = 5


@dataclass
class ResumingViewer:
    ws_url: str
    token: str
    request_id: str
    text: str = ""
    seq: int = 0
    final: dict[str, Any] | None = None  # the saved message, from the terminal event or a snapshot
    terminal: str | None = None  # message.done / message.error / message.cancelled / "snapshot"
    lost: int = 0  # deltas skipped over (seq jumped past seq + 1)
    repeated: int = 0  # deltas whose seq was already applied
    mismatched: int = 0  # a snapshot whose text does not continue ours
    connects: int = 0
    close_codes: list[int] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    # Set once MARK_SEQ deltas are in: the reply is streaming (a restart then lands mid-stream).
    streaming: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, *, give_up_after_s: float = 120.0) -> None:
        """Follow the reply until its terminal event (or a snapshot showing it finished)."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        loop = asyncio.get_running_loop()
        deadline = loop.time() + give_up_after_s
        while not self.done.is_set() and loop.time() < deadline:
            try:
                async with connect(
                    self.ws_url,
                    additional_headers={"Authorization": f"Bearer {self.token}"},
                    open_timeout=30,
                    ping_interval=None,
                    max_size=None,
                ) as ws:
                    self.connects += 1
                    async for frame in ws:
                        self.on_event(json.loads(frame))
                        if self.done.is_set():
                            return
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else 1006
                self.close_codes.append(code)
                if code in FINAL_CLOSE_CODES:
                    return
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                self.close_codes.append(getattr(getattr(exc, "response", None), "status_code", 0) or 1006)
            else:
                self.close_codes.append(1000)
            await asyncio.sleep(0.05)  # the page waits 150-300 ms; sooner here is a harder test

    def on_event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        if kind == "snapshot":
            self.connected.set()
            self._on_snapshot(ev)
        elif ev.get("request_id") != self.request_id:
            return
        elif kind == "message.delta":
            seq = int(ev["seq"])
            if seq <= self.seq:
                self.repeated += 1
                return
            if seq > self.seq + 1:
                self.lost += seq - self.seq - 1
            self.seq = seq
            self.text += ev["text"]
            if seq >= MARK_SEQ:
                self.streaming.set()
        elif kind in ("message.done", "message.error", "message.cancelled"):
            self.final = ev.get("message")
            self.terminal = kind
            self.done.set()

    def _on_snapshot(self, ev: dict[str, Any]) -> None:
        for entry in ev.get("in_flight", []):
            if entry["request_id"] == self.request_id:
                if entry["seq"] >= self.seq:
                    if not entry["text"].startswith(self.text):
                        self.mismatched += 1
                    self.text, self.seq = entry["text"], int(entry["seq"])
                return
        for message in ev.get("messages", []):
            if message.get("request_id") == self.request_id and message["role"] == "assistant":
                if message["status"] != "streaming":
                    # Finished while we reconnected: the page shows the saved text, which must continue ours.
                    if not message["content"].startswith(self.text):
                        self.mismatched += 1
                    self.text = message["content"]
                    self.final = message
                    self.terminal = "snapshot"
                    self.done.set()
                return

    def summary(self) -> dict[str, Any]:
        return {
            "lost": self.lost,
            "repeated": self.repeated,
            "mismatched": self.mismatched,
            "connects": self.connects,
            "terminal": self.terminal,
            "equal": self.final is not None and self.final["content"] == self.text,
        }


def ws_url(base_url: str, thread_id: int) -> str:
    return base_url.replace("http://", "ws://") + f"/ws/threads/{thread_id}/"
