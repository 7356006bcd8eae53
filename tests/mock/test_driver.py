"""The trio driver of a session (``callsim.simulator.mock.driver``) on trio's MockClock.

The driver's receiver task feeds client messages to the session and the timer
service fires the session's timer at its next deadline while the session's task
waits. What matters, and what these tests pin down:

* timing is exactly the sans-IO session's: a whole call (appends, a VAD turn,
  a reply streamed in paced deltas while appends go on) sends every event at
  the time, and in the order, that ``MockSession`` driven by the conftest
  ``Driver`` (timers fired at their deadlines) gives;
* a message that does not move the session's next deadline earlier does not
  touch the timer (the 50 appends a second of a call would otherwise cost an
  empty ``advance()`` each);
* a message that does move it earlier brings the timer forward once, and the
  new timer fires on time; a close or abort the session asks for still ends it
  promptly.

In-memory socket, MockClock(autojump_threshold=0): deterministic, no sleeping.
Client messages are scheduled off the session's timer grid, so no test depends
on how trio orders two tasks woken at the same instant.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from callsim.simulator.audio.codec import SILENCE_BYTE
from callsim.simulator.audio.utterances import default_bank
from callsim.simulator.core_io import Outputs
from callsim.simulator.mock.behaviour import Behaviour, Fault, ThinkTime
from callsim.simulator.mock.driver import run_session
from callsim.simulator.mock.recognizer import Recognizer
from callsim.simulator.mock.session import MockSession
from callsim.simulator.net.clocks import TrioClock
from callsim.simulator.net.drive import open_call_services
from callsim.simulator.net.timers import Timer
from callsim.simulator.net.wsconn import ConnectionClosed

from .conftest import Driver

MS = 1_000_000
FRAME = 160  # 20 ms of 8 kHz μ-law
# Timers land off the 20 ms append grid (see the module docstring).
OFF_GRID = Behaviour(think=ThinkTime("fixed", 50.5), created_delay_ms=20.3, seed=5)
PCMU_VAD = {"type": "session.update", "session": {
    "type": "realtime",
    "audio": {"input": {"format": {"type": "audio/pcmu"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}},
              "output": {"format": {"type": "audio/pcmu"}}},
}}


def now_ns() -> int:
    """The session clock for these tests: trio's (mock) clock in ns."""
    return round(trio.current_time() * 1e9)


def append(audio: bytes) -> str:
    return orjson.dumps({"type": "input_audio_buffer.append",
                         "audio": base64.b64encode(audio).decode("ascii")}).decode()


class FakeSocket:
    """The driver's WebSocket, in memory: the test sends into a channel; whatever the
    driver sends is recorded with the clock at that moment."""

    def __init__(self) -> None:
        self.client, self._incoming = trio.open_memory_channel(math.inf)
        self.sent: list[tuple[int, dict[str, Any]]] = []
        self.closed_with: tuple[int, str] | None = None

    async def receive_message(self) -> str:
        try:
            return await self._incoming.receive()
        except trio.EndOfChannel:
            raise ConnectionClosed(1000, None) from None

    def send_texts_nowait(self, messages: list[bytes]) -> bool:
        t = now_ns()
        self.sent.extend((t, orjson.loads(m)) for m in messages)
        return True

    async def flush(self) -> None:
        pass

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        self.closed_with = (code, reason)

    def types(self) -> list[str]:
        return [ev["type"] for _, ev in self.sent]


class Counted:
    """Counts the session's ``advance`` calls (each is one wake-up of the timer task)
    and records every message the session received, with its time."""

    def __init__(self, session: MockSession) -> None:
        self.advances = 0
        self.received: list[tuple[int, str]] = []
        advance, receive = session.advance, session.receive

        def counting_advance(t: int) -> Outputs:
            self.advances += 1
            return advance(t)

        def recording_receive(t: int, raw: str | bytes) -> Outputs:
            self.received.append((t, raw))  # type: ignore[arg-type]
            return receive(t, raw)

        session.advance = counting_advance  # type: ignore[method-assign]
        session.receive = recording_receive  # type: ignore[method-assign]


def make_session(behaviour: Behaviour, recognizer: Recognizer | None = None) -> MockSession:
    return MockSession(behaviour=behaviour, recognizer=recognizer)


async def serve(session: MockSession, sock: FakeSocket, nursery: trio.Nursery,
                aborted: list[int] | None = None) -> Timer:
    """Serve ``session`` in ``nursery``, with a timer service of its own and no reactor (the
    fake socket has no fd), both ending with the session; returns the session's timer."""
    async def abort() -> None:
        if aborted is not None:
            aborted.append(now_ns())

    async def run(*, task_status: trio.TaskStatus[Timer] = trio.TASK_STATUS_IGNORED) -> None:
        async with open_call_services(TrioClock(), reactor=False) as services:
            timer = Timer(services.timers)
            task_status.started(timer)
            await run_session(session, sock, services, clock=TrioClock(), abort=abort, timer=timer)

    return await nursery.start(run)


async def paced(sock: FakeSocket, frames: list[str], start_s: float) -> None:
    """Send ``frames`` at ``start_s`` + 20 ms × k, like a bridge forwarding media."""
    for k, msg in enumerate(frames):
        await trio.sleep_until(start_s + 0.020 * k)
        await sock.client.send(msg)


def reference(behaviour: Behaviour, received: list[tuple[int, str]], end_ns: int,
              recognizer: Recognizer | None = None) -> tuple[list[int], list[dict[str, Any]]]:
    """The same messages at the same times through the sans-IO session, timers fired at
    their exact deadlines (tests/mock/conftest.py ``Driver``)."""
    d = Driver(make_session(behaviour, recognizer), t0=0)
    d.open()
    for t, raw in received:
        d.run_until(t)
        d.t = t
        d.send(raw)
    d.run_until(end_ns)
    return d.times, d.events


def _without_wall_clock(ev: dict[str, Any]) -> dict[str, Any]:
    """The event minus ``session.expires_at``: wall-clock seconds when the session object
    was made, so two sessions made a moment apart may differ by a second."""
    if isinstance(ev.get("session"), dict):
        ev = {**ev, "session": {k: v for k, v in ev["session"].items() if k != "expires_at"}}
    return ev


def assert_same_timeline(sent: list[tuple[int, dict[str, Any]]], times: list[int],
                         events: list[dict[str, Any]]) -> None:
    """Same events (ids included: same seeded RNG draws), in the same order, each within
    1 µs of the reference time (trio's float clock vs integer ns)."""
    assert [_without_wall_clock(ev) for _, ev in sent] == [_without_wall_clock(ev) for ev in events]
    late = [(ev["type"], t - ref) for (t, ev), ref in zip(sent, times) if abs(t - ref) > 1000]
    assert late == []


# ---------------------------------------------------------------- timing


def test_a_whole_call_keeps_the_sans_io_timeline_and_appends_do_not_wake_the_timer(
        recognizer: Recognizer) -> None:
    """A caller turn, the VAD's commit, the reply's paced deltas while silence is still
    appended: every event at the reference time; the timer task wakes once per timer
    deadline, never per append."""
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main() -> None:
        session = make_session(OFF_GRID, recognizer)
        counted = Counted(session)
        sock = FakeSocket()
        speech = default_bank().get("caller_greeting").ulaw
        audio = bytes([SILENCE_BYTE]) * 4000 + speech + bytes([SILENCE_BYTE]) * 8 * 4000
        audio += bytes([SILENCE_BYTE]) * ((-len(audio)) % FRAME)
        frames = [orjson.dumps(PCMU_VAD).decode()] + [append(audio[i:i + FRAME])
                                                       for i in range(0, len(audio), FRAME)]
        async with trio.open_nursery() as nursery:
            timer = await serve(session, sock, nursery)
            await paced(sock, frames, start_s=0.0037)
            await trio.sleep(1.0)
            end = now_ns()
            nursery.cancel_scope.cancel()

        times, events = reference(OFF_GRID, counted.received, end, recognizer)
        assert_same_timeline(sock.sent, times, events)
        types = sock.types()
        assert "input_audio_buffer.speech_stopped" in types and "response.done" in types
        deltas = types.count("response.output_audio.delta")
        assert deltas > 10
        appends = len(frames) - 1
        # one timer deadline per delta, plus response.created and the first output:
        # the old wake-per-message driver advanced once per append (~ 350 here)
        assert counted.advances <= deltas + 5 < appends
        assert timer.brought_forward <= 2  # only the turn's commit scheduled a new earliest timer

    trio.run(main, clock=clock)


def test_silence_appends_with_no_timer_pending_never_wake_the_timer() -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main() -> None:
        session = make_session(OFF_GRID)
        counted = Counted(session)
        sock = FakeSocket()
        frames = [orjson.dumps(PCMU_VAD).decode()] + [append(bytes([SILENCE_BYTE]) * FRAME)] * 200
        async with trio.open_nursery() as nursery:
            timer = await serve(session, sock, nursery)
            await paced(sock, frames, start_s=0.0037)
            await trio.sleep(0.1)
            assert session.counts["appends"] == 200
            nursery.cancel_scope.cancel()
        assert counted.advances == 0
        assert timer.brought_forward == 0
        assert sock.types() == ["session.created", "session.updated"]

    trio.run(main, clock=clock)


def test_a_message_bringing_the_deadline_forward_wakes_the_timer_on_time() -> None:
    """The timer sleeps towards a far deadline (an ``expire`` fault at 5 s); a
    ``response.create`` at 1 s schedules ``response.created`` 20.3 ms later: that one
    wake-up, and it goes out at 1.0203 s; the reply's deltas follow on their own."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    behaviour = OFF_GRID.with_(faults=(Fault("expire", after_ms=5000),))

    async def main() -> None:
        session = make_session(behaviour)
        counted = Counted(session)
        sock = FakeSocket()
        async with trio.open_nursery() as nursery:
            timer = await serve(session, sock, nursery)
            await trio.sleep_until(1.0)
            assert timer.due_ns == 5000 * MS
            await sock.client.send('{"type": "response.create"}')
            await trio.sleep_until(6.0)
        times, events = reference(behaviour, counted.received, 6_000 * MS)
        assert_same_timeline(sock.sent, times, events)
        assert timer.brought_forward == 1
        created = next(t for t, ev in sock.sent if ev["type"] == "response.created")
        assert abs(created - 1_020_300_000) <= 1000
        assert sock.types()[-1] == "error" and sock.closed_with == (1001, "Your session hit the maximum duration of 60 minutes.")
        assert sock.sent[-1][1]["error"]["code"] == "session_expired"

    trio.run(main, clock=clock)


# ---------------------------------------------------------------- ending


def test_a_close_requested_by_a_message_ends_the_session_at_once() -> None:
    """A beta-shaped session.update on a GA server: error, close 4000, from the receiver."""
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main() -> None:
        session = make_session(OFF_GRID)
        sock = FakeSocket()
        with trio.fail_after(1):
            async with trio.open_nursery() as nursery:
                await serve(session, sock, nursery)
                await trio.sleep(0.25)
                await sock.client.send('{"type": "session.update", "session": {"input_audio_format": "g711_ulaw"}}')
        assert sock.types() == ["session.created", "error"]
        assert sock.closed_with == (4000, "beta_api_shape_disabled")
        assert session.closed and session.close_info["by"] == "server"
        assert session.close_info["t_ns"] == 250 * MS

    trio.run(main, clock=clock)


def test_a_drop_fault_aborts_from_the_timer_at_its_time() -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    behaviour = OFF_GRID.with_(faults=(Fault("drop", after_ms=100),))

    async def main() -> None:
        session = make_session(behaviour)
        sock = FakeSocket()
        aborted: list[int] = []
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                await serve(session, sock, nursery, aborted)
                await trio.sleep_until(1.0)
                await sock.client.send('{"type": "response.create"}')
        first_audio = 1_000 * MS + round(20.3 * MS) + round(50.5 * MS)
        assert aborted == [pytest.approx(first_audio + 100 * MS, abs=1000)]
        assert session.close_info["by"] == "abort" and sock.closed_with is None

    trio.run(main, clock=clock)


def test_the_client_going_away_ends_both_tasks() -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main() -> None:
        session = make_session(OFF_GRID.with_(faults=(Fault("expire", after_ms=60_000),)))
        sock = FakeSocket()
        with trio.fail_after(1):
            async with trio.open_nursery() as nursery:
                await serve(session, sock, nursery)
                await trio.sleep(0.3)
                await sock.client.aclose()
        assert session.closed and session.close_info["by"] == "client"
        assert session.close_info["code"] == 1000

    trio.run(main, clock=clock)
