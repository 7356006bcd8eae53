"""The trio driver of one call: Twilio's socket and OpenAI's (both :mod:`.wsconn`).

One call is one nursery. The Twilio reader runs in the handler's own task; the
OpenAI connection, tool calls and transcript writes are children of the call's
nursery, so when the caller hangs up (or anything else ends the call) every one
of them is cancelled and the OpenAI socket is closed — an OpenAI session left
open costs the user money. :class:`CallCore` decides; this module only moves
bytes and carries out its actions.

A watchdog task (:mod:`.liveness`) ends a stream whose far end is gone: no
valid ``start`` soon after the upgrade, no media for a while (Twilio sends a
frame every 20 ms), or a send to Twilio blocked because the peer stopped
reading. Each would otherwise hold a line, and after ``start`` a billed OpenAI
session, for as long as the socket stays open.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from . import realtime as rt
from .liveness import Gone, Liveness
from .logsafe import wire
from .wsconn import ConnectionClosed, HandshakeError, WebSocket, connect
from .call import (
    Action, CallCore, CallStarted, CloseOpenAI, ConnectOpenAI, Hangup, Notice, RunTool, SaveTranscript, ToOpenAI,
    ToTwilio, TransferCall,
)
from .renewal import RenewalPolicy
from .renewal_driver import OpenAISession, Renewer
from .settings import Settings

log = logging.getLogger("callsim.bridge")

HANGUP_GRACE_S = 8.0  # longest we wait for the apology's mark before closing anyway


OPENAI_MAX_MESSAGE = 16 * 2**20  # a long audio delta; the real API's limit is not documented


class TwilioSocket(Protocol):
    """The Twilio leg as the driver sees it: :class:`.wsconn.WebSocket` or ASGI."""

    async def receive_message(self) -> str | bytes: ...  # raises ConnectionClosed

    async def send_text(self, text: str) -> None: ...  # raises ConnectionClosed; safe from several tasks

    async def aclose(self, code: int = 1000, reason: str = "") -> None: ...  # never raises


class CallHooks(Protocol):
    """What a call needs from the process that runs it (:class:`.app.BridgeApp` implements it).

    Why a protocol of the driver's own: the app creates drivers, so the driver
    importing the app would make a circle; with this, the dependency points one
    way (app -> driver) and the driver can be run and tested against any hooks.
    """

    settings: Settings

    async def call_started(self, driver: CallDriver, a: CallStarted) -> bool: ...  # False = refuse the stream

    async def save_transcript(self, core: CallCore, t: SaveTranscript) -> None: ...

    async def run_tool(self, name: str, arguments: str, *, call_tag: str = "?") -> str: ...

    async def transfer_call(self, core: CallCore) -> tuple[str | None, str]: ...  # (error or None, number)

    def count_error(self, kind: str) -> None: ...

    def notice(self, core: CallCore, n: Notice) -> None: ...  # the live feed; synchronous, never waits


class CallDriver:
    def __init__(self, app: CallHooks, core: CallCore, twilio: TwilioSocket, *, peer: str = "?") -> None:
        self.app = app
        self.core = core
        self.twilio = twilio
        self.peer = peer
        s = app.settings
        self.liveness = Liveness(trio.current_time(), start_timeout=s.stream_start_timeout_s,
                                 media_timeout=s.media_timeout_s, send_timeout=s.twilio_send_timeout_s)
        self._sends_pending = 0  # sends to Twilio under way (one blocked = the peer may not be reading)
        self._sends_done = 0
        self._close_code = 1000
        #: how the call ended when the driver decided it (a timeout), for the store; None otherwise
        self.end_status: str | None = None
        self.openai: WebSocket | None = None
        self._openai_close_reason = "call ended"
        self._sessions: set[OpenAISession] = set()  # every OpenAI socket of the call not yet closed
        policy = RenewalPolicy(s.openai_session_max_s, s.openai_renew_before_s)
        self.renewer: Renewer | None = Renewer(self, policy) if policy.enabled else None
        if self.renewer is not None:
            core.on_session_expired = self.renewer.expired
        self._nursery: trio.Nursery | None = None
        self._twilio_closed = False
        self._watch_wake = trio.Event()
        self._watch_until: float = math.inf  # the deadline (monotonic ns) the watchdog sleeps to

    @property
    def tag(self) -> str:
        return self.core.tag

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._guarded, self._response_watchdog)
                nursery.start_soon(self._guarded, self._liveness_watchdog)
                await self._guarded(self._twilio_reader)
                nursery.cancel_scope.cancel()
        finally:
            # the renewer and the driver point at each other (and the core at the renewer's method):
            # cut that here, so a finished call is freed at once, not at the next full collection
            self.core.on_session_expired = None
            self.renewer = None
            await self._close_twilio(self._close_code)

    async def _guarded(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run one of the call's tasks so that a bug in it ends this call only, cleanly.

        No exception may reach the call's nursery: out of it, it would end the
        connection's task and with it the server and every call (issue 18). And
        trio, cancelling the call's other tasks on the way, builds an exception
        group whose ``Cancelled`` holds the frames that created it: a reference
        cycle that keeps the whole call alive until a full garbage collection.
        Here the bug is logged with its traceback and counted, Twilio's stream is
        closed with 1011 (internal error), and cancelling the nursery closes the
        OpenAI session (its task's ``finally``).
        """
        try:
            await fn(*args)
        except Exception:
            self.app.count_error("internal")
            log.exception("call %s: internal error in %s; the call is ended, the bridge carries on",
                          self.tag, getattr(fn, "__name__", "a task"))
            await self._close_twilio(1011)
            self._cancel()

    # -------------------------------------------------------------- Twilio

    async def _twilio_reader(self) -> None:
        core, receive, stats = self.core, self.twilio.receive_message, self.core.stats
        while True:
            try:
                data = await receive()
            except ConnectionClosed as exc:
                if exc.code not in (1000, 1001, 1005, 1006):
                    log.warning("call %s: Twilio stream closed with %d %s", self.tag, exc.code, wire(exc.reason))
                self._twilio_closed = True
                await self._do(core.twilio_closed(time.monotonic_ns()))
                return
            frames = stats["frames_in"]
            await self._do(core.twilio_message(time.monotonic_ns(), data))
            if stats["frames_in"] == frames:
                # not a media frame (a key, a mark, a start): the core may have asked for a reply
                # (DTMF_MODE=respond) that only the watchdog times; media frames never do
                self._poke_response_watchdog()
            if self._twilio_closed:
                return

    async def _to_twilio(self, text: str) -> None:
        if self._twilio_closed:
            return
        self._sends_pending += 1  # counters, not a timer: the watchdog reads them (see .liveness)
        try:
            await self.twilio.send_text(text)
        except ConnectionClosed as exc:
            log.info("call %s: Twilio socket gone while sending (%s)", self.tag, exc)
            self._twilio_closed = True
        finally:
            self._sends_pending -= 1
            self._sends_done += 1

    async def _close_twilio(self, code: int) -> None:
        if self._twilio_closed:
            return
        self._twilio_closed = True
        with trio.CancelScope(shield=True):
            await self.twilio.aclose(code)

    # -------------------------------------------------------------- actions

    async def _do(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, ToOpenAI):
                await self._to_openai(a.text)
            elif isinstance(a, ToTwilio):
                await self._to_twilio(a.text)
            elif isinstance(a, CallStarted):
                # before the app's check: it may wait on the store, and a refused stream is closed anyway
                self.liveness.started(trio.current_time(), self.core.stats["frames_in"])
                if not await self.app.call_started(self, a):
                    await self._close_twilio(1008)
                    self._cancel()
                    return
            elif isinstance(a, ConnectOpenAI):
                first = OpenAISession(0, current=True)
                if self.renewer is not None:
                    self.renewer.current = first
                    assert self._nursery is not None
                    self._nursery.start_soon(self._guarded, self.renewer.run)
                self.start_openai(first)
            elif isinstance(a, CloseOpenAI):
                await self._close_openai(a.reason)
            elif isinstance(a, Hangup):
                if a.after_mark is None:
                    await self._close_twilio(1000)
                    self._cancel()
                else:
                    assert self._nursery is not None
                    self._nursery.start_soon(self._guarded, self._hangup_deadline, a.grace_s or HANGUP_GRACE_S)
            elif isinstance(a, TransferCall):
                assert self._nursery is not None
                if a.after_mark is None:
                    self._nursery.start_soon(self._guarded, self._transfer)
                else:
                    self._nursery.start_soon(self._guarded, self._transfer_deadline, a.grace_s or HANGUP_GRACE_S)
            elif isinstance(a, RunTool):
                assert self._nursery is not None
                self._nursery.start_soon(self._guarded, self._run_tool, a)
            elif isinstance(a, SaveTranscript):
                assert self._nursery is not None
                if self.renewer is not None:
                    self.renewer.saved(a)
                self._nursery.start_soon(self._guarded, self.app.save_transcript, self.core, a)
            elif isinstance(a, Notice):
                self.app.notice(self.core, a)

    async def _liveness_watchdog(self) -> None:
        """End the stream when its far end is gone (see :mod:`.liveness`)."""
        live, stats = self.liveness, self.core.stats
        while True:
            await trio.sleep_until(live.next_check(trio.current_time()))
            gone = live.check(trio.current_time(), frames_in=stats["frames_in"],
                              sends_pending=self._sends_pending, sends_done=self._sends_done)
            if gone is not None:
                self._give_up(gone)
                return

    def _give_up(self, gone: Gone) -> None:
        """Close OpenAI and Twilio: cancelling the call's nursery does both (a send blocked on a
        peer that does not read is cancelled first, so the OpenAI close is not held up by it)."""
        if self.liveness.is_started:
            log.warning("call %s: %s; ending the call", self.tag, gone.reason)
        else:
            log.warning("media stream from %s: %s; closing it", self.peer, gone.reason)
        self.app.count_error(gone.kind)
        self.end_status = gone.status
        self._close_code = gone.close_code
        self._openai_close_reason = gone.reason
        self._cancel()

    def _cancel(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _hangup_deadline(self, grace_s: float) -> None:
        await trio.sleep(grace_s)
        log.info("call %s: the mark of its last words never came back; hanging up", self.tag)
        await self._close_twilio(1000)
        self._cancel()

    async def _transfer_deadline(self, grace_s: float) -> None:
        await trio.sleep(grace_s)
        await self._do(self.core.transfer_mark_late(time.monotonic_ns()))

    async def _transfer(self) -> None:
        """The REST redirect (:meth:`.app.BridgeApp.transfer_call`); Twilio then ends the stream."""
        error, number = await self.app.transfer_call(self.core)
        await self._do(self.core.transfer_done(time.monotonic_ns(), error, number))
        self._poke_response_watchdog()

    async def _run_tool(self, a: RunTool) -> None:
        output = await self.app.run_tool(a.name, a.arguments, call_tag=self.tag)
        await self._do(self.core.tool_result(time.monotonic_ns(), a.call_id, output))
        self._poke_response_watchdog()

    # -------------------------------------------------------------- watchdog

    async def _response_watchdog(self) -> None:
        """Sleep until the core's response deadline, then let it decide (:meth:`CallCore.tick`).

        Why a task of its own: a stalled OpenAI socket sends nothing, so no reader wakes up to
        notice. The deadline only moves later while the model makes progress (the task wakes,
        finds it moved and sleeps again); when it appears or moves earlier — on an OpenAI message
        or a tool result — :meth:`_poke_response_watchdog` wakes the task to re-arm.
        """
        core = self.core
        while True:
            now = time.monotonic_ns()
            deadline = core.response_deadline_ns()
            if deadline is not None and now >= deadline:
                await self._do(core.tick(now))  # after it the deadline is gone or later
                continue
            self._watch_wake = trio.Event()
            self._watch_until = math.inf if deadline is None else deadline
            with trio.move_on_after(math.inf if deadline is None else (deadline - now) / 1e9):
                await self._watch_wake.wait()

    def _poke_response_watchdog(self) -> None:
        d = self.core.response_deadline_ns()
        if d is not None and d < self._watch_until:
            self._watch_until = d
            self._watch_wake.set()

    # -------------------------------------------------------------- OpenAI

    async def _to_openai(self, text: str) -> None:
        ws = self.openai
        if ws is None:
            return
        try:
            await ws.send_text(text)
        except ConnectionClosed:
            pass  # the reader task reports the loss

    async def _close_openai(self, reason: str) -> None:
        """End the OpenAI tasks; each one's ``finally`` sends its close frame (the task owns the socket)."""
        self._openai_close_reason = reason
        self.openai = None
        for sess in list(self._sessions):
            sess.close()

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run ``fn(*args)`` as a guarded task of the call's nursery (ended with the call)."""
        assert self._nursery is not None
        self._nursery.start_soon(self._guarded, fn, *args)

    def start_openai(self, sess: OpenAISession) -> None:
        """Open one OpenAI session of this call, as a task of the call's nursery."""
        assert self._nursery is not None
        self._sessions.add(sess)
        self._nursery.start_soon(self._guarded, self._openai_task, sess)

    async def _openai_task(self, sess: OpenAISession) -> None:
        s = self.app.settings
        url = f"{s.openai_realtime_url}?model={s.openai_model}" if "?" not in s.openai_realtime_url \
            else s.openai_realtime_url
        renewer = self.renewer
        with trio.CancelScope() as scope:
            sess.scope = scope
            if sess.retired:  # closed before it started
                scope.cancel()
            ws: WebSocket | None = None
            try:
                ws = await connect(
                    url, rt.connect_headers(s.openai_api_key.get_secret_value(), s.openai_dialect),
                    timeout=s.openai_connect_timeout_s, max_message_size=OPENAI_MAX_MESSAGE)
                sess.ws, sess.t_open_ns = ws, time.monotonic_ns()
                sess.opened.set()
                if sess.n == 0:
                    self.openai = ws
                    await self._do(self.core.openai_opened(time.monotonic_ns()))
                else:
                    assert renewer is not None
                    if sess.current:  # switched to while it was connecting
                        self.openai = ws
                    await renewer.configure(sess, ws)
                receive, core = ws.receive_message, self.core
                while True:
                    data = await receive()
                    if sess.current:
                        await self._do(core.openai_message(time.monotonic_ns(), data))
                        self._poke_response_watchdog()
                    elif not sess.retired:
                        renewer.pending_message(sess, data)  # type: ignore[union-attr]
            except (HandshakeError, OSError, trio.TooSlowError) as exc:
                self.app.count_error("openai_connect")
                reason = f"connect failed: {_describe(exc)}"
                if sess.current:
                    await self._do(self.core.openai_failed(time.monotonic_ns(), reason))
                elif renewer is not None and not sess.retired:
                    renewer.failed(sess, reason)
            except ConnectionClosed as exc:
                if sess.current and self.openai is not None:  # not closed by us
                    self.app.count_error("openai_dropped")
                    self.openai = None
                    await self._do(self.core.openai_failed(time.monotonic_ns(), f"closed: {exc.reason}"))
                elif renewer is not None and not sess.retired and not sess.current:
                    renewer.failed(sess, f"closed: {exc.reason}")
            finally:
                self._sessions.discard(sess)
                if sess.current and self.openai is ws:
                    self.openai = None
                if ws is not None:  # shielded, bounded (wsconn.CLOSE_TIMEOUT): an open session keeps costing money
                    reason = "session renewed" if sess.retired and not self.core.ending else self._openai_close_reason
                    await ws.aclose(1000, reason[:100])


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    if status is not None:
        return f"HTTP {status}"
    seen: BaseException | None = exc
    while seen is not None:
        if str(seen):
            return f"{type(seen).__name__}: {seen}"
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__
