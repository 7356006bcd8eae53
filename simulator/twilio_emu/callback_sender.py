"""Sends the status callbacks (:mod:`.callbacks`) over HTTP, in order per call, off the REST path.

The store calls :meth:`CallbackSender.on_event` synchronously while it handles a REST request
(or while the legs move a call on); the request is built there, from the call as it is at that
moment, and queued for that call's own task, so a slow or dead callback URL never delays a
REST answer nor another call's callbacks. A call's task ends once its call has ended. Failures
(connection refused, timeout, a non-2xx answer) are logged on ``callsim.twilio_emu`` with the
call SID; as Twilio, the emulator does not retry a status callback.
"""

from __future__ import annotations

import logging
import math

import httpx
import trio

from .callbacks import CallbackRequest, StatusCallbacks, ends_call
from .calls import CallEvent, CallStore
from .tunnels import Tunnels

log = logging.getLogger("callsim.twilio_emu")

CALLBACK_TIMEOUT_S = 15.0  # Twilio's timeout for a webhook request


class CallbackSender:
    """Listens to a store and sends what :class:`.callbacks.StatusCallbacks` makes of its events.

    :meth:`run` must be running (``await nursery.start(sender.run)``) before the store changes;
    events must come from the trio thread that runs it. ``tunnels``: a request is signed for
    its public URL and sent to the local origin it maps to."""

    def __init__(self, store: CallStore, auth_token: str, *, timeout_s: float = CALLBACK_TIMEOUT_S,
                 tunnels: Tunnels | None = None) -> None:
        self.store = store
        self.tunnels = tunnels or Tunnels()
        self.builder = StatusCallbacks(auth_token)
        self.timeout_s = timeout_s
        self.sent = 0
        self.failed = 0
        self._queues: dict[str, trio.MemorySendChannel[CallbackRequest]] = {}
        self._nursery: trio.Nursery | None = None
        self._http: httpx.AsyncClient | None = None

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Listen to the store until cancelled; the per-call tasks run in here."""
        async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False, trust_env=False) as http:
            self._http = http
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.store.listeners.append(self.on_event)
                try:
                    task_status.started()
                    await trio.sleep_forever()
                finally:
                    self.store.listeners.remove(self.on_event)

    def on_event(self, event: CallEvent) -> None:
        call = self.store.get(event.sid)
        if call is None or self._nursery is None:
            return
        request = self.builder.request_for(event, call)
        queue = self._queues.get(event.sid)
        if request is not None:
            if queue is None:
                queue, inbox = trio.open_memory_channel[CallbackRequest](math.inf)
                self._queues[event.sid] = queue
                self._nursery.start_soon(self._send_in_order, event.sid, inbox)
            queue.send_nowait(request)
        if queue is not None and ends_call(event):
            queue.close()
            del self._queues[event.sid]

    async def _send_in_order(self, sid: str, inbox: trio.MemoryReceiveChannel[CallbackRequest]) -> None:
        async with inbox:
            async for request in inbox:
                await self._send(request)

    async def _send(self, r: CallbackRequest) -> None:
        assert self._http is not None
        try:
            response = await self._http.request(r.method, self.tunnels.local(r.url), headers=list(r.headers),
                                                content=r.body or None)
        except httpx.HTTPError as exc:
            self.failed += 1
            log.warning("status callback %s for call %s to %s failed: %s", r.event, r.call_sid,
                        _without_query(r.url), exc.__class__.__name__ + (f": {exc}" if str(exc) else ""))
            return
        if response.is_success:
            self.sent += 1
            log.info("status callback %s for call %s -> %d", r.event, r.call_sid, response.status_code)
        else:
            self.failed += 1
            log.warning("status callback %s for call %s to %s answered HTTP %d", r.event, r.call_sid,
                        _without_query(r.url), response.status_code)


def _without_query(url: str) -> str:
    """A GET callback's URL carries the whole form: log the address only."""
    return url.split("?", 1)[0]
