"""The callers' ticks on the shared timer service (callsim.simulator.net.timers.TimerService).

Every call's 20 ms ticks run from the one task of the timer service its runner
opened; each call's own task stays parked unless a write must finish
asynchronously or something broke. These tests use
trio's ``MockClock(autojump_threshold=0)`` (pytest-trio's ``autojump_clock``)
with :class:`TrioClock`, so deadlines are exact and only order is tested; the
real-time behaviour (``MonotonicClock``) is covered by tests/test_caller_wire.py
and tests/bridge/test_e2e.py, which place real calls.
"""

from __future__ import annotations

import random

import pytest
import trio
import trio.lowlevel
from callsim.simulator.audio.utterances import UtteranceBank
from callsim.simulator.caller import twilio_wire as tw
from callsim.simulator.caller.core import FRAME_NS, CallerConfig, CallerCore
from callsim.simulator.caller.script import Pause
from callsim.simulator.caller.sids import make_sid
from callsim.simulator.caller.trio_driver import _run
from callsim.simulator.measure.timeline import ClosedByApp
from callsim.simulator.net.clocks import TrioClock
from callsim.simulator.net.drive import CallServices, drive, open_call_services
from callsim.simulator.net.wsconn import ConnectionClosed

BANK = UtteranceBank()


def make_core(seed: int, pause_ms: int) -> CallerCore:
    rng = random.Random(seed)
    ident = tw.StreamIdentity(make_sid("AC", rng), make_sid("CA", rng), make_sid("MZ", rng))
    return CallerCore(CallerConfig(ident), [Pause(pause_ms)], BANK)


class FakeWS:
    """What the driver needs of a WebSocket, recording every send with the time.

    ``takes_whole`` decides, per synchronous send, whether the socket took the
    bytes at once; when it did not, the bytes wait in ``queued`` until
    :meth:`flush`, which waits for ``drained`` (the socket becoming writable).
    ``broken_at`` makes the synchronous send of that many-th batch fail like a
    reset socket.
    """

    def __init__(self, name: str, log: list[tuple[str, int, str]], clock: TrioClock) -> None:
        self.name = name
        self.log = log  # (call, time the bytes reached the socket, message)
        self.clock = clock
        self.queued: list[str] = []
        self.takes_whole = lambda n: True
        self.broken_at: int | None = None
        self.batches = 0
        self.drained = trio.Event()
        self.flushes = 0
        self.closed = trio.Event()

    def _out(self, msgs: list[str]) -> None:
        self.log.extend((self.name, self.clock.now_ns(), m) for m in msgs)

    def send_texts_nowait(self, msgs: list[str]) -> bool:
        self.batches += 1
        if self.broken_at is not None and self.batches >= self.broken_at:
            raise ConnectionClosed(1006, None)
        if self.queued or not self.takes_whole(self.batches):
            self.queued += msgs
            return False
        self._out(msgs)
        return True

    async def send_texts(self, msgs: list[str]) -> None:
        if self.queued:  # bytes keep their order: behind what is waiting
            self.queued += msgs
            await self.flush()
        else:
            self._out(msgs)

    async def flush(self) -> None:
        self.flushes += 1
        await self.drained.wait()
        queued, self.queued = self.queued, []
        self._out(queued)

    async def receive_via(self, reactor: object, handle: object) -> bool:
        return False  # no socket to park in the reactor: the receiver receives as before

    async def receive_message(self) -> str:
        await self.closed.wait()
        raise ConnectionClosed(1000, None)


async def run_ticks(ws: FakeWS, core: CallerCore, clock: TrioClock, services: CallServices) -> None:
    """A begun call on the shared loop (its receiver waits on the fake socket until the ticks end)."""
    await drive(core, ws, clock, services)


def media_times(log: list[tuple[str, int, str]], name: str) -> list[int]:
    return [t for who, t, m in log if who == name and '"event":"media"' in m]


async def test_calls_with_different_deadlines_are_each_ticked_at_their_own_deadline(autojump_clock):
    clock = TrioClock()
    log: list[tuple[str, int, str]] = []
    cores = {}
    async with open_call_services(clock, reactor=False) as services, trio.open_nursery() as nursery:
        for name, offset_ms in (("a", 0), ("b", 7), ("c", 3), ("d", 7)):
            await trio.sleep_until(1 + offset_ms / 1000)
            core = cores[name] = make_core(ord(name), 200)
            core.begin(clock.now_ns())
            nursery.start_soon(run_ticks, FakeWS(name, log, clock), core, clock, services)
    for name, core in cores.items():
        sent = media_times(log, name)
        assert len(sent) == 10, name
        assert sent == [core.t0_ns + k * FRAME_NS for k in range(10)], f"{name}: not sent at its deadlines"
    # one timer service for all, in deadline order across calls
    assert [t for _, t, _ in log] == sorted(t for _, t, _ in log)
    scheduler = services.timers
    assert scheduler.fired == 4 * 11  # 10 frames + the stop, per call
    assert scheduler.wakeups <= 3 * 11 + 1  # b and d share deadlines: one wake-up for both
    assert scheduler.scheduled == 0


async def test_a_cancelled_call_deregisters_and_nothing_is_left_scheduled(autojump_clock):
    clock = TrioClock()
    log: list[tuple[str, int, str]] = []
    cancelled_at = None
    async with open_call_services(clock, reactor=False) as services, trio.open_nursery() as nursery:
        scheduler = services.timers
        for name in "abc":
            core = make_core(ord(name), 1000)
            core.begin(clock.now_ns())
            if name == "b":
                scope = trio.CancelScope()

                async def cancellable(ws: FakeWS, core: CallerCore = core, scope: trio.CancelScope = scope) -> None:
                    with scope:
                        await run_ticks(ws, core, clock, services)

                nursery.start_soon(cancellable, FakeWS(name, log, clock))
            else:
                nursery.start_soon(run_ticks, FakeWS(name, log, clock), core, clock, services)
        await trio.sleep(0.105)
        assert scheduler.scheduled == 3
        scope.cancel()
        cancelled_at = clock.now_ns()
        await trio.lowlevel.checkpoint()  # let the cancellation be delivered
        assert scheduler.scheduled == 2
    assert scheduler.scheduled == 0
    assert max(media_times(log, "b")) < cancelled_at  # nothing of b ran after it was cancelled
    assert len(media_times(log, "a")) == len(media_times(log, "c")) == 50


async def test_a_send_that_would_block_goes_back_to_the_call_task_in_order(autojump_clock):
    clock = TrioClock()
    log: list[tuple[str, int, str]] = []
    core = make_core(1, 200)
    core.begin(clock.now_ns())
    ws = FakeWS("a", log, clock)
    ws.takes_whole = lambda n: n != 3  # the third tick's frame does not fit
    async with open_call_services(clock, reactor=False) as services, trio.open_nursery() as nursery:
        nursery.start_soon(run_ticks, ws, core, clock, services)
        await trio.sleep_until(core.t0_ns / 1e9 + 0.050)  # ticks 0-2 ran; 2 is stuck
        assert ws.queued and ws.flushes == 1
        nursery.start_soon(ws.send_texts, ["from the receiver"])  # must go after the stuck frame
        await trio.sleep(0.030)  # the call's task waits in flush(): no more ticks meanwhile
        assert len(media_times(log, "a")) == 2
        ws.drained.set()
    sequence = [int(m.split('"sequenceNumber":"')[1].split('"')[0]) for _, _, m in log if '"media"' in m]
    assert sequence == sorted(sequence) and len(sequence) == 10  # every frame, none reordered
    messages = [m for _, _, m in log]
    stuck = next(i for i, m in enumerate(messages) if '"chunk":"3"' in m)
    assert messages[stuck + 1] == "from the receiver"
    # the overdue ticks were caught up at once, then the grid resumed
    sent = media_times(log, "a")
    assert sent[2] == sent[3] == sent[4] and sent[5:] == [core.t0_ns + k * FRAME_NS for k in range(5, 10)]


async def test_a_broken_socket_ends_only_its_own_call(autojump_clock):
    clock = TrioClock()
    log: list[tuple[str, int, str]] = []
    cores = {name: make_core(ord(name), 300) for name in "ab"}
    sockets = {name: FakeWS(name, log, clock) for name in "ab"}
    sockets["a"].broken_at = 6  # batch 1 is connected + start, then one batch per frame
    results = {}

    async def call(name: str, services: CallServices) -> None:
        timings: dict[str, int] = {}
        await _run(sockets[name], cores[name], clock, timings, services)
        results[name] = clock.now_ns()

    async with open_call_services(clock, reactor=False) as services, trio.open_nursery() as nursery:
        for name in "ab":
            nursery.start_soon(call, name, services)
    a, b = cores["a"], cores["b"]
    assert a.finished and a.end_reason == "closed_by_app"
    assert [e.code for e in a.timeline.of(ClosedByApp)] == [1006]
    assert len(media_times(log, "a")) == 4  # frames 0-3 went out; the 5th frame's send broke
    assert b.end_reason == "hangup" and len(media_times(log, "b")) == 15
    assert results["a"] < results["b"]
    assert services.timers.scheduled == 0


async def test_a_bug_in_one_core_is_raised_in_that_call_only(autojump_clock):
    clock = TrioClock()
    log: list[tuple[str, int, str]] = []
    bad, good = make_core(1, 200), make_core(2, 200)
    for core in (bad, good):
        core.begin(clock.now_ns())

    def broken_advance(now_ns: int) -> list[str]:
        raise ZeroDivisionError("a bug in the core")

    bad.advance = broken_advance  # type: ignore[method-assign]
    raised = []

    async def guarded(services: CallServices) -> None:
        with pytest.raises(ExceptionGroup) as info:  # out of the call's nursery
            await run_ticks(FakeWS("bad", log, clock), bad, clock, services)
        assert info.group_contains(ZeroDivisionError)
        raised.append(clock.now_ns())

    async with open_call_services(clock, reactor=False) as services, trio.open_nursery() as nursery:
        nursery.start_soon(guarded, services)
        nursery.start_soon(run_ticks, FakeWS("good", log, clock), good, clock, services)
    assert raised == [bad.t0_ns]
    assert len(media_times(log, "good")) == 10 and good.finished


async def test_the_services_live_in_the_nursery_that_opens_them(autojump_clock):
    """Not system tasks: the timer service and the reactor are children of the block that
    opened them, and gone when it ends (a test's MockClock drives them, a cancel reaches them)."""

    def tasks() -> list[trio.lowlevel.Task]:
        found, todo = [], [trio.lowlevel.current_root_task()]
        while todo:
            task = todo.pop()
            found.append(task)
            todo += [t for n in task.child_nurseries for t in n.child_tasks]
        return found

    def names() -> set[str]:
        return {t.name for t in tasks()}

    me = trio.lowlevel.current_task()
    async with open_call_services(TrioClock()) as services:
        assert {"callsim timers", "callsim reactor"} <= names()
        mine = [t for n in me.child_nurseries for t in n.child_tasks]
        assert {t.name for t in mine} == {"callsim timers", "callsim reactor"}
        assert services.reactor is not None
    assert not {"callsim timers", "callsim reactor"} & names()


def test_trio_clock_reads_back_the_deadline_it_slept_to():
    """int() of a float can land 1 ns short of the deadline: the tick would not be
    due yet and the scheduler would spin on a deadline already reached."""
    clock = TrioClock()
    deadlines = [base + k * FRAME_NS + j for base in (0, 7_000_123) for k in range(300) for j in (0, 1, 7, 333)]

    async def check() -> None:
        for d in sorted(deadlines):
            await trio.sleep_until(clock.trio_time(d))
            assert clock.now_ns() == d

    trio.run(check, clock=trio.testing.MockClock(autojump_threshold=0))
