"""WebSocket `/ws/threads/{id}/`: a thin adapter. It checks the user, joins the thread's group, sends a
snapshot, and turns client frames into use-case calls. Generations run in the generation service,
never in this consumer's task, so a socket that goes away stops nothing."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from accounts import rights
from accounts.auth import forget_all_tokens
from core.dbasync import db_async
from core.writebuffer import PATIENCE_KEY as CLOSE_PATIENCE
from core.writebuffer import SCOPE_KEY as WRITE_BUFFER
from ops import metrics
from threads import branches, chat, errors, events, fanout, groups, outcomes, quotas
from threads.flow import CLOSE_PATIENCE_S, CLOSE_TOO_SLOW, Flow
from threads.models import Thread
from threads.regenerate import RegenerateRequest, regenerate
from threads.validation import (
    REGENERATE_FRAME_FIELDS,
    SEND_FRAME_EXTRA,
    InvalidInput,
    parse_frame,
    parse_message_cursor,
    parse_regenerate,
    parse_request_id,
    parse_send,
)

log = logging.getLogger(__name__)

# Close codes: 4401 not authenticated, 4404 no such thread (or not yours), 4001 the socket's
# authentication ended: the credentials it was opened with were withdrawn (a log-out, a revoked token),
# its user lost rights (deactivated, deleted, demoted, a new password), or it reached WS_MAX_LIFETIME_S.
# A client may reconnect, and the handshake then authenticates afresh (another device's session still
# works). 4008 (threads/flow.py): too far behind, in frames or in unsent bytes.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_AUTH_REVOKED = 4001
# The user already has MAX_SOCKETS_PER_USER sockets open (threads/quotas.py): accepted, then closed at
# once with this code; close another socket, then retry.
CLOSE_TOO_MANY_SOCKETS = 4429
# 4503: Redis or the database went away (chatapp/dependencies.py, around the whole WebSocket stack).


class ThreadConsumer(AsyncWebsocketConsumer):
    thread_id: int
    thread: Thread
    _sub: fanout.Subscription
    user_group: str
    _flow: Flow
    # Per request_id, the seq reported in the snapshot: later duplicates of earlier deltas are dropped.
    _snapshot_seq: dict[str, int]
    # The user's rights when the socket opened: a frame that acts checks they still hold.
    _rights: rights.UserRights
    _closing = False  # a close was sent: nothing more is (autobahn raises on a closing socket)
    _lifetime: asyncio.TimerHandle | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            # Refused before accept: the browser sees 1006, so the log says why (chatapp/socketcheck.py
            # tells the page).
            log.warning("WebSocket handshake refused (unauthenticated): %s", self.scope.get("path"))
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not await self._rights_fresh(user):
            await self._close(CLOSE_UNAUTHENTICATED)
            return
        self.thread_id = int(self.scope["url_route"]["kwargs"]["thread_id"])
        thread = await chat.thread_for_send(user=user, thread_id=self.thread_id)
        if thread is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.thread = thread
        if not await quotas.socket_open(user_id=user.pk, socket_id=self.channel_name):
            # Accept, then close: a handshake refused outright reaches clients as a bare 403 / 1006,
            # while 4429 tells them why (and that retrying once a tab is closed will work).
            await self.accept()
            await self._close(CLOSE_TOO_MANY_SOCKETS)
            return
        self._socket_user = user.pk  # holds a slot until disconnect()
        # The user's group: losing access (a log-out, a revoked token, lost rights) closes this socket
        # (threads/signals.py).
        self.user_group = groups.user_group(user.pk)
        await self.channel_layer.group_add(self.user_group, self.channel_name)
        # Join before reading the snapshot: every delta after the snapshot's seq then reaches us.
        self._sub = await fanout.subscribe(self.channel_layer, self.thread_id, channel=self.channel_name)
        metrics.stream_subscriptions.inc()
        self._flow = Flow(max_unsent_bytes=settings.WS_MAX_BUFFER_BYTES)
        self._sent: set[str] = set()  # request_ids this socket sent: counted once they end
        await self.accept()
        if settings.WS_MAX_LIFETIME_S > 0:
            self._lifetime = asyncio.get_running_loop().call_later(settings.WS_MAX_LIFETIME_S, self._expire)
        snap = await chat.snapshot(thread_id=self.thread_id)
        self._snapshot_seq = {f["request_id"]: f["seq"] for f in snap["in_flight"]}
        await self._send_json(snap)

    async def _rights_fresh(self, user: Any) -> bool:
        """The handshake's user has the rights their row has now. A token's user comes from a cache up to
        accounts.auth.TOKEN_CACHE_TTL_S old: a user deactivated or demoted meanwhile is refused, and this
        process's token lookups are dropped, so the page's retry is answered from the row."""
        now = await rights.user_rights_now(user.pk)
        if now is None or self._withdrawn(rights.rights_lost(rights.rights_of(user), now)):
            forget_all_tokens()
            return False
        self._rights = now
        return True

    def _withdrawn(self, lost: str | None) -> bool:
        """Whether what the user lost (accounts.rights.rights_lost) ends this socket: a new password ends
        sessions, not API tokens."""
        if lost is None:
            return False
        return not (lost == rights.LOST_SESSIONS and self.scope.get("auth_method") == "token")

    def _expire(self) -> None:
        """WS_MAX_LIFETIME_S reached: the page reconnects, and its user is authenticated afresh."""
        self._lifetime = None
        task = asyncio.create_task(self._close(CLOSE_AUTH_REVOKED))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # the client may be gone

    async def _close(self, code: int) -> None:
        if not self._closing:
            self._closing = True
            await self.close(code=code)

    async def disconnect(self, code: int) -> None:
        if self._lifetime is not None:
            self._lifetime.cancel()
        if getattr(self, "_socket_user", None) is not None:
            await quotas.socket_close(user_id=self._socket_user, socket_id=self.channel_name)
        if getattr(self, "user_group", None):
            await self.channel_layer.group_discard(self.user_group, self.channel_name)
        if getattr(self, "_sub", None) is not None:
            metrics.stream_subscriptions.dec()
            await self._sub.close()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self._closing:
            return  # frames that crossed our close frame
        try:
            kind, frame = parse_frame(text_data, bytes_data, max_bytes=settings.MAX_WS_FRAME_BYTES)
            if kind != "ack" and not await self._rights_hold():
                await self._close(CLOSE_AUTH_REVOKED)  # before acting on rights the user no longer has
            elif kind == "send":
                await self._on_send(frame)
            elif kind == "cancel":
                await self._on_cancel(frame)
            elif kind == "history":
                await self._on_history(frame)
            elif kind == "regenerate":
                await self._on_regenerate(frame)
            elif not self._flow.on_ack(frame.get("count")):
                raise InvalidInput("invalid_ack", "'count' must be the number of frames received so far.")
        except Exception as exc:
            err = errors.client_error(exc)
            if err is None or err.outage:
                raise  # a bug, or an outage: chatapp/dependencies.py's guard closes the socket
            if err.rejected:
                metrics.request("rejected")
            await self._send_json(errors.socket_event(err))

    async def _on_send(self, frame: dict[str, Any]) -> None:
        req = parse_send(frame, max_chars=settings.MAX_MESSAGE_CHARS, extra_fields=SEND_FRAME_EXTRA)
        outcome = await chat.send(
            user=self.scope["user"], thread=self.thread, req=req, reply_channel=self.channel_name
        )
        self._sent.add(outcome.request_id)
        if outcome.generation is None:
            # A replayed request_id: tell this socket how it ended (or it will hear it from the group).
            final = await outcomes.terminal_now(outcome)
            if final is not None:
                await self._send_json(final)

    async def _on_cancel(self, frame: dict[str, Any]) -> None:
        rid = parse_request_id(frame.get("request_id"))
        await chat.cancel(user=self.scope["user"], request_id=rid)

    async def _on_history(self, frame: dict[str, Any]) -> None:
        before = parse_message_cursor(frame.get("before"))
        page = await db_async(branches.branch_page)(thread=self.thread_id, before=before)
        await self._send_json(events.history(before=before, page=page))

    async def _on_regenerate(self, frame: dict[str, Any]) -> None:
        """A new reply in place of assistant message `message_id` (#18; the page's Retry and Regenerate)."""
        parsed = parse_regenerate(frame, message_id=frame.get("message_id"), allowed=REGENERATE_FRAME_FIELDS)
        req = RegenerateRequest(
            message_id=parsed["message_id"], request_id=parsed["request_id"], idempotent=parsed["idempotent"]
        )
        outcome = await regenerate(
            user=self.scope["user"], thread=self.thread, req=req, reply_channel=self.channel_name
        )
        self._sent.add(outcome.request_id)
        if outcome.generation is None:
            final = await outcomes.terminal_now(outcome)
            if final is not None:
                await self._send_json(final)

    async def _resnapshot(self) -> None:
        """The thread changed (thread.updated): the branch shown may have, so the page gets it afresh."""
        snap = await chat.snapshot(thread_id=self.thread_id)
        self._snapshot_seq = {f["request_id"]: f["seq"] for f in snap["in_flight"]}
        await self._send_json(snap)

    async def _rights_hold(self) -> bool:
        """The user still has the rights the socket opened with (their row, at most
        accounts.rights.USER_RIGHTS_TTL_S stale): a change no signal announced stops the next act."""
        return not self._withdrawn(
            rights.rights_lost(self._rights, await rights.user_rights(self._socket_user))
        )

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels runs aclose_old_connections() (a thread-sensitive hop, all consumers of the process
        # queued on one thread) before every handler. Deltas touch no database: measured, skipping it
        # took K=1000 viewers' p99 lag from about 400 ms to about 40 ms (benchmarks/fanout_bench.py).
        if message.get("type") == groups.THREAD_EVENT:
            await self.thread_event(message)
            return
        await super().dispatch(message)

    async def auth_revoked(self, message: dict[str, Any]) -> None:
        """groups.AUTH_REVOKED: close if this socket authenticated the way that was withdrawn (any way,
        for method 'user': a user deactivated, deleted or demoted)."""
        method = message.get("method")
        if self.scope.get("auth_method") == "token":
            token = message.get("token_hash") == self.scope.get("token_hash")
            withdrawn = method == "user" or (method == "token" and token)
        else:
            withdrawn = method in ("user", "session")
        if withdrawn:
            await self._close(CLOSE_AUTH_REVOKED)

    async def thread_event(self, message: dict[str, Any]) -> None:
        event = message["event"]
        if event.get("type") == "message.delta":
            seen = self._snapshot_seq.get(event["request_id"])
            if seen is not None and event["seq"] <= seen:
                return
        elif event.get("type") in events.TERMINAL_EVENTS:
            rid = event.get("request_id", "")
            self._snapshot_seq.pop(rid, None)
            if rid in self._sent:
                self._sent.discard(rid)
                metrics.request(events.request_outcome(event))
        elif event.get("type") == "thread.updated":
            chat.forget(self.thread_id)  # this process's copy predates the switch (it may be another's PATCH)
        await self._send_json(event)
        if event.get("type") == "thread.updated":
            await self._resnapshot()

    async def _send_json(self, data: Mapping[str, Any]) -> None:
        if self._closing:
            return
        probe = self.scope.get(WRITE_BUFFER)  # core/writebuffer.py: daphne's unsent bytes, if known
        unsent = probe() if probe is not None else None
        if self._flow.on_send(unsent):
            # Too far behind: stop buffering for it; the page reconnects and resumes from a snapshot.
            log.warning(
                "closing a socket that fell behind (%s): %s bytes unsent (WS_MAX_BUFFER_BYTES=%d)",
                CLOSE_TOO_SLOW,
                unsent,
                settings.WS_MAX_BUFFER_BYTES,
            )
            patience = self.scope.get(CLOSE_PATIENCE)  # the close frame waits behind the backlog
            if patience is not None:
                patience(CLOSE_PATIENCE_S)
            await self._close(CLOSE_TOO_SLOW)
            return
        await self.send(text_data=json.dumps(data, separators=(",", ":")))
