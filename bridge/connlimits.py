"""How many TCP connections the bridge holds open, and what it says when it refuses one.

Why a cap: every connection holds a file descriptor until it ends, and a
client that opens connections and never finishes a request (or opens them
faster than they end) otherwise runs the process out of descriptors. Then
``accept`` fails with EMFILE, trio retries it every 0.1 s, and *every* new
connection — Twilio's webhook and media streams included — waits or fails.
Below the cap nothing changes; at the cap a new connection is answered 503 and
closed at once, so the descriptors left stay free for the calls in progress
(each holds one more, to OpenAI) and for the store.

Sans-IO: :class:`ConnectionGate` only counts and decides; :mod:`.frontdoor`
does the accepting, answering and logging. The log is rate-limited here —
a flood of refusals must not become a flood of log lines — while the metric
(``errors_total{kind="connection_cap"}``) counts every one.
"""

from __future__ import annotations

import math

#: descriptors kept out of the connection budget: the listening socket, the
#: store's SQLite files, stdio and logs, trio's epoll and wake-up fds, DNS
FD_RESERVE = 64


class Slot:
    """One admitted connection; :meth:`release` gives its place back (once, however often called).

    Released before the socket is closed, so that a peer that has seen the
    close knows the place is free again.
    """

    __slots__ = ("_gate",)

    def __init__(self, gate: ConnectionGate) -> None:
        self._gate: ConnectionGate | None = gate

    def release(self) -> None:
        if self._gate is not None:
            self._gate.open -= 1
            self._gate = None


class ConnectionGate:
    """Counts open connections against ``limit``; refusals are reported at most once per interval."""

    def __init__(self, limit: int, report_every_s: float = 10.0) -> None:
        if limit < 1:
            raise ValueError(f"connection limit must be at least 1, got {limit}")
        self.limit = limit
        self.report_every_s = report_every_s
        self.open = 0
        self.refused = 0  # since start
        self._unreported = 0
        self._last_report = -math.inf

    def admit(self) -> Slot | None:
        """A slot for a new connection, or None: refuse it (and call :meth:`report_due`)."""
        if self.open >= self.limit:
            self.refused += 1
            self._unreported += 1
            return None
        self.open += 1
        return Slot(self)

    def report_due(self, now: float) -> int:
        """How many refusals to log now: all since the last report, or 0 within the interval."""
        if self._unreported == 0 or now - self._last_report < self.report_every_s:
            return 0
        n, self._unreported, self._last_report = self._unreported, 0, now
        return n


def connection_budget(wanted: int, max_calls: int, fd_soft_limit: int) -> int:
    """The connection cap the process's descriptor limit can actually hold.

    Each call holds its media stream (a connection, counted in the cap) and an
    OpenAI socket (not counted); :data:`FD_RESERVE` more are the process's own.
    There are never more calls than connections, so ``n`` connections need at
    most ``n + min(n, max_calls) + FD_RESERVE`` descriptors: when ``max_calls``
    is huge (a benchmark sets 100000) every connection may be a call, and half
    the free descriptors are the cap — not ``limit - max_calls``, which would
    leave one connection. ``fd_soft_limit`` < 0 means unlimited. Never below 1.
    """
    if fd_soft_limit < 0:
        return wanted
    free = fd_soft_limit - FD_RESERVE
    return max(1, min(wanted, max(free // 2, free - max_calls)))


__all__ = ["FD_RESERVE", "ConnectionGate", "Slot", "connection_budget"]
