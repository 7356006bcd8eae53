"""The timer service (callsim.simulator.net.timers): many connections' timers from one task.

On trio's ``MockClock(autojump_threshold=0)`` with :class:`TrioClock`: every
deadline is exact and every run the same. The callers' ticks on it are tested
in tests/test_tick_scheduler.py, the mock's timers in tests/mock/test_driver.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing
from callsim.simulator.net.clocks import TrioClock
from callsim.simulator.net.drive import open_call_services
from callsim.simulator.net.timers import Timer, TimerService

MS = 1_000_000


def run(main: Callable[[], object]) -> None:
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))  # type: ignore[arg-type]


def periodic(timer: Timer, fired: list[tuple[str, int, str]], name: str, every_ns: int, times: int) -> None:
    """``timer`` fires ``times`` times, ``every_ns`` apart, then hands its task back."""
    count = [0]

    def on_due(now_ns: int) -> None:
        fired.append((name, now_ns, trio.lowlevel.current_task().name))
        count[0] += 1
        if count[0] < times:
            timer.set(now_ns + every_ns)
        else:
            timer.hand_back(count[0])

    timer.on_due = on_due


def test_many_timers_fire_at_their_own_deadlines_from_one_task() -> None:
    async def main() -> None:
        fired: list[tuple[str, int, str]] = []
        got: dict[str, object] = {}
        async with open_call_services(TrioClock(), reactor=False) as services, trio.open_nursery() as nursery:
            for name, start_ms in (("a", 10), ("b", 13), ("c", 10), ("d", 17)):
                timer = Timer(services.timers)
                periodic(timer, fired, name, 20 * MS, 5)

                async def wait(timer: Timer = timer, name: str = name, start_ms: int = start_ms) -> None:
                    got[name] = await timer.wait(start_ms * MS)

                nursery.start_soon(wait)
        service = services.timers
        assert got == {"a": 5, "b": 5, "c": 5, "d": 5}
        for name, start_ms in (("a", 10), ("b", 13), ("c", 10), ("d", 17)):
            assert [t for n, t, _ in fired if n == name] == [(start_ms + 20 * k) * MS for k in range(5)]
        assert [t for _, t, _ in fired] == sorted(t for _, t, _ in fired)
        assert {task for _, _, task in fired} == {"callsim timers"}  # never the waiting tasks
        assert service.fired == 20
        assert service.wakeups <= 15 + 1  # a and c share their deadlines: one wake-up for both
        assert service.scheduled == 0

    run(main)


def test_a_cancelled_wait_takes_its_timer_out_and_the_others_go_on() -> None:
    async def main() -> None:
        fired: list[tuple[str, int, str]] = []
        async with open_call_services(TrioClock(), reactor=False) as services, trio.open_nursery() as nursery:
            timers = {name: Timer(services.timers) for name in "ab"}
            for name, timer in timers.items():
                periodic(timer, fired, name, 20 * MS, 10)
            scope = trio.CancelScope()

            async def cancellable() -> None:
                with scope:
                    await timers["a"].wait(20 * MS)

            nursery.start_soon(cancellable)
            nursery.start_soon(timers["b"].wait, 20 * MS)
            await trio.sleep(0.050)
            assert services.timers.scheduled == 2
            scope.cancel()
            await trio.lowlevel.checkpoint()
            assert services.timers.scheduled == 1 and not timers["a"].waiting and timers["a"].due_ns is None
        assert [t for n, t, _ in fired if n == "a"] == [20 * MS, 40 * MS]
        assert len([n for n, _, _ in fired if n == "b"]) == 10
        assert services.timers.scheduled == 0

    run(main)


def test_what_on_due_raises_is_raised_in_that_timer_s_task_only() -> None:
    async def main() -> None:
        fired: list[tuple[str, int, str]] = []
        async with open_call_services(TrioClock(), reactor=False) as services, trio.open_nursery() as nursery:
            bad, good = Timer(services.timers), Timer(services.timers)
            periodic(good, fired, "good", 20 * MS, 5)

            def boom(now_ns: int) -> None:
                raise ZeroDivisionError(now_ns)

            bad.on_due = boom
            raised: list[int] = []

            async def guarded() -> None:
                with pytest.raises(ZeroDivisionError):
                    await bad.wait(30 * MS)
                raised.append(round(trio.current_time() * 1e9))

            nursery.start_soon(guarded)
            nursery.start_soon(good.wait, 20 * MS)
        assert raised == [30 * MS]
        assert len(fired) == 5 and services.timers.scheduled == 0

    run(main)


@pytest.mark.parametrize("deadline_ns", [None, 2_000 * MS, 1_500 * MS])
def test_a_timer_is_brought_forward_only_to_an_earlier_deadline(deadline_ns: int | None) -> None:
    """What the mock's receiver does after each message: move the timer only when the
    session's next deadline is earlier than the one set (or none is)."""
    async def main() -> None:
        async with open_call_services(TrioClock(), reactor=False) as services:
            timer = Timer(services.timers, on_due=lambda now_ns: timer.hand_back(now_ns))
            assert not timer.bring_forward(1_000 * MS)  # no task waits: nothing to move
            woke: list[object] = []

            async def waiter() -> None:
                woke.append(await timer.wait(deadline_ns))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.sleep(0.5)
                assert timer.waiting and timer.due_ns == deadline_ns
                assert not timer.bring_forward(None)
                if deadline_ns is not None:
                    assert not timer.bring_forward(deadline_ns)  # not earlier: left alone
                    assert not timer.bring_forward(deadline_ns + 1)
                assert timer.bring_forward(1_000 * MS)
                assert not timer.bring_forward(1_000 * MS)
                assert timer.bring_forward(900 * MS)
            assert woke == [900 * MS]
            assert timer.brought_forward == 2 and not timer.waiting and timer.due_ns is None
            assert services.timers.scheduled == 0 and services.timers.fired == 1

    run(main)


def test_a_timer_with_nothing_due_waits_unscheduled_until_brought_forward() -> None:
    """A mock session with no timer pending: its task waits, costing the service nothing."""
    async def main() -> None:
        async with open_call_services(TrioClock(), reactor=False) as services, trio.open_nursery() as nursery:
            service: TimerService = services.timers
            fired: list[int] = []

            def on_due(now_ns: int) -> None:  # neither sets nor hands back: waits for a bring-forward
                fired.append(now_ns)
                if len(fired) == 2:
                    timer.hand_back(None)

            timer = Timer(service, on_due)
            nursery.start_soon(timer.wait, 100 * MS)
            await trio.sleep(1.0)
            assert fired == [100 * MS] and timer.waiting and service.scheduled == 0
            wakeups = service.wakeups
            await trio.sleep(1.0)
            assert service.wakeups == wakeups  # nothing set: the service sleeps
            assert timer.bring_forward(2_500 * MS)
        assert fired == [100 * MS, 2_500 * MS]

    run(main)
