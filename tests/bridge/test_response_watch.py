"""A model that stops answering: the sans-IO watch in ``CallCore`` on a synthetic clock.

Every case of ``callsim.bridge.response_watch``: a committed turn with no reply (*silent*), a reply
that stops mid-way with the socket open (*stalled*), ``status: failed`` (retried once per
caller turn, then the apology), and the things that must NOT trigger it: a slow model
just under the bound, a barge-in cancel, a tool call running, a reply that ends
``incomplete`` or without audio. Twilio's playback is the model in ``callcore_kit``, so
"dead air" here is what that model says the caller heard.
"""

from __future__ import annotations

import logging

import pytest
from callsim.bridge.call import CallCore, Notice, ToOpenAI
from callsim.bridge.realtime import SessionParams
from callsim.bridge.response_watch import ResponseWatch, Verdict, WatchLimits
from callsim.bridge.settings import Settings

from tests.bridge.callcore_kit import (
    APOLOGY,
    CALL_SID,
    MS,
    Sim,
    apology_msgs,
    audio_delta,
    b64,
    kinds,
    oa,
    oa_out,
    response_created,
    response_done,
    run_until,
    schedule,
    speech_started,
    started_core,
    tool_events,
    tw_out,
    ulaw,
)

S = 1000 * MS
FA = 2200 * MS  # the default first-audio bound
ST = 2000 * MS  # the default stall bound
APOLOGY_KINDS = ["tw:media", "tw:mark", "Hangup", "CloseOpenAI", "Notice"]  # the Notice: the live feed


def committed(item: str = "item_u1") -> str:
    return oa("input_audio_buffer.committed", previous_item_id=None, item_id=item)


def failed(resp: str, code: str = "server_error") -> str:
    return oa("response.done", response={
        "id": resp, "object": "realtime.response", "status": "failed", "output": [],
        "status_details": {"type": "failed", "error": {"type": "server_error", "code": code}}})


def incomplete(resp: str) -> str:
    return oa("response.done", response={"id": resp, "object": "realtime.response", "status": "incomplete",
                                         "status_details": {"type": "incomplete", "reason": "content_filter"},
                                         "output": []})


def transcript_delta(item: str, resp: str, text: str) -> str:
    return oa("response.output_audio_transcript.delta", response_id=resp, item_id=item, output_index=0,
              content_index=0, delta=text)


def logged(caplog: pytest.LogCaptureFixture, level: int, *words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == level and r.name == "callsim.bridge.call" and all(w in r.getMessage() for w in words)]


@pytest.fixture(autouse=True)
def _log_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="callsim.bridge.call")


def stream(sim: Sim, t0: int, resp: str, item: str, n: int, *, spacing: int = 15 * MS, done: bool = True) -> int:
    """``n`` deltas of 100 ms of audio, faster than real time; returns the last event's time."""
    sim.openai(t0, response_created(resp))
    t = t0
    for i in range(n):
        t = t0 + 1 * MS + i * spacing
        sim.openai(t, audio_delta(item, resp, b64(ulaw(800, i))), item)
    if done:
        t += 1 * MS
        sim.openai(t, response_done(resp))
    return t


# ============================================================== silent: a reply due, no audio


def test_a_committed_turn_with_no_reply_ends_with_the_apology_at_the_bound(caplog) -> None:
    sim = Sim(apology=APOLOGY)
    core = sim.core
    assert core.response_deadline_ns() is None  # nothing due before the caller's turn
    sim.openai(1 * S, committed())
    assert core.response_deadline_ns() == 1 * S + FA
    sim.openai(1 * S + 20 * MS, response_created("resp_1"))  # created is not an answer: the bound stays
    assert core.response_deadline_ns() == 1 * S + FA
    assert core.tick(1 * S + FA - 1) == []
    acts = core.tick(1 * S + FA)
    assert kinds(acts) == APOLOGY_KINDS
    assert tw_out(acts) == apology_msgs(clear=False)
    assert acts[2].after_mark == "apology"
    (line,) = logged(caplog, logging.ERROR, CALL_SID, "silent", "apologising")
    assert "2.2 s" in line and "resp_1" in line
    assert core.stats["response_stalls"] == 1
    # it ended: nothing watched, nothing done twice
    assert core.response_deadline_ns() is None and core.tick(60 * S) == []


def test_no_response_created_at_all_is_silent_too(caplog) -> None:
    sim = Sim(apology=APOLOGY)
    sim.openai(1 * S, committed())
    assert kinds(sim.core.tick(1 * S + FA)) == APOLOGY_KINDS
    assert logged(caplog, logging.ERROR, CALL_SID, "never created")


@pytest.mark.parametrize("first_audio_ms", [300, 1500, 2000, 2199])
def test_a_slow_model_under_the_bound_is_never_cut_off(first_audio_ms: int) -> None:
    sim = Sim(apology=APOLOGY)
    core = sim.core
    sim.openai(1 * S, committed())
    sim.openai(1 * S + 20 * MS, response_created("resp_1"))
    for t in range(1 * S, 1 * S + first_audio_ms * MS, 100 * MS):
        assert core.tick(t) == []
    t0 = 1 * S + first_audio_ms * MS
    sim.openai(t0, audio_delta("item_A", "resp_1", b64(ulaw(800))), "item_A")
    assert core.response_deadline_ns() >= t0 + ST  # now a stall bound, from the last event
    for i in range(1, 20):
        sim.openai(t0 + i * 15 * MS, audio_delta("item_A", "resp_1", b64(ulaw(800, i))), "item_A")
    sim.openai(t0 + 300 * MS, response_done("resp_1"))
    assert core.response_deadline_ns() is None
    assert core.tick(t0 + 60 * S) == [] and not core.ending


def test_a_greeting_is_owed_from_the_response_create() -> None:
    sim = Sim(apology=APOLOGY, greeting="Greet the caller.")
    assert sim.core.response_deadline_ns() == 3 * MS + FA  # session.updated at 3 ms asked for it


def test_nothing_is_watched_before_the_session_is_ready() -> None:
    core = CallCore(SessionParams(), apology_ulaw=APOLOGY)
    assert core.response_deadline_ns() is None and core.tick(60 * S) == []


def test_the_bounds_are_settings() -> None:
    s = Settings(response_first_audio_timeout_s=1.0, response_stall_timeout_s=0.5)
    core, _ = started_core(watch_limits=WatchLimits(s.response_first_audio_timeout_s, s.response_stall_timeout_s))
    core.openai_message(1 * S, committed())
    assert core.response_deadline_ns() == 2 * S
    d = Settings()
    assert (d.response_first_audio_timeout_s, d.response_stall_timeout_s) == (2.2, 2.0)


# ============================================================== stalled: a reply stops mid-way


def test_a_stall_after_little_audio_apologises_within_the_stall_bound_of_silence(caplog) -> None:
    sim = Sim(apology=APOLOGY)
    core = sim.core
    sim.openai(50 * MS, committed())
    last = stream(sim, 100 * MS, "resp_1", "item_A", 10, done=False)  # 1 s of audio in 150 ms, then nothing
    assert core.response_deadline_ns() == last + ST
    sim.advance(last + ST - 1)
    assert core.tick(last + ST - 1) == []
    sim.advance(last + ST)
    acts = core.tick(last + ST)
    sim._handle(last + ST, acts, None)
    assert kinds(acts) == APOLOGY_KINDS  # the reply had played out: nothing to clear
    run_end = sim.pb.runs[0].end()
    apology_start = sim.pb.runs[-1].start
    assert 0 < apology_start - run_end <= ST  # the dead air the caller heard
    (line,) = logged(caplog, logging.ERROR, CALL_SID, "stalled", "resp_1", "apologising")
    assert "2.0 s" in line


def test_a_stall_with_seconds_of_audio_queued_waits_for_it_to_play_then_apologises() -> None:
    sim = Sim(apology=APOLOGY)
    core = sim.core
    sim.openai(50 * MS, committed())
    last = stream(sim, 100 * MS, "resp_1", "item_A", 50, done=False)  # 5 s of audio in 0.75 s
    playback_end = 101 * MS + 5 * S
    assert core.response_deadline_ns() == playback_end
    sim.advance(last + ST)
    assert core.tick(last + ST) == []  # the caller still hears the model: not dead air yet
    sim.advance(playback_end)
    acts = core.tick(playback_end)
    sim._handle(playback_end, acts, None)
    assert kinds(acts) == APOLOGY_KINDS  # no clear: nothing the model said is cut
    assert sim.pb.clears == []
    assert sim.pb.runs[-1].start - sim.pb.runs[0].end() <= 5 * MS  # the apology follows at once


def test_events_without_audio_are_progress() -> None:
    sim = Sim(apology=APOLOGY)
    core = sim.core
    sim.openai(50 * MS, committed())
    t = stream(sim, 100 * MS, "resp_1", "item_A", 3, done=False)
    for i in range(8):  # a slow stretch: one transcript delta every 1.5 s, for 12 s
        t += 1500 * MS
        assert core.tick(t) == []
        sim.openai(t, transcript_delta("item_A", "resp_1", f"w{i} "))
    assert core.response_deadline_ns() == t + ST
    assert kinds(core.tick(t + ST)) == APOLOGY_KINDS


def test_a_response_created_with_nothing_after_it_is_stalled_even_when_nothing_was_owed() -> None:
    sim = Sim(apology=APOLOGY)
    sim.openai(1 * S, response_created("resp_1"))  # e.g. a response the server started on its own
    assert sim.core.response_deadline_ns() == 1 * S + FA
    assert kinds(sim.core.tick(1 * S + FA)) == APOLOGY_KINDS


# ============================================================== failed: retried once per turn


def test_a_failed_response_is_asked_for_once_more_within_the_same_bound(caplog) -> None:
    sim = Sim(apology=APOLOGY)
    core = sim.core
    sim.openai(1 * S, committed())
    sim.openai(1 * S + 20 * MS, response_created("resp_1"))
    acts = sim.openai(1 * S + 300 * MS, failed("resp_1"))
    assert acts == [ToOpenAI('{"type":"response.create"}'),
                    Notice("openai_fault", {"reason": "response failed ('server_error'); asked once more"})]
    assert logged(caplog, logging.WARNING, CALL_SID, "resp_1", "failed", "'server_error'", "once more")
    assert core.stats["response_retries"] == 1
    assert core.response_deadline_ns() == 1 * S + FA  # the caller's silence began at the commit
    last = stream(sim, 1 * S + 320 * MS, "resp_2", "item_B", 10)
    assert core.response_deadline_ns() is None
    assert core.tick(last + 60 * S) == [] and not core.ending


def test_a_second_failure_in_the_same_turn_apologises(caplog) -> None:
    sim = Sim(apology=APOLOGY)
    sim.openai(1 * S, committed())
    sim.openai(1 * S + 20 * MS, response_created("resp_1"))
    assert oa_out(sim.openai(1 * S + 300 * MS, failed("resp_1"))) == [{"type": "response.create"}]
    sim.openai(1 * S + 320 * MS, response_created("resp_2"))
    acts = sim.openai(1 * S + 600 * MS, failed("resp_2", "rate_limit_exceeded"))
    assert kinds(acts) == APOLOGY_KINDS and oa_out(acts) == []
    assert logged(caplog, logging.ERROR, CALL_SID, "resp_2", "failed again", "'rate_limit_exceeded'", "apologising")
    assert sim.core.response_deadline_ns() is None


def test_a_retry_that_stays_silent_is_bounded_from_the_commit() -> None:
    sim = Sim(apology=APOLOGY)
    sim.openai(1 * S, committed())
    sim.openai(1 * S + 20 * MS, response_created("resp_1"))
    sim.openai(2 * S, failed("resp_1"))  # a slow failure
    sim.openai(2 * S + 20 * MS, response_created("resp_2"))
    assert sim.core.tick(1 * S + FA - 1) == []
    assert kinds(sim.core.tick(1 * S + FA)) == APOLOGY_KINDS


def test_the_retry_is_once_per_caller_turn_not_once_per_call() -> None:
    sim = Sim(apology=APOLOGY)
    for turn in range(3):
        t = (1 + 10 * turn) * S
        sim.openai(t, committed(f"item_u{turn}"))
        sim.openai(t + 20 * MS, response_created(f"resp_{turn}a"))
        assert oa_out(sim.openai(t + 300 * MS, failed(f"resp_{turn}a"))) == [{"type": "response.create"}]
        stream(sim, t + 320 * MS, f"resp_{turn}b", f"item_{turn}", 5)
    assert sim.core.stats["response_retries"] == 3 and not sim.core.ending


def test_a_failure_after_partial_audio_is_retried_and_the_silence_counts_from_the_playback_end() -> None:
    sim = Sim(apology=APOLOGY)
    sim.openai(50 * MS, committed())
    last = stream(sim, 100 * MS, "resp_1", "item_A", 5, done=False)  # 500 ms of audio
    assert oa_out(sim.openai(last + 1 * MS, failed("resp_1"))) == [{"type": "response.create"}]
    assert sim.core.response_deadline_ns() == last + 1 * MS + FA


def test_incomplete_is_logged_not_retried(caplog) -> None:
    sim = Sim(apology=APOLOGY)
    sim.openai(1 * S, committed())
    sim.openai(1 * S + 20 * MS, response_created("resp_1"))
    assert sim.openai(1 * S + 300 * MS, incomplete("resp_1")) == []
    assert logged(caplog, logging.WARNING, CALL_SID, "resp_1", "incomplete", "'content_filter'")
    assert sim.core.response_deadline_ns() is None and sim.core.tick(60 * S) == []


def test_a_response_completed_without_audio_owes_nothing_more() -> None:
    sim = Sim(apology=APOLOGY)
    sim.openai(1 * S, committed())
    sim.openai(1 * S + 20 * MS, response_created("resp_1"))
    assert sim.openai(1 * S + 300 * MS, response_done("resp_1")) == []
    assert sim.core.response_deadline_ns() is None


def test_a_failed_response_the_caller_talked_over_is_not_retried() -> None:
    sim = Sim(apology=APOLOGY)
    sim.openai(50 * MS, committed())
    last = stream(sim, 100 * MS, "resp_1", "item_A", 10, done=False)
    sim.openai(last + 100 * MS, speech_started())
    assert sim.openai(last + 110 * MS, failed("resp_1")) == []
    assert sim.core.response_deadline_ns() is None


# ============================================================== what must not trigger it


@pytest.mark.parametrize("interrupt_response", [True, False])
def test_a_barge_in_cancel_does_not_trigger_it(interrupt_response: bool) -> None:
    sim = Sim(SessionParams(interrupt_response=interrupt_response), apology=APOLOGY)
    core = sim.core
    sim.openai(50 * MS, committed())
    run_until(sim, schedule(n_deltas=30)[:-2], 400 * MS)  # 3 s of reply queued, still generating
    acts = sim.openai(400 * MS, speech_started())
    assert "tw:clear" in kinds(acts)
    sim.openai(410 * MS, response_done("resp_1", "cancelled"))
    assert core.response_deadline_ns() is None  # the caller holds the floor: nothing is due
    assert core.tick(30 * S) == [] and not core.ending
    # their turn ends: a reply is due again
    sim.openai(5 * S, committed("item_u2"))
    assert core.response_deadline_ns() == 5 * S + FA


def test_the_caller_speaking_again_before_the_reply_forgives_it() -> None:
    sim = Sim(apology=APOLOGY)
    sim.openai(1 * S, committed())
    sim.openai(1 * S + 100 * MS, speech_started())
    assert sim.core.response_deadline_ns() is None


@pytest.mark.parametrize("tool_ms", [50, 4000, 30_000])
def test_a_tool_call_running_does_not_trigger_it(tool_ms: int) -> None:
    sim = Sim(SessionParams(tools=({"type": "function", "name": "get_weather"},)), apology=APOLOGY)
    core = sim.core
    sim.openai(1 * S, committed())
    sim.openai(1 * S + 20 * MS, response_created("resp_1"))
    for ev in tool_events("call_1", "fc_1", "get_weather", "{}", "resp_1"):
        sim.openai(1 * S + 300 * MS, ev)
    sim.openai(1 * S + 301 * MS, response_done("resp_1"))
    assert core.response_deadline_ns() is None
    t = 1 * S + 301 * MS + tool_ms * MS
    assert core.tick(t) == []
    acts = core.tool_result(t, "call_1", '{"temp_c": 21}')
    assert {"type": "response.create"} in oa_out(acts)
    assert core.response_deadline_ns() == t + FA  # the reply with the tool's answer is due from now
    stream(sim, t + 20 * MS, "resp_2", "item_B", 5)
    assert core.response_deadline_ns() is None and not core.ending


def test_a_response_failing_after_its_tool_call_is_not_asked_again_the_tool_output_asks() -> None:
    sim = Sim(SessionParams(tools=({"type": "function", "name": "get_weather"},)), apology=APOLOGY)
    core = sim.core
    sim.openai(1 * S, committed())
    sim.openai(1 * S + 20 * MS, response_created("resp_1"))
    for ev in tool_events("call_1", "fc_1", "get_weather", "{}", "resp_1"):
        sim.openai(1 * S + 300 * MS, ev)
    assert sim.openai(1 * S + 301 * MS, failed("resp_1")) == []  # a retry now would collide with the tool's
    assert core.response_deadline_ns() is None
    acts = core.tool_result(5 * S, "call_1", '{"temp_c": 21}')
    assert oa_out(acts).count({"type": "response.create"}) == 1
    assert core.response_deadline_ns() == 5 * S + FA


def test_a_caller_hanging_up_stops_the_watch() -> None:
    sim = Sim(apology=APOLOGY)
    sim.openai(1 * S, committed())
    sim.twilio(2 * S, sim.tw.stop())
    assert sim.core.response_deadline_ns() is None and sim.core.tick(60 * S) == []


# ============================================================== the watch on its own


def test_watch_expired_reports_what_passed_and_then_watches_nothing() -> None:
    w = ResponseWatch(WatchLimits(1.0, 0.5))
    w.committed(0)
    assert w.deadline_ns() == 1 * S
    w.created(10 * MS, "r1")
    w.event(200 * MS)
    w.audio(200 * MS, "r1", 8000)  # 1 s of audio: the reply is paid, Twilio plays until 1.2 s
    assert w.deadline_ns() == 1200 * MS  # last event + 0.5 s, but not before the queue has played
    w.event(900 * MS)
    assert w.deadline_ns() == 1400 * MS
    assert w.expired(1400 * MS - 1) is None
    exp = w.expired(1400 * MS)
    assert exp is not None and exp.verdict is Verdict.STALLED and exp.response_id == "r1"
    assert exp.waited_ns == 500 * MS
    assert w.deadline_ns() is None and w.expired(10 * S) is None


def test_watch_retry_then_failed_and_a_completed_reply_resets_it() -> None:
    w = ResponseWatch()
    w.committed(0)
    w.created(1, "r1")
    assert w.done(2, "r1", "failed") is Verdict.RETRY
    w.created(3, "r2")
    assert w.done(4, "r2", "failed") is Verdict.FAILED
    w2 = ResponseWatch()
    w2.committed(0)
    assert w2.done(1, "r1", "failed") is Verdict.RETRY
    assert w2.done(2, "r2", "completed") is None
    assert w2.done(3, "r3", "failed") is Verdict.RETRY
