"""Injected failures of a mock session (:class:`~.behaviour.Fault`), each on a named timer.

Timed from the open: ``slow_start`` (session.created held back), ``error`` (an
error event), ``expire`` (the maximum-duration ending of :mod:`.timeouts` at a chosen moment). Timed from the
first audio delta of response ``nth``: ``drop`` (TCP gone, no close frame),
``close`` (a close frame), ``stall`` (the socket stays, nothing more is sent).
Such a timer outlives its response: a drop 2 s after the first delta happens
even if the reply was shorter. ``fail_response`` is read by the response itself.
``refuse`` is the server's (the handshake), not the session's.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from . import errors
from .behaviour import Fault
from .session_base import MS, Events, SessionBase, log

if TYPE_CHECKING:
    from .responses import Response


class FaultsPart(SessionBase):
    """The session's faults (``faults``: those that hit it, chosen when it was made) and their timers."""

    faults: tuple[Fault, ...]

    if TYPE_CHECKING:  # what it uses of the session
        def _send_session_created(self, now_ns: int, out: Events) -> None: ...
        def _expire(self, now_ns: int, out: Events) -> None: ...

    def _fault(self, kind: str, nth: int | None = None) -> Fault | None:
        for f in self.faults:
            if f.kind == kind and (nth is None or f.nth in (0, nth)):
                return f
        return None

    def _open_with_faults(self, now_ns: int, out: Events) -> None:
        """session.created (now, or late under slow_start), then the faults timed from the open."""
        slow = self._fault("slow_start")
        if slow is not None:
            self._log(now_ns, "fault", "slow_start", after_ms=slow.after_ms)
            self.timers.call_at(now_ns + int(slow.after_ms * MS), "fault.slow_start", self._send_session_created)
        else:
            self._send_session_created(now_ns, out)
        for f in self.faults:
            if f.kind == "error":
                self.timers.call_at(now_ns + int(f.after_ms * MS), "fault.error",
                                    partial(self._injected_error, code=f.code))
            elif f.kind == "expire":
                self.timers.call_at(now_ns + int(f.after_ms * MS), "fault.expire", self._expire_fault)

    def _arm_response_faults(self, now_ns: int, r: Response) -> None:
        """At the first audio delta of ``r``: the faults timed from it."""
        for f in self.faults:
            if f.kind in ("drop", "stall", "close") and f.nth in (0, r.index):
                self.timers.call_at(now_ns + int(f.after_ms * MS), "fault." + f.kind,
                                    partial(self._mid_response_fault, f=f))

    def _injected_error(self, now_ns: int, out: Events, *, code: str | int | None) -> None:
        # logged, as every injected fault is, so that a report can mark when it struck
        self._log(now_ns, "fault", "error", code=code)
        self._emit(now_ns, out, errors.server_error() if code is None
                   else errors.error_event("Injected fault", code=str(code), type="server_error"))

    def _mid_response_fault(self, now_ns: int, out: Events, *, f: Fault) -> None:
        self._log(now_ns, "fault", f.kind, after_ms=f.after_ms)
        log.info("session %s: injecting fault %s", self.id, f.kind)
        if f.kind == "drop":
            self.abort_request = True
        elif f.kind == "close":
            self.close_request = (int(f.code) if isinstance(f.code, int) else 1011, "injected fault")
        elif f.kind == "stall":
            self.stalled = True
            self.timers.clear()

    def _expire_fault(self, now_ns: int, out: Events) -> None:
        self._log(now_ns, "fault", "expire")
        self._expire(now_ns, out)
