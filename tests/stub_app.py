"""Small Twilio-facing apps written for the tests: the far end the fake caller talks to.

They are deliberately not the bridge: the caller must be proven against servers
whose behaviour each test controls exactly. Every received message is kept with
its ``time.monotonic_ns()`` arrival time (the caller stamps with the same clock).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
)


@dataclass
class Received:
    t_ns: int
    raw: str | bytes

    @property
    def msg(self) -> dict[str, Any]:
        return json.loads(self.raw)


@dataclass
class StreamSession:
    """One accepted stream as the app saw it."""

    ws: WebSocketConnection
    path: str
    headers: dict[str, str]
    received: list[Received] = field(default_factory=list)
    stream_sid: str | None = None
    start: dict[str, Any] | None = None
    closed_ns: int | None = None
    started = None  # trio.Event, set on 'start'
    media_count: int = 0

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r.msg for r in self.received if isinstance(r.raw, str) and r.msg.get("event") == name]

    async def send(self, obj: dict[str, Any] | str | bytes) -> int:
        """Send and return the monotonic time just before sending."""
        t = time.monotonic_ns()
        await self.ws.send_message(obj if isinstance(obj, (str, bytes)) else json.dumps(obj))
        return t

    async def send_audio(self, ulaw: bytes) -> int:
        return await self.send({"event": "media", "streamSid": self.stream_sid,
                                "media": {"payload": base64.b64encode(ulaw).decode()}})

    async def send_mark(self, name: str) -> int:
        return await self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def send_clear(self) -> int:
        return await self.send({"event": "clear", "streamSid": self.stream_sid})

    async def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0,
                       since: int = 0) -> Received:
        """Wait until a JSON message received at index ``since`` or later satisfies ``pred``."""
        seen = since
        with trio.fail_after(timeout):
            while True:
                for r in self.received[seen:]:
                    if isinstance(r.raw, str) and pred(r.msg):
                        return r
                seen = len(self.received)
                await self._new.wait()

    _new: Any = None


Behaviour = Callable[[StreamSession], Awaitable[None]]


class StubApp:
    """A WebSocket server on 127.0.0.1 that records streams and runs a behaviour per stream.

    ``behaviour(session)`` runs concurrently with the recorder; when it returns,
    the app keeps reading until the caller closes (it does not close by itself
    unless the behaviour does).
    """

    def __init__(self, behaviour: Behaviour | None = None,
                 accept: Callable[[WebSocketRequest], bool] | None = None) -> None:
        self.behaviour = behaviour
        self.accept_pred = accept
        self.sessions: list[StreamSession] = []
        self.rejected = 0
        self.port: int | None = None
        self.session_started = trio.Event()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/media"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as n:
            server = await n.start(serve_websocket, self._handle, "127.0.0.1", 0, None)
            self.port = server.port
            task_status.started()

    async def _handle(self, request: WebSocketRequest) -> None:
        if self.accept_pred is not None and not self.accept_pred(request):
            self.rejected += 1
            await request.reject(403, body=b"bad signature")
            return
        ws = await request.accept()
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        sess = StreamSession(ws, request.path, headers)
        sess.started = trio.Event()
        sess._new = trio.Event()
        self.sessions.append(sess)
        self.session_started.set()
        async with trio.open_nursery() as n:
            if self.behaviour is not None:
                n.start_soon(self.behaviour, sess)
            try:
                while True:
                    raw = await ws.get_message()
                    sess.received.append(Received(time.monotonic_ns(), raw))
                    if isinstance(raw, str):
                        msg = json.loads(raw)
                        if msg.get("event") == "start":
                            sess.stream_sid = msg["streamSid"]
                            sess.start = msg
                            sess.started.set()
                        elif msg.get("event") == "media":
                            sess.media_count += 1
                    new, sess._new = sess._new, trio.Event()
                    new.set()
            except ConnectionClosed:
                sess.closed_ns = time.monotonic_ns()
            n.cancel_scope.cancel()


def is_speech(m: dict) -> bool:
    """A ``media`` message carrying the caller's speech, not its idle line (0xFF, or the call's
    inaudible line tag: simulator/audio/linetag.py)."""
    if m.get("event") != "media":
        return False
    import base64

    from callsim.simulator.audio import linetag

    frame = base64.b64decode(m["media"]["payload"])
    return frame != b"\xff" * len(frame) and linetag.read_tag(frame) is None
