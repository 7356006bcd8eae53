"""A mock session's named timers: what it waits for, by name, on its own clock.

The session has no clock: the driver asks :meth:`MockSession.next_deadline_ns`
and calls :meth:`MockSession.advance` when that time comes, and each due timer
fires with its own deadline as "now" (so the events it emits carry the time
they were due, however late the driver woke). A timer has a name ("response.think",
"fault.expire", ...) so the session can list what it is waiting for and cancel
one thing without touching the rest.

Cancelling (or re-arming) is lazy: the heap entry stays and is skipped when it
comes up, as an entry is only live while its sequence number is the timer's.
So a cancelled timer's deadline may still wake the driver once, for nothing —
cheaper than searching the heap, and the entry never fires.
"""

from __future__ import annotations

import heapq
from typing import Any, Callable

Fire = Callable[[int, list[dict[str, Any]]], None]  # (due_ns, out): append the events to send


class Timer:
    """One named thing the session waits for. ``seq`` is 0 while it is not armed."""

    __slots__ = ("name", "fire", "due_ns", "seq")

    def __init__(self, name: str, fire: Fire) -> None:
        self.name = name
        self.fire = fire
        self.due_ns: int | None = None
        self.seq = 0

    @property
    def armed(self) -> bool:
        return self.seq != 0

    def __repr__(self) -> str:
        return f"Timer({self.name!r}, due_ns={self.due_ns}, armed={self.armed})"


class Timers:
    """The heap of ``(due_ns, seq, timer)``; ties fire in the order they were armed.

    ``heap`` is never replaced (only cleared), so a hot path may hold it directly.
    """

    __slots__ = ("heap", "_seq")

    def __init__(self) -> None:
        self.heap: list[tuple[int, int, Timer]] = []
        self._seq = 0

    def arm(self, timer: Timer, due_ns: int) -> Timer:
        """Arm ``timer`` for ``due_ns``; an earlier arming of the same timer is void."""
        self._seq = seq = self._seq + 1
        timer.due_ns = due_ns
        timer.seq = seq
        heapq.heappush(self.heap, (due_ns, seq, timer))
        return timer

    def call_at(self, due_ns: int, name: str, fire: Fire) -> Timer:
        """A one-off timer."""
        return self.arm(Timer(name, fire), due_ns)

    def cancel(self, timer: Timer) -> None:
        timer.seq = 0

    def clear(self) -> None:
        for _, _, timer in self.heap:
            timer.seq = 0
        self.heap.clear()

    def pending(self) -> list[Timer]:
        """The armed timers, soonest first."""
        return [t for _, seq, t in sorted(self.heap, key=lambda e: e[:2]) if t.seq == seq]
