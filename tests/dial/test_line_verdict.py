"""The line's own figures and the verdict a dialled call gets, driven without sockets: a
:class:`LineCore` fed Twilio's inbound ``media`` on a virtual 20 ms clock, then judged by
:func:`judge_line` as ``callsim dial`` judges it."""

from __future__ import annotations

import base64
import dataclasses

import orjson
from callsim.simulator.caller import twilio_wire as tw
from callsim.simulator.caller.call_result import CallResult
from callsim.simulator.caller.core import CallerConfig, CallerCore
from callsim.simulator.caller.script import Hangup, Pause
from callsim.simulator.dial.line import Continuity, LineCore, StreamStart
from callsim.simulator.dial.verdict import LINE_UNMEASURED, judge_line, outcome
from callsim.simulator.scenario import Expectations, find_scenario

CALL = "CA" + "cd" * 16
START = StreamStart(CALL, "MZ" + "ab" * 16, "AC" + "12" * 16, {}, "audio/x-mulaw")
QUIET = base64.b64encode(b"\xff" * 160).decode()  # μ-law silence: an idle line
#: a healthy line's media clock: steps around 20 ms, one chunk each
HEALTHY_STEPS = (20, 21, 19, 20)


def scenario(steps=(Pause(400), Hangup()), **expect):
    base = find_scenario("greeting_two_turns")
    return dataclasses.replace(base, steps=tuple(steps), requires=(), expect=Expectations(**expect))


def run_line(sc, ts_steps=HEALTHY_STEPS, skip_chunks=()):
    """Play ``sc`` on a line whose inbound frames step the media clock by ``ts_steps`` (cycled);
    the chunk numbers in ``skip_chunks`` never arrive. Returns (line, result)."""
    ident = tw.StreamIdentity(START.account_sid, START.call_sid, START.stream_sid, START.parameters)
    core = CallerCore(CallerConfig(ident, max_duration_ms=10_000, line_tag=False), list(sc.steps),
                      sc.utterance_bank())
    line = LineCore(core, START)
    now = 1_000_000_000
    line.begin(now)
    ts = 0
    for i in range(500):
        line.advance(now)
        if core.finished:
            break
        chunk = i + 1
        if chunk not in skip_chunks:
            line.receive(now, orjson.dumps({"event": "media", "streamSid": START.stream_sid, "media": {
                "track": "inbound", "chunk": str(chunk), "timestamp": str(ts), "payload": QUIET}}))
        ts += ts_steps[i % len(ts_steps)]
        now += 20_000_000
    assert core.finished
    return line, CallResult("wss://dial.example/stream", core=core, stream_url="wss://dial.example/stream")


def test_a_media_clock_stepping_around_20_ms_loses_no_audio():
    c = Continuity()
    ts = 0
    for i, step in enumerate(HEALTHY_STEPS * 5):
        c.note(i * 20_000_000, i + 1, ts)
        ts += step
    assert (c.frames, c.missing_chunks, c.gap_ms, c.gaps) == (20, 0, 0.0, [])
    assert c.timestamp_drift_ms == 0 and c.max_timestamp_step_ms == 21
    assert c.to_json()["timestamp_drift_ms"] == 0


def test_lost_audio_is_the_chunks_skipped_and_drift_is_kept_apart():
    c = Continuity()
    c.note(0, 1, 0)
    c.note(20_000_000, 2, 20)
    c.note(80_000_000, 5, 80)  # chunks 3 and 4 never came: 40 ms lost
    c.note(100_000_000, 6, 130)  # the clock jumped 50 ms for one chunk: drift, not loss
    assert (c.missing_chunks, c.gap_ms) == (2, 40.0)
    assert c.gaps == [{"t_ns": 80_000_000, "after_ms": 20, "ms": 40.0, "chunks": 2}]
    assert c.timestamp_drift_ms == 30 and c.max_timestamp_step_ms == 60
    j = c.to_json()
    assert (j["gap_ms"], j["missing_chunks"], j["timestamp_drift_ms"], j["max_timestamp_step_ms"]) == (40.0, 2, 30, 60)


def test_underruns_are_not_judged_on_a_line_and_a_healthy_line_passes():
    sc = scenario(no_underruns=True, underrun_max_ms=0)
    line, result = run_line(sc)
    assert line.continuity.frames >= 15 and line.continuity.gap_ms == 0
    run = judge_line(sc, result, line)
    by = {e.name: e for e in run.expectations}
    for name in ("no_underruns", "underrun_max_ms"):
        assert (by[name].status, by[name].message) == ("skipped", LINE_UNMEASURED[name])
        assert "Twilio fills the gap with silence" in by[name].message
    assert outcome(run)[0], outcome(run)
    (m,) = run.metrics
    assert m.underrun_ms == 0.0 and m.status != "failed"


def test_lost_chunks_show_as_the_lines_underrun_figure_without_failing_the_bridge():
    sc = scenario(no_underruns=True)
    line, result = run_line(sc, skip_chunks=(5, 6, 9))
    run = judge_line(sc, result, line)
    (m,) = run.metrics
    assert m.underrun_ms == 60.0 and line.continuity.missing_chunks == 3
    assert {e.name: e.status for e in run.expectations}["no_underruns"] == "skipped"


def test_twilio_warnings_are_not_judged_on_a_line():
    sc = scenario(no_twilio_warnings=True)
    line, result = run_line(sc)
    run = judge_line(sc, result, line)
    (e,) = run.expectations
    assert e.status == "skipped", e.to_json()
    assert (e.name, e.status, e.message) == ("no_twilio_warnings", "skipped", LINE_UNMEASURED["no_twilio_warnings"])
    assert "debugger/Monitor Alerts, not on the line" in e.message


def test_no_bridge_profile_is_built_or_written_for_a_line(tmp_path):
    """The caller core on a line carried callsim's own frames: a profile of it ("no marks",
    "clear 0/1 barge-ins") would describe callsim, whatever the agent's bridge did."""
    from callsim.simulator.dial.verdict import dial_summary, write_dial_report

    sc = scenario(end_reason="hangup")
    line, result = run_line(sc)
    run = judge_line(sc, result, line)
    assert run.profile is None
    paths = write_dial_report(tmp_path, run, dial_summary(line, [], None), "callsim dial")
    meta = orjson.loads(paths["json"].read_bytes())["meta"]
    assert "bridge_profile" not in meta and meta["dial"]["call_sid"] == CALL
    html = paths["html"].read_text()
    assert "bridge profile" not in html.lower() and "twilio:" not in html
    assert "calls/" in html or "<section class=\"call" in html  # the call's own section is still drawn


LOUD = base64.b64encode(b"\x00" * 160).decode()  # μ-law full scale: the agent's voice


def run_barge_in(voice_until=None):
    """The agent talks from the start until tick ``voice_until`` (None: throughout) while the
    caller barges in; returns (line, result, the tick our speech began)."""
    from callsim.simulator.caller.script import Say, WaitForAudio
    from callsim.simulator.measure.timeline import SpeechStart

    sc = scenario(steps=(WaitForAudio(after_ms=300, timeout_ms=5000), Say("caller_barge_in"), Pause(300), Hangup()),
                  barge_ins=1, barge_in_clear_max_ms=1500)
    ident = tw.StreamIdentity(START.account_sid, START.call_sid, START.stream_sid, START.parameters)
    core = CallerCore(CallerConfig(ident, max_duration_ms=10_000, line_tag=False), list(sc.steps),
                      sc.utterance_bank())
    line = LineCore(core, START)
    now = 1_000_000_000
    line.begin(now)
    speech_tick = None
    for i in range(500):
        line.advance(now)
        if core.finished:
            break
        if speech_tick is None and core.timeline.first(SpeechStart) is not None:
            speech_tick = i
        voice = voice_until is None or i < voice_until
        line.receive(now, orjson.dumps({"event": "media", "streamSid": START.stream_sid, "media": {
            "track": "inbound", "chunk": str(i + 1), "timestamp": str(i * 20), "payload": LOUD if voice else QUIET}}))
        now += 20_000_000
    assert core.finished and speech_tick is not None
    return sc, line, CallResult("wss://dial.example/stream", core=core, stream_url="wss://dial.example/stream"), speech_tick


def test_a_barge_in_just_as_the_agents_voice_stopped_is_a_reaction_of_0_ms():
    """Our speech began a frame after the agent's voice stopped (still a barge-in: it was playing
    a frame ago): no talk-over, nothing to react to, so the reaction is 0 ms, not "no clear"."""
    _, _, _, speech_tick = run_barge_in()
    sc, line, result, again = run_barge_in(voice_until=speech_tick - 1)
    assert again == speech_tick
    run = judge_line(sc, result, line)
    (b,) = run.metrics[0].barge_ins
    assert b.talk_over_ms == 0 and b.playback_stop_ns is None
    assert (b.clear_ns, b.clear_ms) == (b.onset_ns, 0.0)
    assert {e.name: e.status for e in run.expectations} == {"barge_ins": "passed", "barge_in_clear_max_ms": "passed"}


def test_the_reaction_ends_with_the_last_frame_of_the_agents_voice_heard_over_ours():
    sc, line, result, speech_tick = run_barge_in()
    _, line, result, _ = run_barge_in(voice_until=speech_tick + 3)
    run = judge_line(sc, result, line)
    (b,) = run.metrics[0].barge_ins
    assert b.talk_over_ms == 80.0 and b.clear_ms == 80.0
    assert b.clear_ns == b.playback_stop_ns == b.onset_ns + 80_000_000


def test_malformed_twilio_messages_are_counted_not_fatal():
    """A media or mark that is not an object, bad base64, a list for a message: counted as other
    traffic, and the line goes on (one bad message must not end a dial)."""
    ident = tw.StreamIdentity(START.account_sid, START.call_sid, START.stream_sid, START.parameters)
    core = CallerCore(CallerConfig(ident, max_duration_ms=10_000, line_tag=False), [Pause(400), Hangup()])
    line = LineCore(core, START)
    line.begin(1_000_000_000)
    for bad in ({"event": "media", "media": "x"}, {"event": "media", "media": None},
                {"event": "mark", "mark": ["m1"]}, {"event": "mark", "mark": 7}, [1, 2],
                {"event": "media", "media": {"payload": "not base64!", "chunk": "1", "timestamp": "0"}}):
        assert line.receive(1_000_000_000, orjson.dumps(bad)) == ()
    assert line.counts["other_in"] == 3 and line.counts["unknown_echoes"] == 2
    assert not core.finished
