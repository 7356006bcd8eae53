"""The drivers' clocks: nanosecond timestamps for the cores, turned into trio deadlines.

Real runs use ``time.monotonic_ns`` (:class:`MonotonicClock`): the clock the
caller, the mock and the bridge share (design.md rule 4), so their timestamps
compare across processes. :meth:`Clock.trio_time` turns one of its times into
a trio deadline, because trio's own clock carries a random offset (stack.md).
Tests that only need order pass :class:`TrioClock`, which reads trio's
(possibly mocked) clock, so a ``MockClock`` drives everything.
"""

from __future__ import annotations

import time
from typing import Protocol

import trio

__all__ = ["Clock", "MonotonicClock", "TrioClock"]


class Clock(Protocol):
    def now_ns(self) -> int: ...
    def trio_time(self, t_ns: int) -> float: ...


class MonotonicClock:
    """``time.monotonic_ns``: shared by every process on the machine."""

    # the builtin itself, not a method wrapping it: it is read for every message and frame
    now_ns = staticmethod(time.monotonic_ns)

    def trio_time(self, t_ns: int) -> float:
        """The trio deadline for ``t_ns`` (trio's clock has its own random offset)."""
        return trio.current_time() + (t_ns - time.monotonic_ns()) / 1e9


class TrioClock:
    """trio's clock (works with ``MockClock``); not comparable across processes."""

    def now_ns(self) -> int:
        # round, not int: after sleeping until ``d / 1e9`` the clock must read ``d`` again, not d - 1
        return round(trio.current_time() * 1e9)

    def trio_time(self, t_ns: int) -> float:
        return t_ns / 1e9
