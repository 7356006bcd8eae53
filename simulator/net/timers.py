"""One task that fires the timers of many connections: the callers' 20 ms ticks and the mock's timers.

Why one task: at 150 calls, a task per call sleeping to each 20 ms deadline
means a timer wake-up, a cancel scope and a task switch per call and frame. The
:class:`TimerService` keeps a heap of ``(deadline, timer)``, wakes when the
earliest is due, and calls each due timer's ``on_due(now_ns)`` at its own
deadline, in its own task, synchronously: the driver's callback advances its
core and writes what it answers when the socket takes it whole. The
connection's own task stays parked in :meth:`Timer.wait` throughout, and is
handed a value back only for what cannot be done synchronously: a write the
kernel did not take whole (it finishes it, in order), the end of the
connection, an error (raised there, so it ends that connection alone).

Why a timer can be brought forward: a mock session's next deadline rarely
changes when a message arrives (of a call's 50 appends a second, only the one
that ends a turn schedules something), so its receiver does not touch the timer
for each message; it calls :meth:`Timer.bring_forward` with the session's next
deadline, which reschedules only when that is *earlier* than the one set. A
deadline that moved later (a timer removed) just fires once early, finds
nothing due, and sets the next. :attr:`Timer.brought_forward` counts the
reschedules (tests and introspection: it should be rare next to the messages).

Each due timer is fired with the clock read just before it, so what it sends
carries its own send time, and a connection's frames are never held for
another's: a timer is only late by the time the timers due before it take.
A timer is in the heap only while its task waits and a deadline is set; a
cancelled wait takes it out, so nothing of a connection stays with the service.

The service is started by whoever runs the connections, in their nursery
(:func:`~.drive.open_call_services`), so a test's ``MockClock`` drives it.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable

import outcome
import trio

from .clocks import Clock

__all__ = ["Timer", "TimerService"]


class Timer:
    """One connection's timer with a :class:`TimerService`: its deadline, and its task while it waits.

    ``on_due(now_ns)`` runs in the service's task when the deadline is reached.
    It either sets the next deadline (:meth:`set`), hands a value back to the
    waiting task (:meth:`hand_back`), or does neither: the timer then waits,
    unscheduled, until :meth:`bring_forward` sets a deadline. What it raises is
    raised in the waiting task (:meth:`fail`), never in the service's.
    """

    __slots__ = ("brought_forward", "due_ns", "on_due", "service", "task")

    def __init__(self, service: TimerService, on_due: Callable[[int], None] | None = None) -> None:
        self.service = service
        self.on_due = on_due
        self.task: trio.lowlevel.Task | None = None  # the connection's task, parked in wait()
        self.due_ns: int | None = None  # the deadline in the service's heap (None: not in it)
        self.brought_forward = 0

    @property
    def waiting(self) -> bool:
        return self.task is not None

    async def wait(self, deadline_ns: int | None) -> object:
        """Park the calling task, the timer set to ``deadline_ns`` (None: until brought
        forward), until ``on_due`` hands a value back; return it (or raise what
        ``on_due`` raised). Cancellable."""
        self.task = trio.lowlevel.current_task()
        if deadline_ns is not None:
            self.service.schedule(self, deadline_ns)

        def abort(_: object) -> trio.lowlevel.Abort:
            self.task = None
            self.service.unschedule(self)
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)

    def set(self, deadline_ns: int) -> None:
        """Fire again at ``deadline_ns`` (from ``on_due``, in the service's task)."""
        self.service.schedule(self, deadline_ns)

    def bring_forward(self, deadline_ns: int | None) -> bool:
        """Fire at ``deadline_ns`` if that is earlier than the deadline set (or none is).

        A no-op when no task waits: it is then busy, and reads the next deadline
        again before it waits.
        """
        if self.task is None or deadline_ns is None:
            return False
        due = self.due_ns
        if due is not None:
            if deadline_ns >= due:
                return False
            self.service.unschedule(self)
        self.service.schedule(self, deadline_ns)
        self.brought_forward += 1
        return True

    def hand_back(self, value: object) -> None:
        """Wake the waiting task: :meth:`wait` returns ``value``."""
        self._wake(outcome.Value(value))

    def fail(self, exc: BaseException) -> None:
        """Wake the waiting task: :meth:`wait` raises ``exc``."""
        self._wake(outcome.Error(exc))

    def _wake(self, result: outcome.Outcome) -> None:
        task, self.task = self.task, None
        assert task is not None, "no task waits on this timer"
        self.service.unschedule(self)  # out of the heap, if it is in it
        trio.lowlevel.reschedule(task, result)


class TimerService:
    """Fires many connections' timers from one task (see the module docstring).

    ``wakeups`` (times the task woke) and ``fired`` (timers fired) are for
    tests and introspection.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._heap: list[tuple[int, int, Timer]] = []
        self._order = itertools.count()
        self._scope: trio.CancelScope | None = None  # the run task's sleep
        self._wake_ns: int | None = None  # ... and the deadline it sleeps to (None: until woken)
        self.wakeups = 0
        self.fired = 0

    @property
    def scheduled(self) -> int:
        """How many timers are set now."""
        return len(self._heap)

    def schedule(self, timer: Timer, deadline_ns: int) -> None:
        """Put ``timer`` in the heap at ``deadline_ns`` (it must not be in it)."""
        heapq.heappush(self._heap, (deadline_ns, next(self._order), timer))
        timer.due_ns = deadline_ns
        scope = self._scope
        if scope is not None and (self._wake_ns is None or deadline_ns < self._wake_ns):
            self._wake_ns = deadline_ns
            scope.deadline = self.clock.trio_time(deadline_ns)

    def unschedule(self, timer: Timer) -> None:
        """Take ``timer`` out of the heap, if it is in it (rare: a cancel, an end, a bring-forward)."""
        if timer.due_ns is not None:
            timer.due_ns = None
            self._heap = [e for e in self._heap if e[2] is not timer]
            heapq.heapify(self._heap)

    async def run(self) -> None:
        """Until cancelled: sleep to the earliest deadline, then fire every timer that is due."""
        clock = self.clock
        while True:
            heap = self._heap
            self._wake_ns = heap[0][0] if heap else None
            with trio.CancelScope(deadline=math.inf if self._wake_ns is None
                                  else clock.trio_time(self._wake_ns)) as scope:
                self._scope = scope
                await trio.sleep_forever()  # yields even when already due: the other tasks run
            self._scope = None
            self.wakeups += 1
            now = clock.now_ns()
            heap = self._heap
            while heap and heap[0][0] <= now:
                timer = heapq.heappop(heap)[2]
                timer.due_ns = None
                self.fired += 1
                try:
                    timer.on_due(now)  # type: ignore[misc]
                except Exception as exc:  # a bug, or a broken socket: it ends that connection, in its own task
                    if timer.task is not None:
                        timer.fail(exc)
                now = clock.now_ns()
                heap = self._heap  # unschedule() may have rebuilt it
