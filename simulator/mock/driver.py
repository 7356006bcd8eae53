"""The trio driver of one :class:`MockSession`: the session served by the shared loop, :func:`~..net.drive.drive`.

The session is sans-IO (design.md rule 2): it is fed ``(time, message)`` and
tells, through :meth:`MockSession.next_deadline_ns`, when it next wants
:meth:`MockSession.advance` called (think time over, the next paced audio
delta, a transcription, a fault). Its messages are handled by the server's
reactor and its timers fired by the server's timer service; what is particular
to the mock:

* a message may bring the session's next deadline earlier (speech_stopped →
  commit → a new response, a ``response.create``), so the loop brings the
  session's timer forward after each message (``rewake``). Almost no append
  does, so the timer is not disturbed 50 times a second per call;
* what the client sent before its close frame is still the client's input, so
  it is handed to the session after the close (``drain_on_close``);
* an :class:`~..core_io.Abort` (the ``drop`` fault) drops the TCP connection
  without a close frame: ``abort`` does that for the server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from ..core_io import Outputs
from ..net.clocks import Clock, MonotonicClock
from ..net.drive import CallServices, apply, drive
from ..net.timers import Timer
from ..net.wsconn import ConnectionClosed
from .session import MockSession

__all__ = ["SessionCore", "run_session"]


class SessionCore:
    """A :class:`MockSession` as the loop's :class:`~..net.drive.Core`: its own methods, and the
    peer's close recorded as a close by the client."""

    __slots__ = ("advance", "next_deadline_ns", "receive", "session")

    def __init__(self, session: MockSession) -> None:
        self.session = session
        # bound once: the loop reads them once too, so this costs nothing per message
        self.receive: Callable[[int, str | bytes], Outputs] = session.receive
        self.advance: Callable[[int], Outputs] = session.advance
        self.next_deadline_ns: Callable[[], int | None] = session.next_deadline_ns

    @property
    def finished(self) -> bool:
        return self.session.closed

    def peer_closed(self, now_ns: int, code: int | None = None, reason: str | None = None) -> None:
        self.session.on_closed(now_ns, "client", code, reason)


async def _no_abort() -> None:
    """Default abort: nothing beyond the close the caller of :func:`run_session` does."""


async def run_session(session: MockSession, ws, services: CallServices, *,  # type: ignore[no-untyped-def]
                      clock: Clock | None = None, abort: Callable[[], Awaitable[None]] = _no_abort,
                      timer: Timer | None = None) -> None:
    """Serve ``session`` on ``ws`` until either side ends it.

    ``services``: the server's timer service and reactor (with a reactor, ``ws`` must be a
    :class:`callsim.simulator.net.wsconn.WebSocket`). ``clock`` is the session's clock (the
    shared monotonic clock; a test passes a :class:`~..net.clocks.TrioClock` on trio's
    MockClock) and must be the timer service's. ``abort`` drops the connection without a
    close frame (the ``drop`` fault). ``timer`` may be passed in to be watched.
    """
    clock = clock or MonotonicClock()
    try:
        if await apply(ws, session.open(clock.now_ns()), abort):
            await drive(SessionCore(session), ws, clock, services, timer=timer, abort=abort,
                        rewake=True, drain_on_close=True)
    # except*: out of a nursery these arrive wrapped in an ExceptionGroup (strict groups)
    except* (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
        session.on_closed(clock.now_ns(), "client")
