"""Putting what came off the wire into a log line, safely.

Two hazards, both from peers we do not control (a caller's stream, and to a
lesser degree the OpenAI server):

* **Forged lines.** A ``callSid``, DTMF digit or event name holding a newline
  (or a carriage return, a Unicode line separator, a terminal escape, a bidi
  override) printed as is starts a new, attacker-written line in the log — log
  injection. :func:`wire` escapes every non-printable character and truncates,
  so one value is one bounded, unambiguous piece of one line.
* **Floods.** One WARNING per bad message lets a peer write as fast as it can
  send (10,000 bad messages a second is 10,000 lines, and each could be long).
  :class:`WarnLimiter` logs the first few of a connection in full, then at most
  one "suppressed N" line per interval; the counts stay exact (the caller keeps
  them in its stats), only the repetition is dropped.

Sans-IO like the call core: the limiter is given the time, it reads no clock.
"""

from __future__ import annotations

import logging
import reprlib
from typing import Any

WIRE_LIMIT = 120  # characters of a wire value shown in a log line

# repr of a non-string (a list sent as an event name...) without building a huge string first
_REPR = reprlib.Repr()
_REPR.maxstring = WIRE_LIMIT
_REPR.maxother = WIRE_LIMIT
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8
_REPR.maxlevel = 3

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def wire(value: Any, limit: int = WIRE_LIMIT) -> str:
    """``value`` as a log-safe fragment: printable, one line, at most ~``limit`` characters.

    Strings are shown as they are when they need no escaping (the usual case:
    no copy beyond the slice), else with ``\\n``, ``\\xNN``, ``\\uNNNN`` escapes
    (and ``\\\\`` for a backslash, so an escape cannot be faked). Past
    ``limit`` the text is cut and its full length named: ``abc…(5000 chars)``.
    Bytes and other types are shown by a size-bounded ``repr``.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        n = len(value)
        text = repr(bytes(value[:limit]))  # repr escapes every non-printable byte
        return f"{text}…({n} bytes)" if n > limit else text
    if not isinstance(value, str):  # a list as an event name, a number as a SID...
        text = _REPR.repr(value)  # repr escapes non-printables; reprlib bounds the work
        return text if len(text) <= limit else f"{text[:limit]}…"
    n = len(value)
    head = value[:limit] if n > limit else value
    if not head.isprintable() or "\\" in head:
        head = "".join(_escape(c) for c in head)
    return f"{head}…({n} chars)" if n > limit else head


def _escape(c: str) -> str:
    if c in _ESCAPES:
        return _ESCAPES[c]
    if c.isprintable():
        return c
    o = ord(c)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


class WarnLimiter:
    """Rate limit for one connection's warnings of one kind (``what``: "ignoring bad Twilio message").

    The first ``burst`` are logged in full (they are what a reader needs to
    see); after that, each is counted and, at most once per ``interval_ns``,
    one line says how many were suppressed and shows the latest. :meth:`flush`
    writes the last such line when the connection ends, so a count is never
    silently lost. Lines per connection are therefore at most
    ``burst + 1 + duration / interval + 1``.
    """

    def __init__(self, logger: logging.Logger, what: str, *, burst: int = 5,
                 interval_ns: int = 10_000_000_000, level: int = logging.WARNING) -> None:
        self.log = logger
        self.what = what
        self.burst = burst
        self.interval_ns = interval_ns
        self.level = level
        self.logged = 0
        self.suppressed = 0  # since the last line
        self.suppressed_total = 0
        self._last_line_ns: int | None = None
        self._latest = ""

    def warn(self, now_ns: int, tag: str, why: str) -> bool:
        """One occurrence for call/peer ``tag`` (``why`` must be log-safe already); True if logged in full."""
        if self.logged < self.burst:
            self.logged += 1
            self._last_line_ns = now_ns
            self.log.log(self.level, "call %s: %s: %s", tag, self.what, why)
            if self.logged == self.burst:
                self.log.log(self.level, "call %s: %s: more of these are counted, and logged at most once per %g s",
                             tag, self.what, self.interval_ns / 1e9)
            return True
        self.suppressed += 1
        self.suppressed_total += 1
        self._latest = why
        if self._last_line_ns is None or now_ns - self._last_line_ns >= self.interval_ns:
            self._summary(now_ns, tag)
        return False

    def flush(self, now_ns: int, tag: str) -> None:
        """The count of suppressed messages not reported yet (call it when the connection ends)."""
        if self.suppressed:
            self._summary(now_ns, tag)

    def _summary(self, now_ns: int, tag: str) -> None:
        self.log.log(self.level, "call %s: %s: %d more suppressed (latest: %s)", tag, self.what, self.suppressed,
                     self._latest)
        self.suppressed = 0
        self._last_line_ns = now_ns
