"""The trio loop around a sans-IO core: one for the fake caller and the mock alike.

A core (:class:`Core`) is fed the time and each message, and tells when it next
wants :meth:`Core.advance` called; it answers with :data:`~..core_io.Outputs`.
:func:`drive` serves one core on one WebSocket until either side ends the
connection, in one nursery holding two tasks:

* the **receiver** feeds each message to ``core.receive`` and carries out the
  answer. While nothing needs awaiting, this happens in the
  :class:`~.reactor.Reactor`'s task (:meth:`WebSocket.receive_via`) and the
  receiver stays parked, so a message costs no wake-up of it;
* the **ticker** waits on a :class:`~.timers.Timer` while the
  :class:`~.timers.TimerService`'s task runs ``core.advance`` at each deadline
  and carries out its answer.

Which task runs a line: :func:`apply_nowait` and the core's methods run in the
reactor's or the timer service's task (or the connection's own, when the
reactor cannot be used: a TLS stream, a test's fake socket); whatever must be
awaited — a write the kernel did not take whole, a close, an abort, an error —
goes back to the connection's own task (:func:`finish`). The same function
carries out a core's outputs on every path, so what goes on the wire does not
depend on which task got there.

When either task ends (the core closed or aborted, the peer closed, the core
has no more deadlines and is finished, cancellation) the nursery goes: nothing
of a connection outlives it. The reactor and the timer service belong to
whoever runs the connections, opened with :func:`open_call_services` in their
nursery and passed in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from ..core_io import Close, End, Outputs
from .clocks import Clock, MonotonicClock
from .reactor import Reactor
from .timers import Timer, TimerService
from .wsconn import ConnectionClosed

__all__ = ["FLUSH", "CallServices", "Caller", "Core", "apply", "apply_nowait", "drive", "drive_call", "finish",
           "open_call_services"]


class Core(Protocol):
    """What :func:`drive` needs of a sans-IO core."""

    def receive(self, now_ns: int, data: str | bytes) -> Outputs: ...
    def advance(self, now_ns: int) -> Outputs: ...
    def next_deadline_ns(self) -> int | None: ...
    def peer_closed(self, now_ns: int, code: int | None = None, reason: str | None = None) -> None: ...

    @property
    def finished(self) -> bool: ...


class Caller(Core, Protocol):
    """A core that is the caller's side of a media stream (Twilio's, in callsim): it can hang up."""

    def hang_up(self, now_ns: int) -> Outputs: ...


@dataclass
class CallServices:
    """What the connections of one run share: the timer service and (on plain TCP) the reactor."""

    timers: TimerService
    reactor: Reactor | None


@asynccontextmanager
async def open_call_services(clock: Clock | None = None, *, reactor: bool = True) -> AsyncIterator[CallServices]:
    """Start a timer service (on ``clock``, default :class:`MonotonicClock`) and a reactor
    in a nursery of the caller's; they stop when the block ends."""
    services = CallServices(TimerService(clock or MonotonicClock()), Reactor() if reactor else None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(services.timers.run, name="callsim timers")
        if services.reactor is not None:
            nursery.start_soon(services.reactor.run, name="callsim reactor")
        try:
            yield services
        finally:
            nursery.cancel_scope.cancel()


FLUSH = object()
"""Left by :func:`apply_nowait`: messages are queued that the socket did not take at once."""


def apply_nowait(ws: Any, outs: Outputs) -> object:
    """Carry out a core's outputs without yielding, as far as that goes.

    Returns None when all is done; otherwise what the connection's task must
    await with :func:`finish`: :data:`FLUSH`, or the batch's :class:`~..core_io.End`
    (its messages written or queued before it). Raises :class:`ConnectionClosed`.
    """
    if not outs:
        return None
    last = outs[-1]
    if isinstance(last, End):
        if len(outs) > 1:
            ws.send_texts_nowait(outs[:-1])
        return last
    return None if ws.send_texts_nowait(outs) else FLUSH


async def _no_abort() -> None:
    """Default abort: nothing beyond the close the caller of :func:`drive` does."""


async def finish(ws: Any, left: object, abort: Callable[[], Awaitable[None]] = _no_abort) -> bool:
    """Await what :func:`apply_nowait` left: False when that ended the connection."""
    await ws.flush()
    if left is FLUSH:
        return True
    if isinstance(left, Close):
        await ws.aclose(left.code, left.reason)
    else:
        await abort()
    return False


async def apply(ws: Any, outs: Outputs, abort: Callable[[], Awaitable[None]] = _no_abort) -> bool:
    """Carry out a core's outputs from the connection's task: False when they ended the connection."""
    left = apply_nowait(ws, outs)
    return left is None or await finish(ws, left, abort)


async def drive(core: Core, ws: Any, clock: Clock, services: CallServices, *, timer: Timer | None = None,
                abort: Callable[[], Awaitable[None]] = _no_abort, rewake: bool = False,
                drain_on_close: bool = False) -> ConnectionClosed | None:
    """Serve ``core`` on ``ws`` until either side ends the connection (see the module docstring).

    ``ws`` is a :class:`~.wsconn.WebSocket` (or a test's fake with the same methods).
    ``timer``: the core's timer with ``services.timers``, to be watched (made here if not given).
    ``abort`` drops the connection without a close frame (a core's :class:`~..core_io.Abort`).
    ``rewake``: a message may bring the core's next deadline earlier (the mock's), so after
    each one the timer is brought forward to it; off for a core whose deadlines only messages
    never move (the caller's), which then costs nothing per message.
    ``drain_on_close``: when the peer closes, what it sent before its close frame still goes
    to the core (an append recorded, a truncate judged), though no answer can reach it.

    Returns the peer's close when that ended the connection (after ``core.peer_closed``).
    Errors other than a close (a bug in the core, a broken stream) are raised, grouped.
    """
    timer = timer or Timer(services.timers)
    reactor = services.reactor
    receive, advance, next_deadline, now = core.receive, core.advance, core.next_deadline_ns, clock.now_ns
    bring_forward, schedule = timer.bring_forward, services.timers.schedule
    left_by_reactor: object = None
    closed: ConnectionClosed | None = None

    def on_due(now_ns: int) -> None:
        """The core's deadline, in the timer service's task."""
        outs = advance(now_ns)
        if outs and (left := apply_nowait(ws, outs)) is not None:
            timer.hand_back(left)
            return
        deadline = next_deadline()
        if deadline is not None:
            schedule(timer, deadline)
        elif core.finished:
            timer.hand_back(None)

    def on_message(data: str | bytes) -> bool:
        """A message, in the reactor's task: False hands over to the receiver (something to await)."""
        nonlocal left_by_reactor
        outs = receive(now(), data)
        if rewake:
            bring_forward(next_deadline())
        if outs and (left := apply_nowait(ws, outs)) is not None:
            left_by_reactor = left
            return False
        return True

    async def receiver(cancel: trio.CancelScope) -> None:
        nonlocal left_by_reactor, closed
        try:
            while True:
                if reactor is not None and await ws.receive_via(reactor, on_message):
                    left, left_by_reactor = left_by_reactor, None
                    await ws.flush()  # also pongs and a close echo the reactor's read could not write whole
                    if isinstance(left, End) and not await finish(ws, left, abort):
                        break
                data = await ws.receive_message()
                outs = receive(now(), data)
                if rewake:
                    bring_forward(next_deadline())
                if outs and (left := apply_nowait(ws, outs)) is not None and not await finish(ws, left, abort):
                    break
        except ConnectionClosed as exc:
            take = getattr(ws, "take_pending", None) if drain_on_close else None
            for data in take() if take is not None else ():
                receive(now(), data)
            core.peer_closed(now(), exc.code, exc.reason)
            closed = exc
        cancel.cancel()

    async def ticker() -> None:
        """The connection's task, parked while the timer service runs the core's deadlines."""
        while not core.finished:
            left = await timer.wait(next_deadline())
            if left is FLUSH:
                await ws.flush()
            elif isinstance(left, End):
                await finish(ws, left, abort)
                return

    timer.on_due = on_due
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver, nursery.cancel_scope)
            try:
                await ticker()
            except ConnectionClosed as exc:  # here, not outside: out of a nursery it would come grouped
                core.peer_closed(now(), exc.code, exc.reason)
                closed = exc
            nursery.cancel_scope.cancel()
    finally:
        services.timers.unschedule(timer)
    return closed


async def drive_call(core: Caller, ws: Any, clock: Clock, services: CallServices, *,
                     begin: Callable[[int], Outputs] | None = None, **kw: Any) -> ConnectionClosed | None:
    """:func:`drive` a caller's side of a stream to its end, as Twilio ends one: ``begin(now)``'s
    outputs first (``connected``/``start``), a close by the app told to ``core`` (``peer_closed``),
    and a call cancelled from outside (max duration, Ctrl-C, the test's end) still hung up, briefly
    and shielded, so the app sees ``stop``."""
    try:
        if begin is not None:
            await apply(ws, begin(clock.now_ns()))
        return await drive(core, ws, clock, services, **kw)
    except ConnectionClosed as exc:
        core.peer_closed(clock.now_ns(), exc.code, exc.reason)
        return None
    finally:
        if not core.finished:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await apply(ws, core.hang_up(clock.now_ns()))
                except ConnectionClosed:
                    pass
