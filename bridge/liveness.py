"""Is the Twilio leg still there? The deadlines of one media stream, sans-IO.

A socket on ``/media-stream`` holds resources before it is a call (a pending
slot) and, once it is one, an OpenAI session that is billed while it is open.
Three ways the far end can hold them with nothing on the line:

* **no ``start``**: Twilio sends ``connected`` and ``start`` right after the
  upgrade; a socket that has not sent a valid ``start`` within
  ``start_timeout`` is not Twilio (an idle upgrade, a replayed signature).
* **no media**: Twilio sends a ``media`` frame every 20 ms for the whole call,
  silence included, so no media for ``media_timeout`` means the call is gone
  (a dead link, a half-open TCP connection, a peer that stopped sending).
* **not reading**: a send to Twilio that stays blocked for ``send_timeout``
  means the peer stopped reading and the socket buffers are full; Twilio reads
  as it receives, so this is not a slow caller but a gone one.

Why polled counters and not a timer per message: the driver would pay a
cancel scope or a clock read for each of ~100 messages a second per call.
Instead it exposes counts it keeps anyway (``frames_in``) or for nearly free
(sends begun/finished), and :meth:`Liveness.check` compares them with what it
saw before, every quarter of the shortest timeout: a silence or a stall is
caught between 1 and 1.5 times its timeout after it began (never before). The driver sleeps
until :meth:`Liveness.next_check`; with trio's ``MockClock`` the same code runs
in virtual time.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Gone", "Liveness"]

#: checks per shortest timeout: detection is within (1 + 2/POLLS) x the timeout
POLLS = 4


@dataclass(frozen=True)
class Gone:
    """Why the stream is given up: ``kind`` for metrics, ``status`` for the store, ``reason`` for logs."""

    kind: str
    status: str
    reason: str
    close_code: int = 1000


class Liveness:
    """The deadlines of one media stream, from the moment its socket was accepted.

    Times are seconds on any monotonic clock (the driver uses trio's). Call
    :meth:`started` when the stream becomes a call (a valid ``start``), then
    :meth:`check` at :meth:`next_check` times with the driver's counters.
    """

    def __init__(self, opened: float, *, start_timeout: float, media_timeout: float, send_timeout: float) -> None:
        if min(start_timeout, media_timeout, send_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        self.start_timeout = start_timeout
        self.media_timeout = media_timeout
        self.send_timeout = send_timeout
        self.opened = opened
        self.is_started = False
        self._poll = min(media_timeout, send_timeout) / POLLS
        self._frames = -1
        self._frames_since = opened  # when the current frames_in count was first seen
        self._sends_done = -1
        self._send_since = opened  # when a send was last seen finishing (or none was pending)

    def started(self, now: float, frames_in: int = 0) -> None:
        """The stream is a call now: media silence counts from here."""
        self.is_started = True
        self._frames, self._frames_since = frames_in, now
        self._send_since = now

    def next_check(self, now: float) -> float:
        if not self.is_started:  # polled too: the driver does not wake its watchdog on start
            return min(self.opened + self.start_timeout, now + self._poll)
        return now + self._poll

    def check(self, now: float, *, frames_in: int, sends_pending: int, sends_done: int) -> Gone | None:
        """What ended the stream by ``now``, or None while it is alive."""
        if not self.is_started:
            if now >= self.opened + self.start_timeout:
                return Gone("stream_start_timeout", "no_start",
                            f"no valid start within {self.start_timeout:g} s of the upgrade", 1008)
            return None
        if frames_in != self._frames:
            self._frames, self._frames_since = frames_in, now
        elif now - self._frames_since >= self.media_timeout:
            return Gone("media_timeout", "media_timeout",
                        f"no media from Twilio for {now - self._frames_since:.1f} s (it sends every 20 ms)")
        if sends_pending <= 0 or sends_done != self._sends_done:
            self._sends_done, self._send_since = sends_done, now
        elif now - self._send_since >= self.send_timeout:
            return Gone("send_timeout", "send_timeout",
                        f"a send to Twilio blocked for {now - self._send_since:.1f} s: the peer stopped reading")
        return None
