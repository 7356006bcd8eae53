"""A mock session's named timers, and the response state machine that waits on them."""

from __future__ import annotations

import pytest
from callsim.simulator.mock.behaviour import Behaviour, Fault, ThinkTime
from callsim.simulator.mock.response import Phase
from callsim.simulator.mock.responses import NEXT, TIMER_NAMES
from callsim.simulator.mock.session_timers import Timer, Timers

from .session_helpers import configure, greet


def _noop(now_ns: int, out: list) -> None:
    pass


def test_timers_list_soonest_first_ties_in_arming_order() -> None:
    timers = Timers()
    a = timers.call_at(20, "a", _noop)
    b = timers.call_at(10, "b", _noop)
    timers.call_at(10, "c", _noop)
    assert [t.name for t in timers.pending()] == ["b", "c", "a"]
    assert a.armed and b.due_ns == 10


def test_a_cancelled_or_rearmed_timer_is_listed_once_or_not_at_all() -> None:
    timers = Timers()
    t = timers.call_at(10, "t", _noop)
    timers.arm(t, 30)  # the arming for 10 is void
    other = timers.call_at(20, "other", _noop)
    assert [(x.name, x.due_ns) for x in timers.pending()] == [("other", 20), ("t", 30)]
    timers.cancel(other)
    assert timers.pending() == [t] and not other.armed
    timers.clear()
    assert timers.pending() == [] and not t.armed and timers.heap == []


def test_the_states_that_wait_have_a_named_timer_and_done_goes_nowhere() -> None:
    assert set(TIMER_NAMES) == set(Phase) - {Phase.DONE}
    assert NEXT[Phase.DONE] == frozenset()
    assert all(Phase.DONE in NEXT[p] for p in Phase if p is not Phase.DONE)


def test_a_response_waits_on_one_named_timer_per_state(drive) -> None:
    d = drive(Behaviour(think=ThinkTime("fixed", 300), seed=5, faults=(Fault("expire", after_ms=60_000),)))
    configure(d)

    def waiting() -> list[str]:
        return [t.name for t in d.s.pending_timers()]

    assert waiting() == ["fault.expire", "session.max_duration"]
    greet(d)
    assert d.s.response.phase is Phase.CREATED and waiting() == ["response.created", "fault.expire", "session.max_duration"]
    d.advance_ms(20)  # created_delay
    assert d.s.response.phase is Phase.THINKING and waiting() == ["response.think", "fault.expire", "session.max_duration"]
    d.advance_ms(300)
    assert d.s.response.phase is Phase.STREAMING and waiting() == ["response.audio_delta", "fault.expire", "session.max_duration"]
    d.send({"type": "response.cancel"})
    assert d.s.response is None and waiting() == ["fault.expire", "session.max_duration"]
    assert isinstance(d.s.pending_timers()[0], Timer)


def test_a_response_cancelled_before_response_created_leaves_no_timer(drive) -> None:
    d = drive(Behaviour(think=ThinkTime("fixed", 300), seed=6))
    configure(d)
    greet(d)
    d.send({"type": "response.cancel"})
    assert [t.name for t in d.s.pending_timers()] == ["session.max_duration"]  # the response left none
    assert d.types(d.settle()) == []  # its stale deadline, if the driver wakes for it, fires nothing


def test_a_transition_outside_the_table_is_a_mock_bug(drive) -> None:
    d = drive(Behaviour(think=ThinkTime("fixed", 300), seed=7))
    configure(d)
    greet(d)
    r = d.s.response
    with pytest.raises(RuntimeError, match="no transition created -> streaming"):
        d.s._enter(r, Phase.STREAMING)
