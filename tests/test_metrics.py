"""Metrics from calls driven with synthetic times: every figure has an exact expected value.

No sockets: a test plays both the driver of :class:`CallerCore` (``advance`` at
each deadline, optionally late) and the app (media/mark/clear at chosen times,
possibly in reaction to what the caller did), and hands the result plus a
hand-made mock snapshot to :func:`measure_call`.
"""

from __future__ import annotations

import base64
import heapq
import json
import random
from collections.abc import Callable

import numpy as np
import pytest
from callsim.simulator.audio.codec import pcm16_to_ulaw, ulaw_to_pcm16
from callsim.simulator.audio.utterances import UtteranceBank
from callsim.simulator.caller import twilio_wire as tw
from callsim.simulator.caller.core import FRAME_NS, CallerConfig, CallerCore
from callsim.simulator.caller.script import (
    Dtmf,
    Hangup,
    Pause,
    Say,
    WaitForAudio,
    WaitForReply,
)
from callsim.simulator.caller.sids import make_sid
from callsim.simulator.caller.call_result import CallResult
from callsim.simulator.measure.bridge_share import attach_mock
from callsim.simulator.measure.measurements import CallMetrics, TurnMetrics
from callsim.simulator.measure.timeline import DtmfSent, Event, SpeechEnd, SpeechStart, Stop, UtteranceStart
from callsim.simulator.measure.metrics import (
    SNR_IDENTICAL_DB,
    best_alignment,
    heard_ms_between,
    measure_call,
    percentiles,
    snr_db,
    summarize,
)

T0 = 5_000_000_000_000
MS = 1_000_000
FRAME = 160
SILENCE = b"\xff" * FRAME
BANK = UtteranceBank()
_rng = random.Random(7)
IDENT = tw.StreamIdentity(make_sid("AC", _rng), make_sid("CA", _rng), make_sid("MZ", _rng), {})
SS = IDENT.stream_sid
CLEAR = json.dumps({"event": "clear", "streamSid": SS})


def grid(k: int) -> int:
    return T0 + k * FRAME_NS


def loud(n: int, start: int = 0) -> bytes:
    """n bytes, loud in every 160-byte frame (0x00 is full scale)."""
    return bytes(((start + i) % 127) if (i % FRAME) else 0 for i in range(n))


def media(payload: bytes) -> str:
    return json.dumps({"event": "media", "streamSid": SS, "media": {"payload": base64.b64encode(payload).decode()}})


def mark(name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": SS, "mark": {"name": name}})


class App:
    """Plays the bridge: messages to the caller at chosen absolute times."""

    def __init__(self, core: CallerCore) -> None:
        self.core = core
        self.queue: list[tuple[int, int, str]] = []
        self._n = 0
        self.done: set[str] = set()

    def at(self, t_ns: int, msg: str) -> None:
        self._n += 1
        heapq.heappush(self.queue, (t_ns, self._n, msg))

    def once(self, key: str) -> bool:
        if key in self.done:
            return False
        self.done.add(key)
        return True

    def tick(self, kind: type[Event], nth: int = 0) -> int | None:
        """Grid tick of the nth caller event of ``kind`` (sent at its tick's grid time in these tests)."""
        times = self.core.timeline.times(kind)
        return (times[nth] - T0) // FRAME_NS if len(times) > nth else None


def run(script, react: Callable[[App], None] | None = None, *, late: dict[int, int] | None = None,
        **cfg) -> CallResult:
    """Drive a call: ``advance`` at each deadline (tick k ``late[k]`` ns late), deliver the app's
    messages in time order (a message at exactly a tick's time arrives after that tick), and call
    ``react`` after every advance."""
    core = CallerCore(CallerConfig(IDENT, **cfg), script, BANK)
    app = App(core)
    core.begin(T0)
    late = late or {}
    for _ in range(100_000):
        d = core.next_deadline_ns()
        if d is None:
            break
        now = d + late.get((d - T0) // FRAME_NS, 0)
        while app.queue and app.queue[0][0] < now:
            t, _, msg = heapq.heappop(app.queue)
            core.receive(t, msg)
        core.advance(now)
        if react:
            react(app)
    return CallResult("ws://test", core)


def speech_end_tick(fixture: str, start_tick: int) -> int:
    u = BANK.get(fixture)
    return start_tick + u.speech_end_frame


# ------------------------------------------------------------- percentiles


def test_percentiles_known_list():
    p = percentiles([10, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    assert p == {"p50": 55.0, "p95": pytest.approx(95.5), "p99": pytest.approx(99.1), "max": 100.0}
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None, "max": None}
    assert percentiles([None, float("nan"), 7]) == {"p50": 7.0, "p95": 7.0, "p99": 7.0, "max": 7.0}


# ---------------------------------------------------------------- turns


TURN_SCRIPT = [Pause(100), Say("caller_stop"), WaitForReply(quiet_ms=200, timeout_ms=3000), Hangup()]
SE = speech_end_tick("caller_stop", 5)  # Pause(100) = ticks 0-4, the Say starts at tick 5


def reply_after(delay_ticks: int, audio: bytes, *, at_offset_ns: int = 1000):
    """React: send ``audio`` so that it starts playing ``delay_ticks`` ticks after speech_end."""
    def react(app: App) -> None:
        se = app.tick(SpeechEnd)
        if se is not None and app.once("reply"):
            app.at(grid(se + delay_ticks - 1) + at_offset_ns, media(audio))
    return react


def test_turn_latency_is_speech_end_to_first_loud_frame():
    result = run(TURN_SCRIPT, reply_after(32, loud(8000)))
    m = measure_call(result, scenario="s")
    (t,) = m.turns
    assert t.fixture == "caller_stop" and t.index == 0
    assert t.speech_end_ns == grid(SE)
    assert t.first_audio_ns == grid(SE + 32)
    assert t.latency_ms == 640.0
    assert t.reply_lead_ms == 0.0
    assert m.barge_ins == [] and m.underrun_ms == 0.0
    assert m.heard_ms == 1000.0
    assert m.status == "passed" and m.error is None and m.end_reason == "hangup"
    assert m.call_sid == IDENT.call_sid


def test_leading_silence_of_the_reply_counts_in_latency_not_in_lead():
    result = run(TURN_SCRIPT, reply_after(10, SILENCE * 10 + loud(1600)))
    (t,) = measure_call(result, scenario="s").turns
    assert t.latency_ms == 400.0  # 10 ticks to the reply, 10 ticks of its silence
    assert t.reply_start_ns == grid(SE + 10)
    assert t.reply_lead_ms == 200.0


def test_a_late_tick_does_not_inflate_latency():
    result = run(TURN_SCRIPT, reply_after(32, loud(8000)), late={SE + 32: 15 * MS})
    (t,) = measure_call(result, scenario="s").turns
    assert result.core.tick_ns[SE + 32] == grid(SE + 32) + 15 * MS
    assert t.latency_ms == 640.0


def test_a_late_tick_never_plays_audio_before_it_arrived():
    # tick SE+31 runs 15 ms late; the reply arrives 10 ms after its grid time, so that tick plays it
    result = run(TURN_SCRIPT, reply_after(32, loud(8000), at_offset_ns=20 * MS + 10 * MS - 20 * MS),
                 late={SE + 31: 15 * MS})
    core = result.core
    played = list(core.played_bytes)
    assert played[SE + 31] == 160 and played[SE + 30] == 0
    (t,) = measure_call(result, scenario="s").turns
    assert t.first_audio_ns == grid(SE + 31) + 10 * MS
    assert t.latency_ms == 630.0


def test_no_reply_gives_no_latency():
    result = run(TURN_SCRIPT)
    (t,) = measure_call(result, scenario="s").turns
    assert t.latency_ms is None and t.first_audio_ns is None


def test_audio_after_the_next_utterance_started_is_not_the_reply():
    script = [Pause(100), Say("caller_stop"), Pause(200), Say("caller_stop"), WaitForReply(200, 2000), Hangup()]
    second_start = 5 + BANK.get("caller_stop").frame_count + 10

    def react(app: App) -> None:
        if app.tick(UtteranceStart, 1) is not None and app.once("r"):
            app.at(grid(second_start + 2) + 1000, media(loud(320)))  # in its leading silence

    m = measure_call(run(script, react), scenario="s")
    assert m.heard_ms == 40.0 and m.barge_ins == []
    assert [t.latency_ms for t in m.turns] == [None, None]


# ------------------------------------------------------------- overhead


def _mock(*, stopped_ns: int, started_ns: int, vad_wait: float | None = 500.0, responses=(), **extra) -> dict:
    turn = {"item_id": "item_u1", "audio_start_ms": 0, "audio_end_ms": 1000, "t_speech_started_ns": started_ns,
            "t_speech_stopped_ns": stopped_ns, "heard": "caller_stop", "score": 0.9, "t_committed_ns": stopped_ns}
    if vad_wait is not None:
        turn["vad_wait_wall_ms"] = vad_wait
    snap = {"id": "sess_1", "dialect": "ga", "open": False, "turns": [turn], "responses": list(responses),
            "truncates": [], "errors": [], "close": None, "faults": []}
    snap.update(extra)
    return snap


def _response(rid: str, trigger_ns: int, *, created_ms: float | None = 20, first_audio_ms: float | None = 100,
              think_ms: float = 100.0, reply: str = "assistant_short_reply", trigger: str = "vad",
              done_ms: float | None = None) -> dict:
    return {"id": rid, "trigger": trigger, "index": 1, "reply": reply, "status": "completed", "reason": None,
            "think_ms": think_ms, "t_trigger_ns": trigger_ns,
            "t_created_ns": None if created_ms is None else trigger_ns + int(created_ms * MS),
            "t_first_audio_ns": None if first_audio_ms is None else trigger_ns + int((created_ms or 0) * MS)
            + int(first_audio_ms * MS),
            "t_done_ns": None if done_ms is None else trigger_ns + int(done_ms * MS),
            "audio_ms_total": 1000, "audio_ms_sent": 1000, "item_ids": ["item_a"]}


def test_overhead_is_latency_minus_vad_wait_and_think_and_reply_lead():
    result = run(TURN_SCRIPT, reply_after(40, SILENCE * 10 + loud(8000)))  # latency 800 + 200 lead
    stopped = grid(SE) + 520 * MS
    mock = _mock(started_ns=grid(15) + 30 * MS, stopped_ns=stopped, vad_wait=510.0,
                 responses=[_response("resp_1", stopped, created_ms=20, first_audio_ms=110)])
    (t,) = measure_call(result, scenario="s", mock=mock, created_delay_ms=20.0).turns
    assert t.latency_ms == 1000.0 and t.reply_lead_ms == 200.0
    assert t.mock_vad_wait_ms == 510.0
    assert t.mock_think_ms == pytest.approx(130.0)  # measured: trigger -> first audio delta
    # no line tags in this snapshot: the reply's first byte reached the caller at grid(SE + 39) + 1 µs,
    # a tick before it played; the overhead counts from that arrival, not from the 20 ms playback tick
    assert t.first_byte_ns == grid(SE + 39) + 1000
    assert t.overhead_ms == pytest.approx(780.001 - 510 - 130)
    assert t.uplink_hop_ms is None
    assert t.heard == "caller_stop" and t.mock_item_id == "item_u1" and t.response_ids == ["resp_1"]


def test_overhead_falls_back_to_scripted_think_and_created_delay():
    result = run(TURN_SCRIPT, reply_after(40, loud(8000)))
    stopped = grid(SE) + 500 * MS
    mock = _mock(started_ns=grid(15), stopped_ns=stopped, vad_wait=500.0,
                 responses=[_response("r", stopped, created_ms=None, first_audio_ms=None, think_ms=150.0)])
    (t,) = measure_call(result, scenario="s", mock=mock, created_delay_ms=20.0).turns
    assert t.mock_think_ms == 170.0
    assert t.overhead_ms == pytest.approx(780.001 - 500 - 170)


def test_overhead_adds_up_a_tool_call_chain():
    result = run(TURN_SCRIPT, reply_after(50, loud(8000)))
    stopped = grid(SE) + 500 * MS
    tool = _response("r1", stopped, created_ms=20, first_audio_ms=None, done_ms=220, reply="tool:get_weather")
    reply = _response("r2", stopped + 300 * MS, created_ms=20, first_audio_ms=100, trigger="client")
    mock = _mock(started_ns=grid(15), stopped_ns=stopped, vad_wait=500.0, responses=[reply, tool])
    m = measure_call(result, scenario="s", mock=mock)
    (t,) = m.turns
    assert t.response_ids == ["r1", "r2"]
    assert t.mock_think_ms == pytest.approx(220 + 120)
    assert t.overhead_ms == pytest.approx(980.001 - 500 - 340)  # the bridge's 80 ms running the tool stay in
    assert m.tools_called == ["get_weather"] and m.tools_completed == ["get_weather"]


def test_overhead_from_line_tags_is_the_two_hops_plus_the_bridges_waits():
    """With the call's tagged idle-line frames in the mock's record, the uplink hop is the mock's
    receipt of *those frames* minus their send times, the downlink hop the reply's first byte at the
    caller minus the mock's first delta, and the overhead their sum (+ waits the bridge caused) —
    independent of the mock's VAD and of the caller's playback tick."""
    result = run(TURN_SCRIPT, reply_after(40, SILENCE * 10 + loud(8000)))
    core = result.core
    sent = dict(zip(core.media_sent_grid, core.media_sent_ns))
    rx = [[k, t + 3 * MS] for k, t in sent.items()]  # 3 ms through the bridge, every frame
    stopped = grid(SE) + 520 * MS
    first_delta = grid(SE + 39) + 1000 - 7 * MS  # 7 ms before the caller had it
    resp = _response("resp_1", stopped, created_ms=0, first_audio_ms=(first_delta - stopped) / MS)
    mock = _mock(started_ns=grid(15) + 30 * MS, stopped_ns=stopped, vad_wait=510.0, responses=[resp])
    mock["line_tag_rx"] = {f"{core.line_tag:08x}": rx, "0badc0de": [[k, 0] for k in sent]}
    (t,) = measure_call(result, scenario="s", mock=mock).turns
    assert t.uplink_hop_ms == pytest.approx(3.0)
    assert t.downlink_hop_ms == pytest.approx(7.0)
    assert t.overhead_ms == pytest.approx(10.0)
    late = dict(resp, trigger="client", t_trigger_ns=stopped + 40 * MS, t_created_ns=stopped + 40 * MS)
    mock["responses"] = [late]
    (t,) = measure_call(result, scenario="s", mock=mock).turns
    assert t.overhead_ms == pytest.approx(50.0)


def test_mock_records_transcript_close_and_tools():
    stopped = grid(SE) + 500 * MS
    tool = _response("r1", stopped, reply="tool:get_weather", first_audio_ms=None, done_ms=200)
    result = run(TURN_SCRIPT, reply_after(40, loud(800)))
    stop_t = result.core.timeline.first(Stop).t_ns
    mock = _mock(started_ns=grid(15), stopped_ns=stopped, responses=[tool],
                 close={"t_ns": stop_t + 300 * MS, "by": "client", "code": 1000, "reason": ""})
    m = measure_call(result, scenario="s", mock=mock)
    assert m.transcript == ["Stop."]
    assert m.tools_called == ["get_weather"] and m.tools_completed == []  # the bridge never answered it
    assert m.openai_closed_after_hangup_ms == 300.0
    assert m.mock["id"] == "sess_1" and m.mock["turns"][0]["heard"] == "caller_stop"
    no_close = measure_call(result, scenario="s", mock=_mock(started_ns=grid(15), stopped_ns=stopped))
    assert no_close.openai_closed_after_hangup_ms is None and no_close.mock["close"] is None


def test_without_the_mock_there_is_no_overhead_and_no_mock_record():
    m = measure_call(run(TURN_SCRIPT, reply_after(32, loud(800))), scenario="s")
    (t,) = m.turns
    assert t.overhead_ms is None and t.mock_vad_wait_ms is None
    assert m.mock is None and m.transcript == [] and m.openai_closed_after_hangup_ms is None


# ------------------------------------------------------------- barge-in


BARGE_SCRIPT = [Pause(100), Say("caller_stop"), WaitForAudio(after_ms=400), Say("caller_barge_in"),
                WaitForReply(quiet_ms=200, timeout_ms=3000), Hangup()]
REPLY_TICK = SE + 11  # the long reply starts playing here


def barge_in_app(clear_after_ms: int | None):
    def react(app: App) -> None:
        if app.tick(SpeechEnd) is not None and app.once("reply"):
            app.at(grid(REPLY_TICK - 1) + 1000, media(loud(8000 * 5)))
        onsets = app.core.timeline.times(SpeechStart)
        if len(onsets) > 1 and clear_after_ms is not None and app.once("clear"):
            app.at(onsets[1] + clear_after_ms * MS, CLEAR)
    return react


def _onset_tick(result: CallResult) -> int:
    return (result.core.timeline.times(SpeechStart)[1] - T0) // FRAME_NS


def test_barge_in_clear_talk_over_heard_and_truncate_error():
    result = run(BARGE_SCRIPT, barge_in_app(120))
    m_on = _onset_tick(result)
    clear_t = grid(m_on) + 120 * MS
    heard = (m_on + 7 - REPLY_TICK) * 20.0  # ticks up to and including the one running at the clear
    truncates = [{"t_ns": clear_t - 2 * MS, "item_id": "item_a", "audio_end_ms": int(heard) - 140,
                  "accepted": True, "error": None, "audio_sent_ms": 5000.0},
                 {"t_ns": grid(2), "item_id": "item_x", "audio_end_ms": 0, "accepted": True}]  # before: not paired
    mock = {"id": "s", "turns": [], "responses": [], "truncates": truncates, "errors": [], "close": None}
    m = measure_call(result, scenario="s", mock=mock)
    assert len(m.turns) == 1 and m.turns[0].latency_ms == 220.0
    (b,) = m.barge_ins
    assert b.fixture == "caller_barge_in"
    assert b.onset_ns == grid(m_on)
    assert b.clear_ns == clear_t and b.clear_ms == 120.0
    assert b.talk_over_ms == 140.0  # the frame playing when the clear arrived is not recalled
    assert b.reply_start_ns == grid(REPLY_TICK)
    assert b.heard_ms == heard
    assert b.truncate_ns == clear_t - 2 * MS and b.truncate_audio_end_ms == int(heard) - 140
    assert b.truncate_accepted is True and b.truncate_error_ms == 140.0
    assert m.heard_ms == heard  # nothing else played
    assert m.clears == 1 and m.underrun_ms == 0.0
    # the library helper the e2e test can use
    assert heard_ms_between(result.core, REPLY_TICK, clear_t) == heard


def test_barge_in_without_clear():
    result = run(BARGE_SCRIPT, barge_in_app(None))
    m_on = _onset_tick(result)
    m = measure_call(result, scenario="s", mock={"truncates": []})
    (b,) = m.barge_ins
    assert b.clear_ms is None and b.clear_ns is None
    reply_end = REPLY_TICK + 250  # 5 s of audio
    assert b.talk_over_ms == (reply_end - m_on) * 20.0
    assert b.heard_ms == 5000.0
    assert b.truncate_audio_end_ms is None and b.truncate_error_ms is None and b.truncate_accepted is None


def test_rejected_truncate_is_paired_with_its_error():
    result = run(BARGE_SCRIPT, barge_in_app(60))
    clear_t = grid(_onset_tick(result)) + 60 * MS
    tr = {"t_ns": clear_t + 5 * MS, "item_id": "i", "audio_end_ms": 9000, "accepted": False,
          "error": "audio_too_short", "audio_sent_ms": 5000.0}
    (b,) = measure_call(result, scenario="s", mock={"truncates": [tr]}).barge_ins
    assert b.truncate_accepted is False and b.truncate_rejection == "audio_too_short"
    assert b.truncate_error_ms == 9000 - b.heard_ms


def test_speech_after_the_reply_ended_is_a_turn_not_a_barge_in():
    script = [Pause(100), Say("caller_stop"), WaitForReply(quiet_ms=200, timeout_ms=3000), Say("caller_stop"),
              WaitForReply(quiet_ms=200, timeout_ms=600), Hangup()]
    m = measure_call(run(script, reply_after(10, loud(1600))), scenario="s")
    assert len(m.turns) == 2 and m.barge_ins == []
    assert m.turns[0].latency_ms == 200.0 and m.turns[1].latency_ms is None


# --------------------------------------------------------------- underruns


def test_a_reply_with_a_gap_of_five_ticks_underruns_100_ms():
    def react(app: App) -> None:
        se = app.tick(SpeechEnd)
        if se is not None and app.once("r"):
            app.at(grid(se + 9) + 1000, media(loud(8000)))  # plays se+10 .. se+59
            app.at(grid(se + 64) + 1000, media(loud(8000)))  # plays from se+65: se+60..se+64 empty

    m = measure_call(run(TURN_SCRIPT, react), scenario="s")
    assert m.underrun_ms == 100.0
    assert m.heard_ms == 2000.0


def test_short_frames_inside_a_reply_count_but_its_last_frame_does_not():
    def react(app: App) -> None:
        se = app.tick(SpeechEnd)
        if se is not None and app.once("r"):
            app.at(grid(se + 9) + 1000, media(loud(800 + 80)))  # 5 frames + a half frame at se+15
            app.at(grid(se + 15) + 1000, media(loud(800 + 40)))  # se+16..: 5 frames + a quarter (the last)

    m = measure_call(run(TURN_SCRIPT, react), scenario="s")
    assert len(m.turns) == 1
    assert m.underrun_ms == 10.0  # (160 - 80) / 8; the final 40-byte frame is the reply's end


def test_a_continuous_reply_and_the_silence_between_replies_are_not_underruns():
    script = [Pause(100), Say("caller_stop"), WaitForReply(quiet_ms=200, timeout_ms=3000), Say("caller_stop"),
              WaitForReply(quiet_ms=200, timeout_ms=3000), Hangup()]
    m = measure_call(run(script, reply_after(10, loud(1600))), scenario="s")
    assert m.underrun_ms == 0.0


def test_two_replies_with_no_caller_words_between_are_not_one_reply_with_an_underrun():
    """A re-prompt to a silent caller, or the answer to a keypress: the silence before it is no
    underrun. With the mock in the loop, each reply starts where the mock sent its first audio;
    a keypress starts a new reply too."""
    def react(app: App) -> None:
        se = app.tick(SpeechEnd)
        if se is not None and app.once("r"):
            app.at(grid(se + 9) + 1000, media(loud(1600)))  # the answer: se+10 .. se+19
            app.at(grid(se + 80) + 1000, media(loud(1600)))  # the re-prompt, 1.2 s later

    script = [Pause(100), Say("caller_stop"), Pause(2500), Hangup()]
    result = run(script, react)
    unsplit = measure_call(result, scenario="s")
    assert unsplit.underrun_ms > 1000  # without knowing where replies start, the gap looks like one
    se = (result.core.timeline.times(SpeechEnd)[0] - T0) // FRAME_NS
    mock = {"responses": [{"index": 1, "t_trigger_ns": grid(se + 5), "t_first_audio_ns": grid(se + 9)},
                          {"index": 2, "t_trigger_ns": grid(se + 70), "t_first_audio_ns": grid(se + 80)}],
            "turns": [], "truncates": []}
    assert measure_call(result, scenario="s", mock=mock).underrun_ms == 0.0

    def keypress(app: App) -> None:
        k = app.tick(DtmfSent)
        if k is not None and app.once("r"):
            app.at(grid(k + 5) + 1000, media(loud(1600)))
    script = [Pause(100), Say("caller_stop"), Pause(600), Dtmf("1"), Pause(1500), Hangup()]

    def both(app: App) -> None:
        react(app)
        keypress(app)

    assert measure_call(run(script, both), scenario="s").underrun_ms == 0.0


def test_a_clear_ends_a_reply_and_the_next_audio_starts_a_new_one():
    def react(app: App) -> None:
        se = app.tick(SpeechEnd)
        if se is not None and app.once("r"):
            app.at(grid(se + 9) + 1000, media(loud(8000)))
            app.at(grid(se + 20) + 1000, CLEAR)
            app.at(grid(se + 40) + 1000, media(loud(1600)))  # e.g. an apology after OpenAI dropped

    script = [Pause(100), Say("caller_stop"), WaitForReply(quiet_ms=1000, timeout_ms=3000), Hangup()]
    m = measure_call(run(script, react), scenario="s")
    assert m.underrun_ms == 0.0
    assert m.heard_ms == 11 * 20 + 200


# ------------------------------------------------------------------ codec


def echo_app(audio_of: Callable[[bytes], bytes], lead: bytes = b"\xff" * 37):
    def react(app: App) -> None:
        se = app.tick(SpeechEnd)
        if se is not None and app.once("echo"):
            app.at(grid(se + 30) + 1000, media(lead + audio_of(BANK.get("caller_greeting").ulaw)))
    return react


ECHO_SCRIPT = [Pause(100), Say("caller_greeting"), WaitForReply(quiet_ms=200, timeout_ms=8000), Hangup()]


def test_echo_bit_exact():
    m = measure_call(run(ECHO_SCRIPT, echo_app(lambda u: u)), scenario="s", behaviour_echo=True)
    c = m.codec
    assert c.checked and c.bit_exact is True
    assert c.snr_db == SNR_IDENTICAL_DB
    assert c.turns[0]["whole_speech"] is True


def test_echo_altered_is_not_bit_exact_and_has_a_finite_snr():
    rng = np.random.default_rng(3)

    def alter(u: bytes) -> bytes:
        pcm = ulaw_to_pcm16(u).astype(np.float64)
        noisy = pcm + rng.normal(0, 0.02 * np.sqrt(np.mean(pcm ** 2)), len(pcm))  # ≈ 34 dB
        return pcm16_to_ulaw(np.clip(noisy, -32768, 32767).astype(np.int16))

    m = measure_call(run(ECHO_SCRIPT, echo_app(alter)), scenario="s", behaviour_echo=True)
    assert m.codec.checked and m.codec.bit_exact is False
    assert 25 < m.codec.snr_db < 36


def test_echo_missing_or_not_in_echo_mode():
    m = measure_call(run(ECHO_SCRIPT), scenario="s", behaviour_echo=True)
    assert m.codec.checked and m.codec.bit_exact is False
    assert m.codec.snr_db is not None and m.codec.snr_db < 1  # silence against speech
    assert measure_call(run(ECHO_SCRIPT), scenario="s").codec.checked is False


def test_snr_and_alignment_on_known_signals():
    rng = np.random.default_rng(1)
    ref = (8000 * np.sin(np.arange(4000) * 0.07) + rng.normal(0, 2000, 4000)).astype(np.int16)
    noise = rng.normal(0, 1, 4000)
    noise *= np.sqrt(np.mean(ref.astype(np.float64) ** 2) / 10 ** 2.0 / np.mean(noise ** 2))  # 20 dB
    heard = np.concatenate([np.zeros(1234), 20000 * np.sin(np.arange(3000) * 0.3),  # a loud decoy first
                            ref + noise, np.zeros(500)])
    lag, ncc = best_alignment(ref, heard)
    assert lag == 1234 + 3000 and ncc > 0.99
    assert snr_db(ref, heard) == pytest.approx(20.0, abs=0.05)
    assert snr_db(ref, np.concatenate([np.zeros(77), ref])) == SNR_IDENTICAL_DB
    # an echo cut short still aligns; the missing part counts as error
    half = np.concatenate([np.zeros(100), ref[:2000]])
    assert best_alignment(ref, half)[0] == 100
    assert snr_db(ref, half) == pytest.approx(10 * np.log10(np.sum(ref.astype(float) ** 2)
                                                            / np.sum(ref[2000:].astype(float) ** 2)), abs=1e-6)
    assert snr_db(ref, np.zeros(0)) is None and snr_db(np.zeros(10), heard) is None


# --------------------------------------------------------------- misc


def test_a_call_that_was_never_placed_is_an_error():
    m = measure_call(CallResult("ws://nowhere", error="stream connect to ws://nowhere failed: refused"),
                     scenario="s", call_index=3)
    assert m.status == "error" and "refused" in m.error
    assert m.call_index == 3 and m.turns == [] and m.heard_ms == 0.0


def test_warnings_marks_pacing_are_copied():
    def react(app: App) -> None:
        if app.once("x"):
            app.at(grid(1) + 1000, json.dumps({"event": "media", "streamSid": SS, "media": {"payload": "!!"}}))
            app.at(grid(1) + 2000, mark("m1"))

    m = measure_call(run([Pause(100), Hangup()], react), scenario="s")
    assert m.warnings == {"31951": 1} and m.warning_reasons
    assert m.marks_echoed == {"idle": 1}
    assert m.pacing["lateness_ms_max"] == 0.0 and m.duration_ms == 120.0


def test_summarize():
    def call(i, status, lat, clear=None, snr=None, exact=None, underrun=0.0, pacing=None):
        c = CallMetrics("s", i, None, status=status, underrun_ms=underrun, pacing=pacing or {})
        c.turns = [TurnMetrics(j, "f", 0, latency_ms=v, overhead_ms=None if v is None else v - 100)
                   for j, v in enumerate(lat)]
        if snr is not None or exact is not None:
            c.codec.checked, c.codec.snr_db, c.codec.bit_exact = True, snr, exact
        if clear is not None:
            from callsim.simulator.measure.measurements import BargeInMetrics
            c.barge_ins = [BargeInMetrics(0, "b", clear_ms=clear, talk_over_ms=clear + 20, truncate_error_ms=5.0)]
        return c

    calls = [call(0, "passed", [100, 200], clear=150, snr=100.0, exact=True, pacing={"lateness_ms_p99": 1.0,
                                                                                      "lateness_ms_max": 3.0}),
             call(1, "failed", [300, None], snr=20.5, exact=False, underrun=40.0,
                  pacing={"lateness_ms_p99": 2.0, "lateness_ms_max": 2.5}),
             call(2, "error", [])]
    s = summarize(calls)
    assert (s["calls"], s["passed"], s["failed"], s["errors"]) == (3, 1, 1, 1)
    assert s["turn_latency_ms"] == percentiles([100, 200, 300])
    assert s["turn_latency_ms"]["p50"] == 200.0 and s["turn_latency_ms"]["max"] == 300.0
    assert s["overhead_ms"]["max"] == 200.0
    assert s["barge_in_clear_ms"] == {"p50": 150.0, "p95": 150.0, "p99": 150.0, "max": 150.0}
    assert s["talk_over_ms"]["max"] == 170.0
    assert s["truncate_error_ms"] == {"max": 5.0}
    assert s["codec"] == {"bit_exact_calls": 1, "checked_calls": 2, "min_snr_db": 20.5}
    assert s["underrun_ms_total"] == 40.0
    assert s["pacing_jitter_ms"] == {"p99": 2.0, "max": 3.0}
    assert s["turns_without_reply"] == 1
    empty = summarize([])
    assert empty["turn_latency_ms"]["p95"] is None and empty["truncate_error_ms"] == {"max": None}
    assert empty["codec"]["min_snr_db"] is None


def test_an_idle_timeout_turn_is_not_taken_for_the_callers_turn():
    """The mock's idle timeout commits the silence as a turn of its own (t_committed_ns, idle_timeout): it
    falls in the caller's window after the caller's own turn, but the caller's turn is the one answered."""
    ms = 1_000_000
    caller = {"item_id": "item_caller", "heard": "caller_weather_question", "t_speech_started_ns": 1_000 * ms,
              "t_speech_stopped_ns": 3_000 * ms, "vad_wait_wall_ms": 500.0}
    idle = {"item_id": "item_idle", "heard": None, "idle_timeout": True, "t_committed_ns": 9_000 * ms}
    responses = [{"id": "resp_1", "reply": "assistant_short_reply", "t_trigger_ns": 3_000 * ms,
                  "t_created_ns": 3_000 * ms, "think_ms": 400.0}]
    t = TurnMetrics(0, "caller_weather_question", 2_900 * ms, first_audio_ns=3_600 * ms)
    attach_mock(t, 1_000 * ms, None, [caller, idle], responses, 0.0)
    assert (t.mock_item_id, t.heard, t.mock_vad_wait_ms) == ("item_caller", "caller_weather_question", 500.0)
    assert t.response_ids == ["resp_1"]
