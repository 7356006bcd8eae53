"""The dial's REST lifecycle without I/O: whatever happens after the call exists, exactly one
hang-up before the plan finishes, and the exit status says how it went."""

from __future__ import annotations

from callsim.simulator.dial.plan import (
    AwaitStream,
    Create,
    DialPlan,
    Finish,
    HangUp,
    RunCall,
    Say,
)
from callsim.simulator.dial.request import DialRequest

SID = "CA" + "ab" * 16


def plan(**kw) -> DialPlan:
    return DialPlan(DialRequest.checked(to="+15551234567", from_="+15550001111", scenario="barge_in",
                                        public_url="wss://h.example/s", max_duration_s=60, stream_timeout_s=5,
                                        token="tok", **kw))


def kinds(actions) -> list[type]:
    return [type(a) for a in actions if not isinstance(a, Say)]


def test_the_whole_call_ends_with_one_hang_up_and_status_0():
    p = plan()
    start = p.start()
    assert kinds(start) == [Create]
    assert start[-1].params["to"] == "+15551234567"
    assert kinds(p.created(SID, "queued")) == [AwaitStream] and p.must_hang_up
    assert kinds(p.stream_arrived()) == [RunCall]
    assert p.call_ended(True) == [HangUp(SID)] and not p.must_hang_up
    (done,) = p.hung_up("completed")
    assert done == Finish(0, f"call {SID} hung up (completed): the scenario ran")
    assert p.interrupted() == [] and p.max_duration_reached() == []  # nothing after the end asks again


def test_no_stream_in_time_hangs_up_and_fails():
    p = plan()
    p.start(), p.created(SID, "queued")
    actions = p.stream_timed_out()
    assert kinds(actions) == [HangUp] and "no media stream arrived within 5 s" in actions[0].line
    assert p.stream_arrived() == []  # a stream arriving late changes nothing
    (done,) = p.hung_up("canceled")
    assert done.exit_code == 1 and SID in done.summary and "(canceled)" in done.summary


def test_a_refused_create_finishes_without_a_hang_up():
    p = plan()
    p.start()
    assert p.create_failed("Twilio answered HTTP 401") == [Finish(1, "no call placed: Twilio answered HTTP 401")]
    assert not p.must_hang_up


def test_ctrl_c_before_the_call_exists_and_after():
    before = plan()
    before.start()
    assert before.interrupted() == [Finish(130, "interrupted before a call was placed")]
    during = plan()
    during.start(), during.created(SID, "queued")
    assert during.interrupted() == [HangUp(SID)]
    (done,) = during.hung_up("canceled")
    assert done.exit_code == 130 and "interrupted" in done.summary


def test_ctrl_c_during_a_timeout_hang_up_still_exits_130():
    p = plan()
    p.start(), p.created(SID, "queued"), p.stream_timed_out()
    assert p.interrupted() == []  # the hang-up is already under way
    assert p.hung_up("canceled")[0].exit_code == 130


def test_max_duration_hangs_up_a_running_call():
    p = plan()
    p.start(), p.created(SID, "in-progress"), p.stream_arrived()
    assert kinds(p.max_duration_reached()) == [HangUp]
    assert p.hung_up("completed")[0].exit_code == 1


def test_a_refused_hang_up_of_an_ended_call_is_fine_but_of_a_live_one_is_not():
    ended = plan()
    ended.start(), ended.created(SID, "queued"), ended.stream_arrived(), ended.call_ended(True)
    assert ended.hang_up_failed("error 21220", "completed")[0].exit_code == 0
    live = plan()
    live.start(), live.created(SID, "queued"), live.stream_arrived(), live.call_ended(True)
    (done,) = live.hang_up_failed("no answer within 31 s")
    assert done.exit_code == 1 and "could NOT be hung up" in done.summary and "60 s" in done.summary


def test_an_error_in_the_driver_hangs_up_a_live_call():
    p = plan()
    p.start(), p.created(SID, "queued")
    assert kinds(p.failed("RuntimeError: boom")) == [HangUp]
    assert p.hung_up("canceled")[0].exit_code == 1
