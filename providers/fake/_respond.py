"""How the fake provider server answers one model call: the plan, then the answer (see server.py)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ._formats import AnthropicWire, Fault, GeminiWire, OpenAIWire, Wire, prompt_text, reply_tokens
from ._state import FakeState, FakeStats
from ._wire import Request, close_connection, json_response, stream_response

OPENAI_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
ANTHROPIC_PATHS = frozenset({"/v1/messages", "/messages"})
# /v1beta/models/{model}:streamGenerateContent (SSE with ?alt=sse) or :generateContent (one JSON body).
GEMINI_CALL = re.compile(
    r"^/v1(?:beta)?/models/(?P<model>[^/:]+):(?P<method>streamGenerateContent|generateContent)\Z"
)
STATUS_FAULTS = frozenset({"http", "rate_limit", "quota"})
_TAIL_FAULTS = frozenset(
    {"stall_after", "disconnect_after", "malformed_after", "error_after", "truncate_after"}
)


@dataclass(slots=True)
class Plan:
    """Everything one model call will send."""

    wire: Wire
    stream: bool
    tokens: list[str]
    finish: str
    input_tokens: int
    ttft: float
    interval: float
    fault: Fault | None


async def forever() -> None:
    """Wait until cancelled."""
    await asyncio.get_running_loop().create_future()  # ends only by cancellation (disconnect, stop)


def build_plan(request: Request, body: dict[str, Any], state: FakeState, call_id: int) -> Plan:
    """What to send for one model call (knobs from headers over config); raises ValueError."""
    headers, config = request.headers, state.config
    ttft_ms = float(headers.get("x-fake-ttft-ms", config.ttft_ms))
    tps = float(headers.get("x-fake-tps", config.tps))
    count = int(headers.get("x-fake-tokens", config.tokens))
    gemini = GEMINI_CALL.match(request.path)
    config_in = body.get("generationConfig")
    generation: dict[str, Any] = config_in if isinstance(config_in, dict) else {}
    max_tokens = (
        body.get("max_tokens") or body.get("max_completion_tokens") or generation.get("maxOutputTokens")
    )
    limit = count if not isinstance(max_tokens, int) else min(count, max_tokens)
    prompt = prompt_text(body)
    model = str(body.get("model") or "fake-model")
    # X-Fake-Usage: omit (or the config's usage: false) leaves usage out of every wire format.
    usage = headers.get("x-fake-usage", "report" if config.usage else "omit") != "omit"
    wire: Wire
    stream = bool(body.get("stream"))
    if gemini is not None:
        model = gemini["model"]
        wire = GeminiWire(model, call_id, usage)
        stream = gemini["method"] == "streamGenerateContent"
    elif request.path in OPENAI_PATHS:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        wire = OpenAIWire(model, call_id, include_usage and usage)
    else:
        wire = AnthropicWire(model, call_id, usage)
    return Plan(
        wire=wire,
        stream=stream,
        tokens=reply_tokens(prompt, max(0, limit)),
        finish="length" if limit < count else "stop",
        input_tokens=len(prompt.split()),
        ttft=max(0.0, ttft_ms / 1000),
        interval=1 / tps if tps > 0 else 0.0,
        fault=state.pick_fault(headers.get("x-fake-fault")),
    )


def error_response(wire: Wire, fault: Fault) -> web.Response:
    """The HTTP error answer of a status fault (http, rate_limit, quota)."""
    if fault.kind == "rate_limit":
        return json_response(429, wire.error_body(429), headers={"retry-after": f"{fault.arg:g}"})
    if fault.kind == "quota":
        return json_response(429, wire.error_body(429, quota=True))
    return json_response(int(fault.arg), wire.error_body(int(fault.arg)))


async def send_whole(request: web.Request, plan: Plan, stats: FakeStats) -> web.StreamResponse:
    """A non-streaming answer: wait as long as generating would take, then send one JSON body."""
    fault = plan.fault
    if fault is not None and fault.kind in ("hang", "stall_after"):
        await forever()
    await asyncio.sleep(plan.ttft + plan.interval * len(plan.tokens))
    if fault is not None and fault.kind == "disconnect_after":
        stats.server_aborts += 1
        close_connection(request)
        return web.Response()  # never written: the transport is closing
    text = "".join(plan.tokens)
    stats.completed += 1
    return json_response(200, plan.wire.full_body(text, plan.finish, plan.input_tokens, len(plan.tokens)))


async def send_stream(request: web.Request, plan: Plan, stats: FakeStats) -> web.StreamResponse:
    """An SSE answer: prologue with the first token after ttft, then tokens at tps, then the end."""
    fault = plan.fault
    if fault is not None and fault.kind == "hang":
        await forever()
    response = await stream_response(request)
    tail = fault if fault is not None and fault.kind in _TAIL_FAULTS else None
    count = len(plan.tokens) if tail is None else min(tail.after, len(plan.tokens))
    if tail is not None and tail.kind == "stall_after" and count == 0:
        await forever()
    await _send_tokens(response, plan, count)
    await _send_tail(request, response, plan, stats, tail, count)
    return response


async def _send_tokens(response: web.StreamResponse, plan: Plan, count: int) -> None:
    loop = asyncio.get_running_loop()
    first_at = loop.time() + plan.ttft
    await asyncio.sleep(plan.ttft)
    pending = [plan.wire.prologue(plan.input_tokens)]
    sent = 0
    while sent < count:
        # Every token due by now goes out in one chunk: at high rates one write carries many
        # tokens instead of one wake-up per token, which keeps hundreds of streams cheap.
        due = count if plan.interval == 0 else int((loop.time() - first_at) / plan.interval) + 1
        upto = min(count, max(due, sent + 1))
        pending += [plan.wire.token(t) for t in plan.tokens[sent:upto]]
        sent = upto
        await response.write(b"".join(pending))
        pending = []
        if sent < count:
            await asyncio.sleep(max(0.0, first_at + sent * plan.interval - loop.time()))
    if pending:
        await response.write(b"".join(pending))


async def _send_tail(
    request: web.Request,
    response: web.StreamResponse,
    plan: Plan,
    stats: FakeStats,
    tail: Fault | None,
    count: int,
) -> None:
    if tail is None:
        await response.write(plan.wire.epilogue(plan.finish, plan.input_tokens, count))
        await response.write_eof()
        stats.completed += 1
        return
    if tail.kind == "stall_after":
        await forever()
    if tail.kind == "disconnect_after":
        # A clean close (FIN) without the last chunk: the tokens already written still arrive,
        # and the client sees an incomplete body. (An abort could discard unsent tokens.)
        stats.server_aborts += 1
        close_connection(request)
        return
    if tail.kind == "malformed_after":
        await response.write(plan.wire.malformed_event())
    elif tail.kind == "error_after":
        await response.write(plan.wire.error_event())
    await response.write_eof()  # truncate_after: the body simply ends here
