"""Shared helpers for the mock's sans-IO tests: drive a ``MockSession`` on a fake clock.

:class:`Driver` owns a session and an integer nanosecond clock. It fires the
session's timers at exactly :meth:`MockSession.next_deadline_ns` (never late),
appends audio in 20 ms chunks at t += 20 ms, and records every event the
session emits with the time it was handed out. Every emitted event is
re-validated against the openai SDK's server-event types of the session's
dialect, and the ``drive`` fixture asserts ``session.invalid_sent == []`` for
every session it created when the test ends, so no test can forget it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import pytest
from callsim.simulator.audio.codec import SILENCE_BYTE
from callsim.simulator.core_io import Abort, Close, End, Outputs
from callsim.simulator.mock.behaviour import Behaviour
from callsim.simulator.mock.recognizer import Recognizer
from callsim.simulator.mock.schema import validate_server_event
from callsim.simulator.mock.session import MockSession

MS = 1_000_000
CHUNK_MS = 20
T0 = 1_000 * MS  # an arbitrary, non-zero start of the fake clock


def events_of(out: Outputs) -> list[dict[str, Any]]:
    """The events in a session's outputs, parsed back from the wire bytes (a close or abort left out)."""
    return [orjson.loads(item) for item in out if not isinstance(item, End)]


class Driver:
    """A ``MockSession`` plus a fake clock and the log of what it sent."""

    def __init__(self, session: MockSession, t0: int = T0) -> None:
        self.s = session
        self.t = t0
        self.events: list[dict[str, Any]] = []  # every emitted event
        self.times: list[int] = []  # the clock when each was handed out
        self.ended: Close | Abort | None = None  # how the session ended the connection, if it did

    # ------------------------------------------------------------ plumbing

    def _take(self, now: int, out: Outputs) -> list[dict[str, Any]]:
        """The session's outputs as event dicts (the wire bytes parsed back); a close or abort is kept in
        :attr:`ended`."""
        events: list[dict[str, Any]] = []
        for item in out:
            if isinstance(item, End):
                assert self.ended is None and item is out[-1], "one end, last of its batch"
                self.ended = item
                continue
            ev = orjson.loads(item)
            validate_server_event(self.s.dialect, ev)  # independent of the session's own check
            events.append(ev)
            self.events.append(ev)
            self.times.append(now)
        return events

    def open(self) -> list[dict[str, Any]]:
        return self._take(self.t, self.s.open(self.t))

    def run_until(self, t_end: int) -> list[dict[str, Any]]:
        """Fire every timer due up to ``t_end``, each at its own deadline; the clock ends at ``t_end``."""
        out: list[dict[str, Any]] = []
        while True:
            d = self.s.next_deadline_ns()
            if d is None or d > t_end:
                break
            self.t = max(self.t, d)
            out += self._take(self.t, self.s.advance(self.t))
        self.t = max(self.t, t_end)
        return out

    def advance_ms(self, ms: float) -> list[dict[str, Any]]:
        return self.run_until(self.t + int(ms * MS))

    def settle(self, limit_ms: float = 120_000) -> list[dict[str, Any]]:
        """Fire timers until none is left (bounded: a stuck timer chain fails the test)."""
        end = self.t + int(limit_ms * MS)
        out = self.run_until(end)
        assert self.s.next_deadline_ns() is None or self.s.next_deadline_ns() > end, "timers never settle"
        return out

    def send(self, ev: dict[str, Any] | str | bytes) -> list[dict[str, Any]]:
        """A client message at the current time (timers due first)."""
        self.run_until(self.t)
        raw = ev if isinstance(ev, (str, bytes)) else orjson.dumps(ev).decode()
        return self._take(self.t, self.s.receive(self.t, raw))

    def append(self, audio: bytes, *, chunk_ms: int = CHUNK_MS, bytes_per_ms: int = 8,
               steps_ns: Iterable[int] | None = None,
               until: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        """Append ``audio`` in ``chunk_ms`` pieces; the clock moves ``chunk_ms`` (or the next of
        ``steps_ns``) after each, firing timers at their deadlines in between.
        ``until``: stop right after the append whose answer (or a timer) matches."""
        out: list[dict[str, Any]] = []
        step = chunk_ms * bytes_per_ms
        steps = iter(steps_ns) if steps_ns is not None else None
        for i in range(0, len(audio), step):
            got = self.send({"type": "input_audio_buffer.append",
                             "audio": base64.b64encode(audio[i : i + step]).decode("ascii")})
            out += got
            dt = next(steps) if steps is not None else chunk_ms * MS
            got = self.run_until(self.t + dt)
            out += got
            if until is not None and any(until(e) for e in out):
                break
        return out

    def silence(self, ms: int, **kw: Any) -> list[dict[str, Any]]:
        return self.append(bytes([SILENCE_BYTE]) * (ms * 8), **kw)

    # ------------------------------------------------------------ queries

    def types(self, events: list[dict[str, Any]] | None = None) -> list[str]:
        return [e["type"] for e in (self.events if events is None else events)]

    def of(self, etype: str, events: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        return [e for e in (self.events if events is None else events) if e["type"] == etype]

    def one(self, etype: str, events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        found = self.of(etype, events)
        assert len(found) == 1, (etype, self.types(events))
        return found[0]

    def time_of(self, ev: dict[str, Any]) -> int:
        return self.times[next(i for i, e in enumerate(self.events) if e is ev)]

    def errors(self, events: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        return [e["error"] for e in self.of("error", events)]


@pytest.fixture(scope="session")
def recognizer() -> Recognizer:
    return Recognizer()


@pytest.fixture
def drive(recognizer: Recognizer):
    """Factory: ``drive(behaviour=..., dialect=..., beta_header=..., open=True)`` → an opened Driver.

    At teardown every session made here must have sent only SDK-valid events.
    """
    made: list[MockSession] = []

    def make(behaviour: Behaviour | None = None, *, open: bool = True, recognize: bool = True,
             **kw: Any) -> Driver:
        kw.setdefault("behaviour", behaviour or Behaviour(seed=1))
        s = MockSession(recognizer=recognizer if recognize else None, **kw)
        made.append(s)
        d = Driver(s)
        if open:
            d.open()
        return d

    yield make
    for s in made:
        assert s.invalid_sent == [], s.invalid_sent
