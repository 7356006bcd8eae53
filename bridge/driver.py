"""The trio driver of one call: Twilio's socket (ASGI) + OpenAI's (trio-websocket).

One call is one nursery. The Twilio reader runs in the handler's own task; the
OpenAI connection, tool calls and transcript writes are children of the call's
nursery, so when the caller hangs up (or anything else ends the call) every one
of them is cancelled and the OpenAI socket is closed — an OpenAI session left
open costs the user money. :class:`CallCore` decides; this module only moves
bytes and carries out its actions.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, open_websocket_url

from . import realtime as rt
from .call import (
    Action, CallCore, CallStarted, CloseOpenAI, ConnectOpenAI, Hangup, RunTool, SaveTranscript, ToOpenAI,
    ToTwilio,
)

if TYPE_CHECKING:
    from .app import BridgeApp

log = logging.getLogger("callsim.bridge")

ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]
ASGISend = Callable[[dict[str, Any]], Awaitable[None]]
HANGUP_GRACE_S = 8.0  # longest we wait for the apology's mark before closing anyway
OPENAI_CLOSE_TIMEOUT_S = 0.5


class CallDriver:
    def __init__(self, app: "BridgeApp", core: CallCore, receive: ASGIReceive, send: ASGISend) -> None:
        self.app = app
        self.core = core
        self._receive = receive
        self._send = send
        self._send_lock = trio.StrictFIFOLock()  # Twilio sends come from several tasks
        self.openai: WebSocketConnection | None = None
        self._openai_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._twilio_closed = False
        self.token_ok = True

    @property
    def tag(self) -> str:
        return self.core.tag

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self._twilio_reader()
                nursery.cancel_scope.cancel()
        finally:
            await self._close_twilio(1000)

    # -------------------------------------------------------------- Twilio

    async def _twilio_reader(self) -> None:
        core = self.core
        while True:
            msg = await self._receive()
            mtype = msg["type"]
            if mtype == "websocket.receive":
                text = msg.get("text")
                data = text if text is not None else msg.get("bytes") or b""
                await self._do(core.twilio_message(time.monotonic_ns(), data))
                if self._twilio_closed:
                    return
            elif mtype == "websocket.disconnect":
                self._twilio_closed = True
                await self._do(core.twilio_closed(time.monotonic_ns()))
                return

    async def _to_twilio(self, text: str) -> None:
        if self._twilio_closed:
            return
        async with self._send_lock:
            try:
                await self._send({"type": "websocket.send", "text": text})
            except Exception as exc:  # hypercorn raises on a socket that went away
                log.info("call %s: Twilio socket gone while sending (%s)", self.tag, type(exc).__name__)
                self._twilio_closed = True

    async def _close_twilio(self, code: int) -> None:
        if self._twilio_closed:
            return
        self._twilio_closed = True
        with trio.CancelScope(shield=True):
            try:
                await self._send({"type": "websocket.close", "code": code})
            except Exception:
                pass

    # -------------------------------------------------------------- actions

    async def _do(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, ToOpenAI):
                await self._to_openai(a.text)
            elif isinstance(a, ToTwilio):
                await self._to_twilio(a.text)
            elif isinstance(a, CallStarted):
                if not await self.app.call_started(self, a):
                    self.token_ok = False
                    await self._close_twilio(1008)
                    self._cancel()
                    return
            elif isinstance(a, ConnectOpenAI):
                assert self._nursery is not None
                self._nursery.start_soon(self._openai_task)
            elif isinstance(a, CloseOpenAI):
                await self._close_openai(a.reason)
            elif isinstance(a, Hangup):
                if a.after_mark is None:
                    await self._close_twilio(1000)
                    self._cancel()
                else:
                    assert self._nursery is not None
                    self._nursery.start_soon(self._hangup_deadline)
            elif isinstance(a, RunTool):
                assert self._nursery is not None
                self._nursery.start_soon(self._run_tool, a)
            elif isinstance(a, SaveTranscript):
                assert self._nursery is not None
                self._nursery.start_soon(self.app.save_transcript, self.core, a)

    def _cancel(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _hangup_deadline(self) -> None:
        await trio.sleep(HANGUP_GRACE_S)
        log.info("call %s: apology mark never came back; hanging up", self.tag)
        await self._close_twilio(1000)
        self._cancel()

    async def _run_tool(self, a: RunTool) -> None:
        output = await self.app.run_tool(a.name, a.arguments)
        await self._do(self.core.tool_result(time.monotonic_ns(), a.call_id, output))

    # -------------------------------------------------------------- OpenAI

    async def _to_openai(self, text: str) -> None:
        ws = self.openai
        if ws is None:
            return
        try:
            await ws.send_message(text)
        except ConnectionClosed:
            pass  # the reader task reports the loss

    async def _close_openai(self, reason: str) -> None:
        ws, scope = self.openai, self._openai_scope
        self.openai = None
        if ws is not None:
            with trio.move_on_after(OPENAI_CLOSE_TIMEOUT_S):
                try:
                    await ws.aclose(1000, reason[:100])
                except Exception:
                    pass
        if scope is not None:
            scope.cancel()

    async def _openai_task(self) -> None:
        s = self.app.settings
        url = f"{s.openai_realtime_url}?model={s.openai_model}" if "?" not in s.openai_realtime_url \
            else s.openai_realtime_url
        with trio.CancelScope() as scope:
            self._openai_scope = scope
            try:
                async with open_websocket_url(
                    url, extra_headers=rt.connect_headers(s.openai_api_key.get_secret_value(), s.openai_dialect),
                    connect_timeout=s.openai_connect_timeout_s, disconnect_timeout=OPENAI_CLOSE_TIMEOUT_S,
                    max_message_size=16 * 2**20,
                ) as ws:
                    self.openai = ws
                    await self._do(self.core.openai_opened(time.monotonic_ns()))
                    while True:
                        data = await ws.get_message()
                        await self._do(self.core.openai_message(time.monotonic_ns(), data))
            except (HandshakeError, OSError) as exc:
                self.app.count_error("openai_connect")
                await self._do(self.core.openai_failed(time.monotonic_ns(), f"connect failed: {_describe(exc)}"))
            except ConnectionClosed as exc:
                if self.openai is not None:  # not closed by us
                    self.app.count_error("openai_dropped")
                    self.openai = None
                    await self._do(self.core.openai_failed(time.monotonic_ns(), f"closed: {exc.reason}"))
            finally:
                self.openai = None


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
