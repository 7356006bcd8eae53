"""The fake Twilio caller's sans-IO core, driven with synthetic times.

No sockets, no clock: a test plays the driver, calling ``begin``/``advance`` at
(or after) ``next_deadline_ns`` and ``receive`` with what an app would send,
and checks every message against protocols.md 1.2/1.3 and every byte of
``heard`` against what the app sent.
"""

from __future__ import annotations

import base64
import json
import random
import re

import pytest
from callsim.simulator.audio import linetag
from callsim.simulator.audio.codec import SILENCE_PEAK, ULAW_MAGNITUDE
from callsim.simulator.audio.fixtures import default_library
from callsim.simulator.audio.utterances import UtteranceBank
from callsim.simulator.caller import twilio_wire as tw
from callsim.simulator.caller.core import FRAME_NS, CallerConfig, CallerCore
from callsim.simulator.caller.script import (
    DTMF_DIGITS,
    Dtmf,
    Hangup,
    Pause,
    Say,
    WaitForAudio,
    WaitForReply,
    conversation,
)
from callsim.simulator.caller.sids import make_sid
from callsim.simulator.measure.timeline import AudioOffset, AudioOnset, PlaybackStart, PlaybackStop
from hypothesis import given, settings
from hypothesis import strategies as st

T0 = 123_456_789_000  # an arbitrary monotonic_ns
FRAME = 160
SILENCE = b"\xff" * FRAME
SID = {p: re.compile(rf"^{p}[0-9a-f]{{32}}$") for p in ("AC", "CA", "MZ")}

_rng = random.Random(2024)
IDENT = tw.StreamIdentity(make_sid("AC", _rng), make_sid("CA", _rng), make_sid("MZ", _rng),
                          {"FirstName": "Jane", "Scenario": "unit"})
SS = IDENT.stream_sid
BANK = UtteranceBank()
MAIN_SCRIPT = [Pause(100), Say("caller_stop"), Dtmf("12"), Pause(100), Hangup()]


def grid(k: int) -> int:
    return T0 + k * FRAME_NS


def make(script, **cfg) -> CallerCore:
    return CallerCore(CallerConfig(IDENT, **cfg), script, BANK)


def loud(n: int, start: int = 0) -> bytes:
    """n bytes of audio that is loud in every 160-byte frame (0x00 = full scale) and
    distinct enough that a misplaced byte shows; never 0xFF."""
    return bytes(((start + i) % 127) if (i % FRAME) else 0 for i in range(n))


def media_in(payload: bytes, sid: str = SS) -> str:
    return json.dumps({"event": "media", "streamSid": sid, "media": {"payload": base64.b64encode(payload).decode()}})


def mark_in(name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": SS, "mark": {"name": name}})


CLEAR = json.dumps({"event": "clear", "streamSid": SS})


def parse(msgs: list[str]) -> list[dict]:
    return [json.loads(m) for m in msgs]


def drive(core: CallerCore, max_steps: int = 100_000) -> list[tuple[int, dict]]:
    """begin at T0 and call advance exactly at each deadline until the call ends."""
    sent = [(T0, m) for m in parse(core.begin(T0))]
    for _ in range(max_steps):
        d = core.next_deadline_ns()
        if d is None:
            return sent
        sent += [(d, m) for m in parse(core.advance(d))]
    raise AssertionError("call did not end")


def events(core: CallerCore, name: str) -> list[dict]:
    """The timeline's ``name`` events as timeline.json holds them."""
    return [e for e in core.timeline.as_dicts() if e["event"] == name]


# ------------------------------------------------------------ begin / start


def test_begin_sends_connected_then_start():
    core = make([Pause(1000)])
    assert core.next_deadline_ns() is None  # nothing before begin
    assert not core.advance(T0)
    connected, start = parse(core.begin(T0))
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert set(start) == {"event", "sequenceNumber", "start", "streamSid"}
    assert start["event"] == "start" and start["sequenceNumber"] == "1"
    assert start["streamSid"] == SS
    s = start["start"]
    assert SID["AC"].match(s["accountSid"]) and s["accountSid"] == IDENT.account_sid
    assert SID["CA"].match(s["callSid"]) and s["callSid"] == IDENT.call_sid
    assert SID["MZ"].match(s["streamSid"]) and s["streamSid"] == SS
    assert s["tracks"] == ["inbound"]
    assert s["customParameters"] == {"FirstName": "Jane", "Scenario": "unit"}
    assert s["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert type(s["mediaFormat"]["sampleRate"]) is int and type(s["mediaFormat"]["channels"]) is int
    assert core.next_deadline_ns() == T0  # first frame right away
    assert [e.kind for e in core.timeline] == ["connected", "start"]
    with pytest.raises(RuntimeError):
        core.begin(T0)


# ------------------------------------------------- the whole scripted call


@pytest.fixture(scope="module")
def main_call():
    core = make(MAIN_SCRIPT)
    deadlines = []
    sent = [(T0, m) for m in parse(core.begin(T0))]
    while (d := core.next_deadline_ns()) is not None:
        deadlines.append(d)
        sent += [(d, m) for m in parse(core.advance(d))]
    return core, sent, deadlines


def _layout():
    """Independent expectation of the main script, tick by tick."""
    n_say = len(BANK.get("caller_stop").ulaw) // FRAME
    pause1 = range(0, 5)  # Pause(100) = 5 frames
    say = range(5, 5 + n_say)
    dtmf_start = 5 + n_say  # '1' at the first Dtmf tick, '2' gap_ms=100 (5 ticks) later
    dtmf = range(dtmf_start, dtmf_start + 6)
    pause2 = range(dtmf.stop, dtmf.stop + 5)
    stop_tick = pause2.stop
    return n_say, pause1, say, dtmf, pause2, stop_tick


def test_fixture_frames_are_whole_frames_of_the_mulaw():
    utt = BANK.get("caller_stop")
    assert len(utt.ulaw) % FRAME == 0
    assert utt.frame_count == len(utt.ulaw) // FRAME
    assert [base64.b64decode(f) for f in utt.frames_b64] == [utt.ulaw[i:i + FRAME] for i in range(0, len(utt.ulaw), FRAME)]
    fx = default_library()["caller_stop"]
    # 8 kHz μ-law of the fixture: one byte per sample, padded to a whole frame
    assert len(utt.ulaw) - FRAME < fx.frames * 8000 // fx.sample_rate <= len(utt.ulaw)


def test_main_call_message_order_and_counters(main_call):
    core, sent, _ = main_call
    n_say, pause1, say, dtmf, pause2, stop_tick = _layout()
    msgs = [m for _, m in sent]
    assert msgs[0]["event"] == "connected" and "sequenceNumber" not in msgs[0]
    assert msgs[1]["event"] == "start"
    assert msgs[-1]["event"] == "stop"
    assert [m["event"] for m in msgs].count("stop") == 1
    assert [m["event"] for m in msgs].count("start") == 1
    # one sequenceNumber counter over everything after 'connected', as strings, no gaps
    assert [m["sequenceNumber"] for m in msgs[1:]] == [str(i) for i in range(1, len(msgs))]
    assert all(m["streamSid"] == SS for m in msgs[1:])
    media = [(t, m) for t, m in sent if m["event"] == "media"]
    assert len(media) == stop_tick  # one frame per tick, none on the hang-up tick
    for k, (t, m) in enumerate(media):
        assert set(m) == {"event", "sequenceNumber", "media", "streamSid"}
        assert set(m["media"]) == {"track", "chunk", "timestamp", "payload"}
        assert m["media"]["track"] == "inbound"
        assert m["media"]["chunk"] == str(k + 1)  # media-only counter, from "1"
        assert m["media"]["timestamp"] == str(20 * k)
        assert t == grid(k)  # released at its own tick
        assert len(base64.b64decode(m["media"]["payload"], validate=True)) == FRAME
    stop = msgs[-1]
    assert stop == {"event": "stop", "sequenceNumber": str(len(msgs) - 1),
                    "stop": {"accountSid": IDENT.account_sid, "callSid": IDENT.call_sid}, "streamSid": SS}
    assert sent[-1][0] == grid(stop_tick)
    assert core.finished and core.end_reason == "hangup"


def test_main_call_audio_is_silence_then_the_fixture_then_silence(main_call):
    core, sent, _ = main_call
    n_say, pause1, say, dtmf, pause2, stop_tick = _layout()
    frames = [base64.b64decode(m["media"]["payload"]) for _, m in sent if m["event"] == "media"]
    ulaw = BANK.get("caller_stop").ulaw
    expected = [ulaw[i:i + FRAME] for i in range(0, len(ulaw), FRAME)]
    assert [frames[k] for k in say] == expected
    tag = core.line_tag
    assert tag is not None and make([Hangup()]).line_tag != tag  # a fresh tag per call, whatever the SIDs
    for k in [*pause1, *dtmf, *pause2]:  # the idle line: silence that names the call and the frame
        assert frames[k] == linetag.tag_frame(tag, k)
        assert linetag.read_tag(frames[k]) == (tag, k)
        assert max(ULAW_MAGNITUDE[b] for b in frames[k]) < SILENCE_PEAK  # inaudible
    assert b"".join(frames) == b"".join(linetag.tag_frame(tag, k) for k in range(5)) + ulaw + b"".join(
        linetag.tag_frame(tag, k) for k in range(5 + len(expected), 5 + len(expected) + 11))


def test_line_tag_off_sends_pure_line_silence():
    core = make([Pause(100), Hangup()], line_tag=False)
    frames = [base64.b64decode(m["media"]["payload"]) for _, m in drive(core) if m["event"] == "media"]
    assert core.line_tag is None
    assert len(frames) == 5 and all(f == SILENCE for f in frames)


def test_main_call_dtmf(main_call):
    _, sent, _ = main_call
    n_say, pause1, say, dtmf, pause2, stop_tick = _layout()
    idx = [i for i, (_, m) in enumerate(sent) if m["event"] == "dtmf"]
    assert len(idx) == 2
    for i, digit, tick in zip(idx, "12", (dtmf.start, dtmf.start + 5)):
        t, m = sent[i]
        assert m == {"event": "dtmf", "streamSid": SS, "sequenceNumber": m["sequenceNumber"],
                     "dtmf": {"track": "inbound_track", "digit": digit}}
        assert t == grid(tick)
        # sent just before that tick's media frame
        nxt = sent[i + 1][1]
        assert nxt["event"] == "media" and nxt["media"]["timestamp"] == str(20 * tick)
        assert int(nxt["sequenceNumber"]) == int(m["sequenceNumber"]) + 1


def test_main_call_deadlines_are_the_absolute_grid(main_call):
    core, _, deadlines = main_call
    *_, stop_tick = _layout()
    assert deadlines == [grid(k) for k in range(stop_tick + 1)]
    assert core.next_deadline_ns() is None
    assert not core.advance(grid(stop_tick + 10))


def test_main_call_timeline_speech_events(main_call):
    core, sent, _ = main_call
    _, _, say, *_ = _layout()
    fx = default_library()["caller_stop"]
    seg_start, seg_end = fx.speech_segments_ms[0][0], fx.speech_segments_ms[-1][1]
    # frame holding the first speech sample / the last speech sample (at seg_end - 1/8 ms)
    first = int(seg_start // 20)
    last = int((seg_end - 0.125) // 20)
    n = len(say)
    expect = {
        "utterance_start": say.start,
        "speech_start": say.start + first,
        "speech_end": say.start + last,
        "utterance_end": say.start + n - 1,
    }
    for name, tick in expect.items():
        (ev,) = events(core, name)
        assert ev["fixture"] == "caller_stop"
        assert ev["t_ns"] == grid(tick), name
        assert ev["t_ms"] == tick * 20.0
        assert "lost" not in ev
    assert events(core, "utterance_start")[0]["text"] == fx.text
    assert [e["digit"] for e in events(core, "dtmf")] == ["1", "2"]
    assert events(core, "stop")[0]["why"] == "script"
    assert core.summary()["utterances"] == 1


def test_speech_end_is_stamped_with_the_actual_send_time_of_its_frame():
    # A late driver: the frame holding the last speech sample is released late,
    # and the event says when it really went out.
    core = make([Say("caller_stop")])
    core.begin(T0)
    late = grid(60) + 3_000_000
    core.advance(grid(9))
    core.advance(late)  # every overdue frame at once
    (ev,) = events(core, "speech_end")
    k = int((default_library()["caller_stop"].speech_segments_ms[-1][1] - 0.125) // 20)
    assert ev["t_ns"] == late
    assert core.media_sent_grid[k] == k and core.media_sent_ns[k] == late


# ----------------------------------------------------------------- pacing


def test_late_advance_sends_every_overdue_frame_and_keeps_the_grid():
    core = make([Pause(60_000)])
    core.begin(T0)
    out = parse(core.advance(T0 + 70_000_000))  # 3.5 frames late
    assert [m["media"]["timestamp"] for m in out] == ["0", "20", "40", "60"]
    assert core.next_deadline_ns() == grid(4)
    assert not core.advance(grid(4) - 1)  # not yet
    assert core.next_deadline_ns() == grid(4)
    out = parse(core.advance(grid(4) + 19_999_999))  # late by almost a frame: still one frame
    assert [m["media"]["timestamp"] for m in out] == ["80"]
    assert core.next_deadline_ns() == grid(5)  # no drift from lateness
    out = parse(core.advance(grid(505)))  # very late
    assert [m["media"]["timestamp"] for m in out] == [str(20 * k) for k in range(5, 506)]
    assert [m["media"]["chunk"] for m in out] == [str(k + 1) for k in range(5, 506)]
    assert core.next_deadline_ns() == grid(506)
    assert len(core.heard) == 506 * FRAME
    assert list(core.tick_ns[-2:]) == [grid(505), grid(505)]


def test_empty_script_hangs_up_on_the_first_tick():
    core = make([])
    core.begin(T0)
    (stop,) = parse(core.advance(T0))
    assert stop["event"] == "stop" and stop["sequenceNumber"] == "2"
    assert core.finished and core.end_reason == "hangup"


# ------------------------------------------------------ outbound validation

BAD_MESSAGES = [
    (b"\x01\x02binary", 31950),
    (b'{"event":"clear","streamSid":"%s"}' % SS.encode(), 31950),  # right JSON, binary frame
    ("{not json", 31951),
    ("[1,2]", 31951),
    ('"media"', 31951),
    (json.dumps({"event": "start", "streamSid": SS}), 31951),
    (json.dumps({"event": "clear"}), 31951),
    (json.dumps({"event": "clear", "streamSid": "MZ" + "0" * 32}), 31951),
    (json.dumps({"event": "media", "streamSid": SS, "media": {}}), 31951),
    (json.dumps({"event": "media", "streamSid": SS, "media": {"payload": "%%%"}}), 31951),
    (json.dumps({"event": "mark", "streamSid": SS, "mark": {}}), 31951),
    (json.dumps({"event": "mark", "streamSid": SS, "mark": {"name": 5}}), 31951),
    (json.dumps({"event": "media", "streamSid": SS, "media": {"payload": "AAAA", "track": "outbound"}}), 31951),
]


def test_invalid_messages_are_counted_listed_and_the_call_goes_on():
    core = make([Pause(10_000)])
    core.begin(T0)
    assert len(parse(core.advance(grid(0)))) == 1
    for i, (data, _) in enumerate(BAD_MESSAGES):
        assert not core.receive(grid(0) + 1000 + i, data)
    assert core.warning_counts == {31950: 2, 31951: len(BAD_MESSAGES) - 2}
    assert [w["code"] for w in core.warnings] == [c for _, c in BAD_MESSAGES]
    assert [w["t_ns"] for w in core.warnings] == [grid(0) + 1000 + i for i in range(len(BAD_MESSAGES))]
    for w, (data, _) in zip(core.warnings, BAD_MESSAGES):
        assert w["reason"] == tw.parse_outbound(data, SS).reason
    assert core.warnings[0]["reason"] == "binary frame of 8 bytes; Twilio accepts JSON text frames only"
    tl = events(core, "warning")
    assert [(e["code"], e["reason"]) for e in tl] == [(w["code"], w["reason"]) for w in core.warnings]
    assert core.summary()["warnings"] == {"31950": 2, "31951": len(BAD_MESSAGES) - 2}
    # nothing was played, marked or cleared, and frames keep coming, one per tick
    assert core.counts["media_in"] == core.counts["mark_in"] == core.counts["clear_in"] == 0
    for k in range(1, 6):
        out = parse(core.advance(grid(k)))
        assert [m["event"] for m in out] == ["media"]
        assert out[0]["media"]["timestamp"] == str(20 * k)
    assert not core.finished
    assert bytes(core.heard) == SILENCE * 6


def test_warnings_kept_verbatim_are_capped_but_all_counted():
    core = make([Pause(10_000)], max_warnings_kept=3)
    core.begin(T0)
    for i in range(7):
        core.receive(T0 + i, "nope")
    assert core.warning_counts[31951] == 7
    assert len(core.warnings) == 3
    assert len(events(core, "warning")) == 7


def test_policy_salvages_media_with_extra_fields():
    payload = loud(160)
    msg = json.dumps({"event": "media", "streamSid": SS,
                      "media": {"payload": base64.b64encode(payload).decode(), "track": "outbound"}})
    strict = make([Pause(10_000)])
    lenient = make([Pause(10_000)], wire_policy=tw.WirePolicy(act_on_extra_fields=True))
    for core in (strict, lenient):
        core.begin(T0)
        core.advance(grid(0))
        core.receive(grid(0) + 1, msg)
        core.advance(grid(1))
        assert core.warning_counts == {31951: 1}
    assert bytes(strict.heard[FRAME:]) == SILENCE
    assert bytes(lenient.heard[FRAME:]) == payload
    assert (strict.counts["media_in"], lenient.counts["media_in"]) == (0, 1)


def test_policy_salvages_mark_with_extra_fields():
    core = make([Pause(10_000)], wire_policy=tw.WirePolicy(act_on_extra_fields=True))
    core.begin(T0)
    core.advance(grid(0))
    out = parse(core.receive(grid(0) + 1, json.dumps(
        {"event": "mark", "streamSid": SS, "mark": {"name": "m"}, "x": 1})))
    assert out == [{"event": "mark", "sequenceNumber": "3", "streamSid": SS, "mark": {"name": "m"}}]
    assert core.warning_counts == {31951: 1}


def test_receive_before_begin_and_after_stop_is_counted_and_ignored():
    core = make([Pause(40)])
    assert not core.receive(T0, mark_in("early"))
    assert core.counts["before_start"] == 1
    drive(core)
    assert not core.receive(grid(10), mark_in("late"))
    assert core.counts["after_stop"] == 1
    assert core.warning_counts == {}


# ------------------------------------------------------ playback via the core


def test_heard_is_silence_while_idle():
    core = make([Pause(200)])
    drive(core)
    assert len(core.heard) == 11 * FRAME  # ticks 0..10 (10 is the hang-up tick)
    assert bytes(core.heard) == SILENCE * 11
    assert list(core.played_bytes) == [0] * 11


@pytest.mark.parametrize("k", [1, 2, 7, 30])
def test_audio_received_between_ticks_lands_at_k_times_160_in_heard(k):
    core = make([Pause(10_000)])
    core.begin(T0)
    for i in range(k):
        core.advance(grid(i))
    payload = loud(500, k)
    assert not core.receive(grid(k - 1) + 5_000_000, media_in(payload))
    for i in range(k, k + 6):
        core.advance(grid(i))
    heard = bytes(core.heard)
    assert heard[: k * FRAME] == SILENCE * k
    assert heard[k * FRAME: k * FRAME + 500] == payload
    assert heard[k * FRAME + 500:] == b"\xff" * (len(heard) - k * FRAME - 500)
    assert list(core.played_bytes) == [0] * k + [160, 160, 160, 20, 0, 0]
    assert core.playback.partial_frames == 1
    assert core.summary()["partial_frames"] == 1
    (ev,) = events(core, "media_in")
    assert ev["bytes"] == 500 and ev["queued"] == 500 and ev["t_ns"] == grid(k - 1) + 5_000_000


def test_audio_plays_in_arrival_order_across_messages():
    core = make([Pause(10_000)])
    core.begin(T0)
    core.advance(grid(0))
    parts = [loud(100, 1), loud(250, 2), loud(30, 3), loud(300, 4)]
    for i, p in enumerate(parts):
        core.receive(grid(0) + i, media_in(p))
    for k in range(1, 8):
        core.advance(grid(k))
    stream = b"".join(parts)
    assert bytes(core.heard[FRAME: FRAME + len(stream)]) == stream
    assert list(core.played_bytes) == [0, 160, 160, 160, 160, 40, 0, 0]
    assert core.counts["media_in"] == 4
    assert core.summary()["audio_played_ms"] == len(stream) / 8


def test_mark_after_480_bytes_is_echoed_on_the_4th_tick():
    core = make([Pause(10_000)])
    core.begin(T0)
    core.advance(grid(0))
    assert not core.receive(grid(0) + 1, media_in(loud(480)))
    assert not core.receive(grid(0) + 2, mark_in("reply-1"))  # not now
    outs = {k: parse(core.advance(grid(k))) for k in range(1, 7)}
    for k in (1, 2, 3, 5, 6):
        assert [m["event"] for m in outs[k]] == ["media"], k
    mark, media = outs[4]
    assert mark == {"event": "mark", "sequenceNumber": "6", "streamSid": SS, "mark": {"name": "reply-1"}}
    assert media["event"] == "media" and media["sequenceNumber"] == "7" and media["media"]["timestamp"] == "80"
    (ev,) = events(core, "mark_echo")
    assert ev == {"event": "mark_echo", "t_ns": grid(4), "t_ms": 80.0, "name": "reply-1", "reason": "played"}
    assert core.marks_echoed == {"played": 1}
    (mi,) = events(core, "mark_in")
    assert mi["name"] == "reply-1" and mi["queued"] == 480


def test_mark_with_nothing_queued_is_echoed_by_receive():
    core = make([Pause(10_000)])
    core.begin(T0)
    core.advance(grid(0))
    core.advance(grid(1))  # seq: start 1, media 2, media 3
    out = parse(core.receive(grid(1) + 7, mark_in("idle-mark")))
    assert out == [{"event": "mark", "sequenceNumber": "4", "streamSid": SS, "mark": {"name": "idle-mark"}}]
    (ev,) = events(core, "mark_echo")
    assert (ev["reason"], ev["t_ns"]) == ("idle", grid(1) + 7)
    assert core.marks_echoed == {"idle": 1}
    nxt = parse(core.advance(grid(2)))
    assert [m["sequenceNumber"] for m in nxt] == ["5"]  # one counter, no gap after the echo


def test_marks_are_echoed_in_queue_order_through_the_core():
    core = make([Pause(10_000)])
    core.begin(T0)
    core.advance(grid(0))
    core.receive(grid(0) + 1, media_in(loud(100)))
    core.receive(grid(0) + 2, mark_in("a"))
    core.receive(grid(0) + 3, media_in(loud(200)))
    core.receive(grid(0) + 4, mark_in("b"))
    core.receive(grid(0) + 5, mark_in("c"))
    names_by_tick = {}
    for k in range(1, 6):
        names_by_tick[k] = [m["mark"]["name"] for m in parse(core.advance(grid(k))) if m["event"] == "mark"]
    # tick1 plays bytes 0..159 (a's audio ends in it), tick2 plays 160..299
    assert names_by_tick == {1: [], 2: ["a"], 3: ["b", "c"], 4: [], 5: []}


def test_clear_drops_audio_and_echoes_pending_marks_at_once():
    core = make([Pause(10_000)])
    core.begin(T0)
    core.advance(grid(0))
    first = loud(1600, 9)
    core.receive(grid(0) + 1, media_in(first))
    core.receive(grid(0) + 2, mark_in("m1"))
    core.receive(grid(0) + 3, media_in(loud(160)))
    core.receive(grid(0) + 4, mark_in("m2"))
    core.advance(grid(1))
    core.advance(grid(2))  # 320 bytes played
    out = parse(core.receive(grid(2) + 5, CLEAR))
    assert out == [
        {"event": "mark", "sequenceNumber": "5", "streamSid": SS, "mark": {"name": "m1"}},
        {"event": "mark", "sequenceNumber": "6", "streamSid": SS, "mark": {"name": "m2"}},
    ]
    (ce,) = events(core, "clear_in")
    assert ce["dropped_bytes"] == 1600 + 160 - 320 and ce["marks"] == ["m1", "m2"]
    echoes = events(core, "mark_echo")
    assert [(e["name"], e["reason"], e["t_ns"]) for e in echoes] == [
        ("m1", "cleared", grid(2) + 5), ("m2", "cleared", grid(2) + 5)]
    assert core.marks_echoed == {"cleared": 2}
    assert core.counts["clear_in"] == 1
    assert core.summary()["audio_cleared_ms"] == (1600 + 160 - 320) / 8
    # after the clear: silence, never the dropped audio, and no second echo
    for k in (3, 4):
        assert [m["event"] for m in parse(core.advance(grid(k)))] == ["media"]
    assert bytes(core.heard) == SILENCE + first[:320] + SILENCE * 2
    # audio after the clear plays normally, at the next tick
    fresh = loud(200, 77)
    core.receive(grid(4) + 1, media_in(fresh))
    core.receive(grid(4) + 2, mark_in("m3"))
    out5 = parse(core.advance(grid(5)))
    out6 = parse(core.advance(grid(6)))
    out7 = parse(core.advance(grid(7)))
    assert [m["event"] for m in out5 + out6] == ["media", "media"]
    assert [m["event"] for m in out7] == ["mark", "media"] and out7[0]["mark"]["name"] == "m3"
    assert bytes(core.heard[5 * FRAME: 5 * FRAME + 200]) == fresh
    assert core.marks_echoed == {"cleared": 2, "played": 1}


def test_clear_with_nothing_pending_sends_nothing():
    core = make([Pause(10_000)])
    core.begin(T0)
    core.advance(grid(0))
    assert not core.receive(grid(0) + 1, CLEAR)
    (ce,) = events(core, "clear_in")
    assert ce["dropped_bytes"] == 0 and ce["marks"] == []


def test_overflow_is_bounded_and_counted():
    core = make([Pause(10_000)], max_queued_bytes=320)
    core.begin(T0)
    core.advance(grid(0))
    payload = loud(480)
    core.receive(grid(0) + 1, media_in(payload))
    (ov,) = events(core, "overflow")
    assert ov["dropped_bytes"] == 160
    assert core.playback.queued_bytes == 320
    for k in range(1, 5):
        core.advance(grid(k))
    assert bytes(core.heard[FRAME:]) == payload[:320] + SILENCE * 2
    assert core.summary()["audio_dropped_ms"] == 20.0
    assert core.summary()["audio_received_ms"] == 60.0


def playing(n_bytes: int, ticks: int) -> CallerCore:
    """A caller pausing while ``n_bytes`` of loud reply arrive right after its first tick, advanced
    through tick ``ticks - 1``."""
    core = make([Pause(10_000)])
    core.begin(T0)
    core.advance(grid(0))
    core.receive(grid(0) + 1, media_in(loud(n_bytes)))
    for k in range(1, ticks):
        core.advance(grid(k))
    return core


def test_playback_and_audio_onset_events():
    core = playing(480, 25)
    assert [(e.kind, e.tick) for e in core.timeline.of(PlaybackStart, PlaybackStop, AudioOnset, AudioOffset)] == [
        ("playback_start", 1), ("audio_onset", 1), ("playback_stop", 4), ("audio_offset", 4)]
    (off,) = events(core, "audio_offset")
    assert off["t_ns"] == grid(3 + 15)  # reported once the 300 ms hangover has passed


def test_silent_audio_plays_but_is_not_an_onset():
    core = make([Pause(10_000)])
    core.begin(T0)
    core.advance(grid(0))
    core.receive(grid(0) + 1, media_in(b"\xff" * 320))
    for k in range(1, 5):
        core.advance(grid(k))
    assert events(core, "audio_onset") == []
    assert [e["tick"] for e in events(core, "playback_start")] == [1]


# ------------------------------------------------------------------ script


def test_wait_for_reply_ends_after_audio_then_quiet():
    core = make([WaitForReply(quiet_ms=100, timeout_ms=5000)])
    core.begin(T0)
    core.advance(grid(0))
    core.receive(grid(0) + 1, media_in(loud(480)))  # plays at ticks 1-3
    stop_at = None
    for k in range(1, 40):
        out = parse(core.advance(grid(k)))
        if any(m["event"] == "stop" for m in out):
            stop_at = k
            break
    # last loud tick 3; 100 ms (5 ticks) of quiet → next step (Hangup) at tick 8
    assert stop_at == 8
    assert events(core, "wait_timeout") == []
    assert len(core.media_sent_grid) == 8


def test_wait_for_reply_waits_while_audio_is_still_playing():
    core = make([WaitForReply(quiet_ms=100, timeout_ms=5000)])
    core.begin(T0)
    core.advance(grid(0))
    # loud frame, then 400 ms of line silence still queued: playback is busy
    core.receive(grid(0) + 1, media_in(loud(160) + b"\xff" * 3200))
    stop_at = next(k for k in range(1, 100)
                   if any(m["event"] == "stop" for m in parse(core.advance(grid(k)))))
    assert stop_at == 22  # ticks 1..21 play; idle from tick 22


def test_wait_for_reply_does_not_take_the_drivers_own_stall_for_the_end_of_the_reply():
    """A 1 s stall of the harness runs 50 overdue ticks back to back before the
    driver reads the socket: playback underruns, but the reply is not over."""
    core = make([WaitForReply(quiet_ms=100, timeout_ms=5000)])
    core.begin(T0)
    core.advance(grid(0))
    core.receive(grid(0) + 1, media_in(loud(480)))  # plays at ticks 1-3
    core.advance(grid(1))
    stalled_until = grid(51) + 5_000_000
    out = parse(core.advance(stalled_until))  # ticks 2..51 at once: 48 of them silent
    assert not any(m["event"] == "stop" for m in out)
    core.receive(stalled_until + 1, media_in(loud(320)))  # what arrived during the stall
    stop_at = next(k for k in range(52, 200)
                   if any(m["event"] == "stop" for m in parse(core.advance(grid(k)))))
    # plays at 52-53; 100 ms (5 ticks) of on-time quiet → stop at 58
    assert stop_at == 58
    assert core.summary()["audio_played_ms"] == 100
    (late,) = events(core, "driver_late")
    assert late["first_tick"] == 2 and late["ticks"] == 47  # ticks 49-51 ran < 60 ms late


def test_wait_for_reply_times_out_without_audio():
    core = make([WaitForReply(quiet_ms=100, timeout_ms=200)])
    sent = drive(core)
    (ev,) = events(core, "wait_timeout")
    assert ev["step"] == "wait_for_reply" and ev["heard"] is False and ev["t_ns"] == grid(10)
    assert [m["media"]["timestamp"] for _, m in sent if m["event"] == "media"] == [str(20 * k) for k in range(10)]
    assert sent[-1] == (grid(10), sent[-1][1]) and sent[-1][1]["event"] == "stop"


def test_wait_for_reply_times_out_on_silent_audio():
    core = make([WaitForReply(quiet_ms=100, timeout_ms=300)])
    core.begin(T0)
    core.advance(grid(0))
    core.receive(grid(0) + 1, media_in(b"\xff" * 1600))
    for k in range(1, 30):
        core.advance(grid(k))
    (ev,) = events(core, "wait_timeout")
    assert ev["heard"] is False and ev["t_ns"] == grid(15)


def test_wait_for_audio_releases_the_next_step_after_ms():
    core = make([WaitForAudio(after_ms=100), Say("caller_stop")])
    core.begin(T0)
    core.advance(grid(0))
    core.advance(grid(1))
    core.receive(grid(1) + 1, media_in(loud(1600)))  # first non-silent audio plays at tick 2
    frames = {}
    for k in range(2, 12):
        for m in parse(core.advance(grid(k))):
            if m["event"] == "media":
                frames[k] = base64.b64decode(m["media"]["payload"])
    (ev,) = events(core, "utterance_start")
    assert ev["t_ns"] == grid(7)
    utt = BANK.get("caller_stop").ulaw
    assert [linetag.read_tag(frames[k]) for k in range(2, 7)] == [(core.line_tag, k) for k in range(2, 7)]
    assert [frames[k] for k in range(7, 12)] == [utt[i * FRAME:(i + 1) * FRAME] for i in range(5)]


def test_wait_for_audio_zero_barges_in_on_the_first_loud_tick():
    core = make([WaitForAudio(after_ms=0), Say("caller_barge_in")])
    core.begin(T0)
    core.advance(grid(0))
    core.receive(grid(0) + 1, media_in(loud(800)))
    core.advance(grid(1))
    (ev,) = events(core, "utterance_start")
    assert ev["t_ns"] == grid(1)


def test_wait_for_audio_counts_audio_heard_on_the_tick_the_step_begins():
    core = make([Pause(40), WaitForAudio(after_ms=0, timeout_ms=1000), Say("caller_stop")])
    core.begin(T0)
    core.advance(grid(0))
    core.advance(grid(1))
    core.receive(grid(1) + 1, media_in(loud(160)))  # plays at tick 2, when the Pause ends
    for k in range(2, 6):
        core.advance(grid(k))
    assert [e["tick"] for e in events(core, "audio_onset")] == [2]
    assert [e["t_ns"] for e in events(core, "utterance_start")] == [grid(2)]


def test_wait_for_audio_times_out():
    core = make([WaitForAudio(after_ms=0, timeout_ms=100)])
    drive(core)
    (ev,) = events(core, "wait_timeout")
    assert (ev["step"], ev["heard"], ev["t_ns"]) == ("wait_for_audio", False, grid(5))


def test_max_duration_hangs_up():
    core = make([Pause(60_000)], max_duration_ms=100)
    sent = drive(core)
    assert [m["media"]["timestamp"] for _, m in sent if m["event"] == "media"] == ["0", "20", "40", "60", "80"]
    assert sent[-1][1]["event"] == "stop" and sent[-1][0] == grid(5)
    (ev,) = events(core, "max_duration")
    assert ev["ms"] == 100 and ev["t_ns"] == grid(5)
    assert core.end_reason == "max_duration"
    assert events(core, "stop")[0]["why"] == "max_duration"


def test_dtmf_gap():
    core = make([Dtmf("*0#", gap_ms=60)])
    sent = drive(core)
    assert [(t, m["dtmf"]["digit"]) for t, m in sent if m["event"] == "dtmf"] == [
        (grid(0), "*"), (grid(3), "0"), (grid(6), "#")]


def test_unknown_fixture_raises_at_construction():
    with pytest.raises(KeyError, match="no_such_fixture"):
        make([Pause(100), Say("no_such_fixture")])


@pytest.mark.parametrize("digits", ["12x", "E", " ", "1 2", "a"])
def test_bad_dtmf_digit_raises_at_construction(digits):
    with pytest.raises(ValueError, match="DTMF digits"):
        make([Dtmf(digits)])


def test_every_dtmf_digit_is_accepted():
    assert DTMF_DIGITS == frozenset("0123456789*#ABCD")
    make([Dtmf("0123456789*#ABCD")])


def test_conversation_script():
    assert conversation(["a", "b"], first_pause_ms=500, gap_ms=300, quiet_ms=800, timeout_ms=15000) == [
        Pause(500), Say("a"), WaitForReply(800, 15000), Pause(300), Say("b"), WaitForReply(800, 15000), Hangup()]


def test_steps_after_hangup_are_not_run():
    core = make([Pause(40), Hangup(), Say("caller_stop")])
    sent = drive(core)
    assert [m["event"] for _, m in sent].count("media") == 2
    assert events(core, "utterance_start") == []


# --------------------------------------------------------- end of the call


def test_hang_up_now():
    core = make([Pause(10_000)])
    core.begin(T0)
    core.advance(grid(0))
    (stop,) = parse(core.hang_up(grid(0) + 5))
    assert stop["event"] == "stop" and stop["sequenceNumber"] == "3"
    assert core.finished and core.end_reason == "aborted"
    assert core.next_deadline_ns() is None
    assert not core.hang_up(grid(1)) and not core.advance(grid(2))


def test_peer_closed_ends_the_call():
    core = make([Pause(10_000)])
    core.begin(T0)
    core.advance(grid(0))
    core.peer_closed(grid(0) + 1, 1000, "bye")
    assert core.finished and core.end_reason == "closed_by_app"
    assert core.next_deadline_ns() is None and not core.advance(grid(5))
    (ev,) = events(core, "closed_by_app")
    assert (ev["code"], ev["reason"], ev["after_stop"]) == (1000, "bye", False)


def test_audio_still_queued_when_the_app_closes_is_never_heard():
    """The app closed the stream with 1 s of a reply queued: what had not played is counted unplayed."""
    core = playing(8000, 11)
    core.peer_closed(grid(10) + 1, 1000, "bye")
    played = core.summary()["audio_played_ms"]
    assert 180 <= played <= 200
    assert core.summary()["audio_unplayed_at_end_ms"] == 1000 - played


def test_nothing_unplayed_when_the_reply_had_finished():
    core = playing(800, 11)
    core.peer_closed(grid(10) + 1)
    assert core.summary()["audio_unplayed_at_end_ms"] == 0


def test_receive_after_peer_closed_sends_nothing():
    core = make([Pause(10_000)])
    core.begin(T0)
    core.advance(grid(0))
    core.peer_closed(grid(0) + 1)
    assert not core.receive(grid(0) + 2, mark_in("late"))


def test_peer_closed_after_stop_is_a_normal_hangup():
    core = make([Pause(40)])
    drive(core)
    core.peer_closed(grid(5))  # already finished: ignored
    assert core.end_reason == "hangup"
    assert events(core, "closed_by_app") == []


# ----------------------------------------------------- property: any input

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_OTHER_SID = "MZ" + "0" * 32

# payload strategies, each labelled with whether Twilio would accept it
_good_payload = st.binary(max_size=400).map(lambda b: (base64.b64encode(b).decode(), True))
_payloads = st.one_of(
    _good_payload,
    # a non-base64 character somewhere in otherwise valid base64
    st.tuples(st.binary(min_size=3, max_size=60), st.sampled_from("!*-_. \n\t\"é"), st.integers(0, 80)).map(
        lambda t: ((lambda s: s[: t[2] % (len(s) + 1)] + t[1] + s[t[2] % (len(s) + 1):])(base64.b64encode(t[0]).decode()), False)),
    # 1 more than a multiple of 4 data characters: never base64
    st.text(alphabet=_B64, max_size=20).map(lambda s: (s * 4 + "A", False)),
    st.one_of(st.integers(), st.none(), st.lists(st.integers(), max_size=2)).map(lambda v: (v, False)),
)
_extra = st.dictionaries(st.sampled_from(["track", "chunk", "timestamp", "sequenceNumber", "x", "name", "payload"]),
                         st.one_of(st.text(max_size=5), st.integers()), max_size=2)


_sometimes = st.sampled_from([False, False, False, True])


@st.composite
def _structured(draw):
    """A near-valid JSON object and whether Twilio would accept it (computed here, independently).

    Half the time every choice is the valid one (a well-formed media/mark/clear),
    otherwise each part may independently be broken, so both valid and
    just-invalid messages are common.
    """
    clean = draw(st.booleans())

    def pick(good, strategy):
        return good if clean else draw(strategy)

    event = draw(st.sampled_from(["media", "mark", "clear"])) if clean else draw(
        st.sampled_from(["media", "mark", "clear", "start", "stop", "", None]))
    msg: dict = {}
    valid = event in ("media", "mark", "clear")
    if event is not None:
        msg["event"] = event
    sid_kind = pick("right", st.sampled_from(["right", "right", "wrong", "missing", "int"]))
    if sid_kind == "right":
        msg["streamSid"] = SS
    elif sid_kind == "wrong":
        msg["streamSid"] = _OTHER_SID
    elif sid_kind == "int":
        msg["streamSid"] = 1
    valid = valid and sid_kind == "right"
    kind = None
    if event == "media" or pick(False, _sometimes):
        shape = pick("ok", st.sampled_from(["ok", "ok", "missing", "not-object"]))
        if shape == "ok":
            payload, ok = draw(_good_payload if clean or draw(st.booleans()) else _payloads)
            body = {"payload": payload}
            nested = draw(_extra) if pick(False, _sometimes) else {}
            body.update({k: v for k, v in nested.items() if k != "payload"})
            msg["media"] = body
            ok = ok and set(body) == {"payload"}
        elif shape == "not-object":
            msg["media"] = draw(st.one_of(st.text(max_size=5), st.integers()))
            ok = False
        else:
            ok = False
        if event == "media":
            valid = valid and ok
            kind = "media"
        elif "media" in msg:
            valid = False  # media field on another event: an extra field
    if event == "mark" or pick(False, _sometimes):
        shape = pick("ok", st.sampled_from(["ok", "empty", "int", "missing", "not-object", "extra"]))
        if shape in ("ok", "extra"):
            msg["mark"] = {"name": draw(st.text(min_size=1, max_size=12))}
            if shape == "extra":
                msg["mark"]["at"] = 1
        elif shape == "empty":
            msg["mark"] = {"name": ""}
        elif shape == "int":
            msg["mark"] = {"name": draw(st.integers())}
        elif shape == "not-object":
            msg["mark"] = draw(st.one_of(st.text(max_size=5), st.none()))
        if event == "mark":
            valid = valid and shape == "ok"
            kind = "mark"
        elif "mark" in msg:
            valid = False
    if event == "clear":
        kind = "clear"
    if pick(False, _sometimes):
        extra_key = draw(st.sampled_from(["sequenceNumber", "track", "protocol", "clear"]))
        msg[extra_key] = draw(st.one_of(st.text(max_size=4), st.integers(), st.none()))
        valid = False
    if draw(st.booleans()):  # key order must not matter
        msg = dict(reversed(list(msg.items())))
    return json.dumps(msg, ensure_ascii=draw(st.booleans())), (kind if valid else None)


def _expected_text(text: str):
    """Kind of a random text message, or None when Twilio would reject it."""
    try:
        msg = json.loads(text)
    except ValueError:
        return None
    if not isinstance(msg, dict) or msg.get("streamSid") != SS:
        return None
    return "unexpected"  # random text never names our streamSid; flag it if it ever does


_messages = st.one_of(
    st.binary(max_size=50).map(lambda b: (b, "binary")),
    st.text(max_size=60).map(lambda t: (t, _expected_text(t))),
    _structured(),
    _structured(),
)
_ops = st.lists(st.one_of(
    st.tuples(st.just("advance"), st.integers(min_value=0, max_value=3)),
    st.tuples(st.just("msg"), _messages),
), max_size=40)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(_ops)
def test_any_received_messages_are_survived_and_counted(ops):
    core = make([Pause(60_000)])
    core.begin(T0)
    assert parse(core.advance(grid(0)))[0]["media"]["timestamp"] == "0"
    tick = 1
    n_binary = n_invalid = 0
    n_valid = {"media": 0, "mark": 0, "clear": 0}
    echoed = 0
    seqs: list[int] = []
    for op, arg in ops:
        if op == "advance":
            for _ in range(arg):
                out = parse(core.advance(grid(tick)))
                media = [m for m in out if m["event"] == "media"]
                assert len(media) == 1 and media[0]["media"]["timestamp"] == str(20 * tick)
                assert all(m["event"] in ("media", "mark") for m in out)
                echoed += len(out) - 1
                seqs += [int(m["sequenceNumber"]) for m in out]
                tick += 1
            continue
        data, kind = arg
        assert kind != "unexpected", data
        out = parse(core.receive(grid(tick - 1) + 1 + len(seqs), data))
        assert all(m["event"] == "mark" and m["streamSid"] == SS for m in out)
        echoed += len(out)
        seqs += [int(m["sequenceNumber"]) for m in out]
        if kind == "binary":
            n_binary += 1
        elif kind is None:
            n_invalid += 1
        else:
            n_valid[kind] += 1
    # every invalid message counted, with the right code; every valid one acted on
    assert core.warning_counts[31950] == n_binary
    assert core.warning_counts[31951] == n_invalid
    assert sum(core.warning_counts.values()) == n_binary + n_invalid
    assert (core.counts["media_in"], core.counts["mark_in"], core.counts["clear_in"]) == (
        n_valid["media"], n_valid["mark"], n_valid["clear"])
    assert len(events(core, "warning")) == n_binary + n_invalid
    # one counter, no gaps: start is 1, the first frame 2
    assert seqs == list(range(3, 3 + len(seqs)))
    assert echoed == sum(core.marks_echoed.values()) <= n_valid["mark"]
    # still alive and still one frame per tick; heard holds one frame per tick
    assert not core.finished
    assert len(core.heard) == tick * FRAME
    out = parse(core.advance(grid(tick)))
    assert [m["media"]["timestamp"] for m in out if m["event"] == "media"] == [str(20 * tick)]
