"""The trio driver of one :class:`MockSession`: a receiver task and a timer task.

The session is sans-IO (design.md rule 2): it is fed ``(time, message)`` and
tells, through :meth:`MockSession.next_deadline_ns`, when it next wants
:meth:`MockSession.advance` called (think time over, the next paced audio
delta, a transcription, a fault). This module supplies the two loops around it:

* the **receiver** feeds each client message to the session and sends what it
  answers;
* the **timer** sleeps until the session's next deadline, advances it, sends
  what it answers, and sleeps again.

Why the :class:`Alarm`: a call appends 50 times a second, and almost no append
changes the session's next deadline (only speech_stopped → commit → a new
response, a ``response.create`` and the like schedule something). Waking the
timer task on every message — as an ``Event`` per message did — cost a second
task switch, a new cancel scope and an empty ``advance()`` per append. Instead
the timer sleeps in one cancel scope whose deadline is the session's next
deadline, and the receiver moves that deadline only when a message brought the
session's next deadline *earlier* than the one being slept to. A deadline that
moved later (a timer removed by a cancel or a fault) just wakes the timer task
early once, to find nothing due and sleep again — what the per-message wake
did every time. Close and abort requests are carried out by whichever task got
them from the session (:func:`run_session`'s ``send``), so they need no wake.

Timing is the same as with a wake per message: every timer fires when the
clock reaches its deadline, and a message's own answer goes out right away.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
import trio

from ..net.reactor import Reactor
from ..net.wsconn import ConnectionClosed
from .session import MockSession

__all__ = ["Alarm", "MessageSocket", "run_session"]

Clock = Callable[[], int]


class MessageSocket(Protocol):
    """What the driver needs of a WebSocket (``callsim.simulator.net.wsconn.WebSocket`` has it)."""

    async def receive_message(self) -> str | bytes: ...

    async def send_texts(self, messages: list[bytes]) -> None: ...

    async def aclose(self, code: int = 1000, reason: str = "") -> None: ...


class Alarm:
    """The timer task's sleep, which another task can bring forward.

    ``due_ns`` is the session-clock deadline being slept to (None: not
    sleeping, or sleeping until woken). ``wakeups`` counts how often
    :meth:`bring_forward` actually disturbed the sleeper (tests and
    introspection: it should be rare next to the number of messages).
    """

    __slots__ = ("_clock", "_scope", "due_ns", "wakeups")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._scope: trio.CancelScope | None = None
        self.due_ns: int | None = None
        self.wakeups = 0

    @property
    def sleeping(self) -> bool:
        return self._scope is not None

    async def sleep_until(self, due_ns: int | None) -> None:
        """Sleep until the session clock reaches ``due_ns`` (None: until brought forward)."""
        with trio.CancelScope(deadline=self._trio_deadline(due_ns)) as scope:
            self._scope, self.due_ns = scope, due_ns
            try:
                await trio.sleep_forever()
            finally:
                self._scope, self.due_ns = None, None

    def bring_forward(self, due_ns: int | None) -> bool:
        """Wake the sleeper at ``due_ns`` if that is earlier than what it sleeps to.

        A no-op when the timer task is not sleeping: it is then busy advancing
        or sending, and reads the session's next deadline again before it sleeps.
        """
        scope = self._scope
        if scope is None or due_ns is None:
            return False
        if self.due_ns is not None and due_ns >= self.due_ns:
            return False
        self.due_ns = due_ns
        scope.deadline = self._trio_deadline(due_ns)
        self.wakeups += 1
        return True

    def _trio_deadline(self, due_ns: int | None) -> float:
        """A session-clock time as a trio deadline (the two clocks differ by an offset)."""
        if due_ns is None:
            return math.inf
        return trio.current_time() + max(0, due_ns - self._clock()) / 1e9


async def _no_abort() -> None:
    """Default abort: nothing beyond the close the caller of :func:`run_session` does."""


async def run_session(session: MockSession, ws: MessageSocket, *, clock: Clock = time.monotonic_ns,
                      abort: Callable[[], Awaitable[None]] = _no_abort, alarm: Alarm | None = None,
                      reactor: Reactor | None = None) -> None:
    """Serve ``session`` on ``ws`` until either side ends it.

    ``clock`` is the session's clock (the shared monotonic clock; a test passes
    one derived from trio's MockClock). ``abort`` drops the connection without
    a close frame (the ``drop`` fault). ``alarm`` may be passed in to be watched.
    ``reactor``: the server's :class:`~callsim.simulator.net.reactor.Reactor`; with it, messages
    are handled in the reactor's task while nothing needs awaiting (``ws`` must
    then be a :class:`callsim.simulator.net.wsconn.WebSocket`), without waking the receiver.
    """
    alarm = alarm or Alarm(clock)

    async def send(events: list[dict[str, Any]]) -> bool:
        """Send; then honour a close/abort the session asked for. False = the session is over."""
        if events:
            await ws.send_texts([orjson.dumps(ev) for ev in events])  # UTF-8 already: no decode/encode
        if session.abort_request:
            session.on_closed(clock(), "abort")
            await abort()
            return False
        if session.close_request:
            code, reason = session.close_request
            session.on_closed(clock(), "server", code, reason)
            await ws.aclose(code, reason)
            return False
        return True

    async def receiver(cancel: trio.CancelScope) -> None:
        receive, next_deadline = session.receive, session.next_deadline_ns

        def handle(data: str | bytes) -> bool:
            """A message, in the reactor's task: as below, for as long as nothing needs awaiting."""
            events = receive(clock(), data)
            if events and not ws.send_texts_nowait([orjson.dumps(ev) for ev in events]):  # type: ignore[attr-defined]
                return False  # the kernel did not take it all: flushed below
            if session.abort_request or session.close_request:
                return False
            if alarm.sleeping:
                alarm.bring_forward(next_deadline())
            return True

        try:
            while True:
                if reactor is not None and await ws.receive_via(reactor, handle):  # type: ignore[attr-defined]
                    await ws.flush()  # type: ignore[attr-defined]
                    if (session.abort_request or session.close_request) and not await send([]):
                        break
                    if alarm.sleeping:
                        alarm.bring_forward(next_deadline())
                data = await ws.receive_message()
                events = receive(clock(), data)
                if (events or session.abort_request or session.close_request) and not await send(events):
                    break
                if alarm.sleeping:
                    alarm.bring_forward(next_deadline())
        except ConnectionClosed as exc:
            # What the client sent before its close frame is still the client's input (an append
            # recorded, a truncate judged), even though no answer can reach it any more.
            take = getattr(ws, "take_pending", None)
            for data in take() if take is not None else ():
                receive(clock(), data)
            session.on_closed(clock(), "client", exc.code, exc.reason)
        cancel.cancel()

    async def timer() -> None:
        while not session.closed:
            due = session.next_deadline_ns()
            if due is None or due > clock():
                await alarm.sleep_until(due)
            else:
                await trio.lowlevel.checkpoint()  # already due: fire, but let others run between
            if not await send(session.advance(clock())):
                return

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver, nursery.cancel_scope)
            if await send(session.open(clock())):
                await timer()
            nursery.cancel_scope.cancel()
    # except*: out of a nursery these arrive wrapped in an ExceptionGroup (strict groups)
    except* (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
        session.on_closed(clock(), "client")
