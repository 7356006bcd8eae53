"""hypercorn's per-connection HTTP server, made to close the connections it means to close.

Why a subclass: with quart-trio, hypercorn's ``TCPServer`` (0.17–0.18) never
closes a connection once a response has been sent. The response's last write
runs in the request's task; hypercorn then tells the app ``http.disconnect``,
on which quart-trio cancels that same task — and only *then* does hypercorn,
still in that task, react to the end of the response: ``Closed`` (for
``Connection: close``, or a request whose body was not read) calls ``_close``,
whose first checkpoint (``send_eof``) raises ``Cancelled`` before ``aclose``;
``Updated(idle=True)`` (keep-alive) starts the idle timer with
``nursery.start``, which raises ``Cancelled`` too. So the socket stayed open
and the keep-alive timeout never ran: 130 s measured before the client gave
up, and 19,900 slow-body connections reached the descriptor limit.

The fix is at that cause: the two state changes, and the close, run shielded
(the close bounded, as a TLS ``close_notify`` can block on a peer that does
not read). Two more bounds hypercorn lacks: a request must be received and
answered within ``request_timeout_s`` (else ``408`` if nothing was answered
yet, and the connection is closed) — its ``read_timeout`` bounds each read,
so a body trickled a byte at a time was held forever — and the timers stop
when the connection ends, instead of holding its socket up to the keep-alive
timeout more.

The bridge's own WebSocket (``/media-stream``) never comes here; a WebSocket
upgraded here is freed from the request timeout once it answers 101, and so is the
console's live feed (``text/event-stream``) once its 200 head goes out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import TrioSingleTask, WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState

log = logging.getLogger("callsim.bridge")

CLOSE_GRACE_S = 1.0  # a TLS close_notify gets this long, then the socket is closed anyway
REQUEST_TIMEOUT_ANSWER = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                          b"content-length: 16\r\nconnection: close\r\n\r\nrequest timeout\n")


class HTTPConnection(TCPServer):
    """One HTTP connection under hypercorn, with the closes and bounds described above."""

    def __init__(self, app: AppWrapper, config: Config, context: WorkerContext, state: ConnectionState,
                 stream: Any, *, request_timeout_s: float, peer: str,
                 count_error: Callable[[str], None]) -> None:
        super().__init__(app, config, context, state, stream)
        self.request_timeout_s = request_timeout_s
        self.peer = peer
        self._count_error = count_error
        self._request_timer = TrioSingleTask()
        self._answering = False  # response bytes went out for the current request

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, RawData):
            if not self._answering and (event.data.startswith(b"HTTP/1.1 101 ") or _is_event_stream(event.data)):
                with trio.CancelScope(shield=True):  # an upgraded WebSocket or the console's feed lives on
                    await self._request_timer.stop()
            self._answering = True
            await super().protocol_send(event)
        elif isinstance(event, Updated):
            # may run in a request task quart-trio has just cancelled: shielded, or lost
            with trio.CancelScope(shield=True):
                if event.idle:
                    await self._request_timer.stop()
                else:
                    self._answering = False
                    await self._request_timer.restart(self._task_group, self._request_timeout)
                await super().protocol_send(event)
        else:  # Closed: _close (below) is shielded itself
            if isinstance(event, Closed):
                with trio.CancelScope(shield=True):
                    await self._request_timer.stop()
            await super().protocol_send(event)

    async def _close(self) -> None:
        """``send_eof`` then ``aclose`` — even from a cancelled task, and never for longer than the grace."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(CLOSE_GRACE_S):
                await super()._close()
            await trio.aclose_forcefully(self.stream)

    async def _read_data(self) -> None:
        try:
            await super()._read_data()
        finally:  # the peer is gone or the socket closed: no timer may hold the connection open
            with trio.CancelScope(shield=True):
                await self._request_timer.stop()
                await self.idle_task.stop()

    async def _request_timeout(self) -> None:
        await trio.sleep(self.request_timeout_s)
        with trio.CancelScope(shield=True):
            self._count_error("http_request_timeout")
            if self._answering:
                log.info("HTTP from %s: response not sent within %.3g s; connection closed",
                         self.peer, self.request_timeout_s)
            else:
                log.info("HTTP from %s: request not received within %.3g s: 408, connection closed",
                         self.peer, self.request_timeout_s)
                async with self.send_lock:
                    with trio.move_on_after(CLOSE_GRACE_S):
                        try:
                            await self.stream.send_all(REQUEST_TIMEOUT_ANSWER)
                        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                            pass
            # the read loop sees the close, tells the protocol and ends the connection
            await self._close()


def _is_event_stream(data: bytes) -> bool:
    """A response head of ``text/event-stream`` (the console's live feed, which is authenticated
    before it answers): it is meant to stay open, so the request timeout stops when it starts."""
    end = data.find(b"\r\n\r\n")
    head = (data if end < 0 else data[:end]).lower()
    return head.startswith(b"http/1.1 200 ") and b"\r\ncontent-type: text/event-stream" in head


__all__ = ["HTTPConnection"]
