"""Sans-IO tests of ``callsim.bridge.call.CallCore``: marks and barge-in: what the caller heard when they interrupt (``audio_end_ms`` against Twilio's playback model), at chosen moments and at random.

Driven on a synthetic clock with the hand-written messages and the Twilio playback model of
:mod:`tests.bridge.callcore_kit`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from callsim.bridge.call import (
    SaveTranscript,
    ToTwilio,
)
from callsim.bridge.codec import Transcoder
from callsim.bridge.realtime import SessionParams
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.bridge.callcore_kit import (
    FRAME,
    MS,
    Sim,
    audio_delta,
    audio_done,
    b64,
    check_barge_in,
    oa_out,
    of_type,
    response_created,
    response_done,
    run_until,
    schedule,
    speech_started,
    started_core,
    tw_out,
    ulaw,
)

# ============================================================== marks and barge-in


# barge-in moments (ms): before the first frame ends, inside frames, at frame and mark
# boundaries, while OpenAI is still generating, long after, after everything played.
MOMENTS_MS = [102, 105, 117, 121, 123, 130, 150, 199, 201, 203, 205, 222, 250, 300, 333, 399, 401, 404,
              555, 700, 777, 900, 1000, 1080, 1099, 1100, 1101, 1102, 1103, 1104, 1105, 1150, 1500]


@pytest.mark.parametrize("echo_ms,to_twilio_ms", [(0, 0), (2, 1), (5, 3), (12, 6)])
def test_barge_in_truncates_at_what_the_caller_heard(echo_ms: float, to_twilio_ms: float) -> None:
    for T_ms in MOMENTS_MS:
        T = T_ms * MS
        sim = Sim(to_twilio_ms=to_twilio_ms, echo_ms=echo_ms)
        rest = run_until(sim, schedule(), T)
        generating = any("response.done" in ev[1] for ev in rest)
        all_echoed = not sim.pb.pending and not generating
        info = check_barge_in(sim, T, "item_A", expect_truncate=not all_echoed)
        core = sim.core
        if all_echoed:
            assert info["acts"] == [], (T_ms, info["kinds"])
            continue
        # interrupt_response is on: the server cancels by itself, so no response.cancel
        assert "oa:response.cancel" not in info["kinds"]
        acked = core.items["item_A"].acked
        ignored0 = core.stats["marks_ignored"]
        # what OpenAI still sends for the cancelled response is dropped
        n_late = sum(1 for ev in rest if "output_audio.delta" in ev[1])
        for ev in rest:
            assert [a for a in sim.openai(ev[0], ev[1], ev[2]) if isinstance(a, ToTwilio)] == []
        assert core.stats["deltas_dropped"] == n_late
        # the marks Twilio echoes because of the clear are ignored and do not move playback
        sim.advance(T + 200 * MS)
        assert sim.mark_actions == []
        assert core.stats["marks_ignored"] == ignored0 + info["pending"], T_ms
        assert core.items["item_A"].acked == acked
        assert not sim.pb.pending


def test_barge_in_exact_frames_and_transcript_cut() -> None:
    """Deterministic numbers: 10 × 100 ms deltas; caller speaks 290 ms into playback."""
    words = "one two three four five six seven eight nine ten"
    sim = Sim(to_twilio_ms=1, echo_ms=2)
    evs = schedule(transcript=words)
    first_send = evs[1][0]
    T = first_send + 1 * MS + 290 * MS  # Twilio started at first_send + 1 ms: 15 frames have begun
    rest = run_until(sim, evs, T)
    assert rest == []
    assert SaveTranscript("item_A", "assistant", words) in sim.actions
    info = check_barge_in(sim, T, "item_A")
    assert info["heard_ms"] == 300
    assert info["truncate"]["audio_end_ms"] == 300
    assert info["kinds"] == ["tw:clear", "oa:conversation.item.truncate", "SaveTranscript", "Notice"]
    assert info["acts"][2] == SaveTranscript("item_A", "assistant", "one two three", truncated=True,
                                             audio_end_ms=300)
    # the live feed hears of it: what was cut, where (talk-over is None: the event carried no audio_start_ms)
    notice = info["acts"][3]
    assert notice.kind == "barge_in"
    assert notice.data["truncates"] == [{"item_id": "item_A", "audio_end_ms": 300,
                                         "received_ms": sim.core.truncates[-1]["received_ms"]}]
    assert sim.core.truncates[-1]["audio_end_ms"] == 300


def test_barge_in_while_generating_with_interrupt_response_off_sends_cancel() -> None:
    sim = Sim(SessionParams(interrupt_response=False))
    evs = schedule()
    T = 150 * MS
    rest = run_until(sim, evs, T)
    info = check_barge_in(sim, T, "item_A")
    assert info["kinds"] == ["tw:clear", "oa:response.cancel", "oa:conversation.item.truncate", "Notice"]
    assert oa_out(info["acts"])[0] == {"type": "response.cancel"}
    n_late = 0
    for ev in rest:
        n_late += "output_audio.delta" in ev[1]
        assert not [a for a in sim.openai(ev[0], ev[1], ev[2]) if isinstance(a, ToTwilio)]
    assert sim.core.stats["deltas_dropped"] == n_late > 0


def test_no_cancel_when_no_response_is_active_even_with_interrupt_response_off() -> None:
    sim = Sim(SessionParams(interrupt_response=False))
    evs = schedule()
    T = 600 * MS  # generation finished (response.done seen), audio still playing
    assert run_until(sim, evs, T) == []
    info = check_barge_in(sim, T, "item_A")
    assert "oa:response.cancel" not in info["kinds"]
    assert info["kinds"] == ["tw:clear", "oa:conversation.item.truncate", "Notice"]


def test_speech_with_nothing_playing_does_nothing() -> None:
    sim = Sim(SessionParams(interrupt_response=False))
    assert sim.openai(10 * MS, speech_started()) == []  # no audio yet
    run_until(sim, schedule(), 3000 * MS)  # all played, all marks back
    assert sim.openai(3000 * MS, speech_started()) == []
    assert sim.core.stats["barge_ins"] == 0 and sim.core.stats["truncates"] == 0


def test_active_response_without_audio_is_cancelled_only_when_server_will_not() -> None:
    for interrupt, expect in ((False, [{"type": "response.cancel"}]), (True, [])):
        core, _ = started_core(SessionParams(interrupt_response=interrupt))
        core.openai_message(10 * MS, response_created("resp_1"))
        acts = core.openai_message(20 * MS, speech_started())
        assert oa_out(acts) == expect and tw_out(acts) == []
        # the cancelled response's audio is not played
        assert core.openai_message(30 * MS, audio_delta("item_A", "resp_1", b64(ulaw(160)))) == []
        assert core.stats["deltas_dropped"] == 1


def test_new_reply_after_barge_in_plays_in_the_new_generation() -> None:
    sim = Sim()
    T = 400 * MS
    run_until(sim, schedule(), T)
    check_barge_in(sim, T, "item_A")
    sim.advance(T + 50 * MS)
    evs = schedule("item_B", "resp_2", t0=T + 600 * MS, n_deltas=3)
    rest = run_until(sim, evs, T + 700 * MS)
    marks = [m["mark"]["name"] for a in sim.actions if isinstance(a, ToTwilio)
             for m in [json.loads(a.text)] if m["event"] == "mark"]
    assert marks[-3:] == ["1:2:800", "1:2:1600", "1:2:2400"]
    assert rest == []
    T2 = T + 600 * MS + 1 * MS + 1 * MS + 130 * MS
    info = check_barge_in(sim, T2, "item_B")
    assert info["truncate"]["audio_end_ms"] == 140  # 7 frames begun
    assert sim.core.stats["barge_ins"] == 2


def test_second_barge_in_on_same_item_does_nothing() -> None:
    sim = Sim()
    run_until(sim, schedule(), 400 * MS)
    check_barge_in(sim, 400 * MS, "item_A")
    assert sim.openai(420 * MS, speech_started()) == []
    assert sim.core.stats["truncates"] == 1


def test_truncate_is_clamped_to_audio_received() -> None:
    """Transcode mode: 959 pcm16 samples received (1918 B = 39.96 ms → 39 ms) resample to 320
    μ-law bytes (40 ms). When both frames have begun, the heard estimate (40 ms) exceeds the
    audio received for the item and must be clamped. (In passthrough bytes sent to Twilio are
    the bytes received, so heard ≤ received always.)"""
    sim = Sim(SessionParams(audio_mode="transcode"), transcoder=Transcoder(), to_twilio_ms=0, echo_ms=2)
    pcm = (np.sin(np.arange(959) * 2 * np.pi / 24) * 8000).astype("<i2").tobytes()
    sim.openai(100 * MS, response_created("resp_1"))
    sim.openai(101 * MS, audio_delta("item_A", "resp_1", b64(pcm)), "item_A")
    sim.openai(102 * MS, audio_done("item_A", "resp_1"), "item_A")
    assert sim.pb.queued("item_A") == 320
    T = 125 * MS  # second frame (started at 121 ms) has begun; its mark is not back
    sim.advance(T)
    assert sim.pb.heard("item_A", T) == 320
    acts = sim.openai(T, speech_started())
    (tr,) = of_type(oa_out(acts), "conversation.item.truncate")
    assert tr["audio_end_ms"] == 1918 // 48 == 39
    assert sim.core.truncates[-1]["received_ms"] == 39


def test_marks_of_old_generation_and_garbage_marks_are_ignored() -> None:
    core, tw = started_core()
    core.openai_message(10 * MS, audio_delta("item_A", "resp_1", b64(ulaw(1600))))
    core.openai_message(11 * MS, speech_started())
    item = core.items["item_A"]
    acked = item.acked
    for name in ("0:1:1600", "not-a-mark", "1:99:10", "x:y:z"):
        assert core.twilio_message(50 * MS, tw.mark(name)) == []
        assert item.acked == acked
    assert core.stats["marks_ignored"] == 4
    assert core.stats["twilio_bad"] == 0


def test_echoed_marks_move_the_estimate() -> None:
    """played(): after a mark echo, the next frame starts at once and one more every 20 ms."""
    core, tw = started_core()
    core.openai_message(0, audio_delta("item_A", "resp_1", b64(ulaw(800))))
    core.openai_message(0, audio_delta("item_A", "resp_1", b64(ulaw(800, 1))))
    item = core.items["item_A"]
    assert item.played(0) == 160 and item.played(10 * MS) == 160 and item.played(20 * MS) == 320
    # capped just under a frame past the first mark not echoed (its echo may be in transit)
    assert item.played(500 * MS) == 800 + FRAME - 1
    core.twilio_message(100 * MS, tw.mark("0:1:800"))
    assert item.acked == 800
    assert item.played(100 * MS) == 960
    assert item.played(140 * MS) == 1280
    assert item.played(900 * MS) == 1600  # never past what was sent
    core.twilio_message(200 * MS, tw.mark("0:1:1600"))
    assert not item.playing and item.played(300 * MS) == 1600


# ------------------------------------------------------------------- queued items (known bug)


def test_barge_in_while_an_earlier_item_still_plays() -> None:
    sim = Sim()
    a = schedule("item_A", "resp_1", n_deltas=10)  # 1 s of audio, sent by 251 ms
    b = schedule("item_B", "resp_2", t0=400 * MS, n_deltas=5)  # queued behind A
    rest = run_until(sim, sorted(a + b), 600 * MS)
    assert rest == []
    assert sim.pb.heard("item_B", 600 * MS) == 0
    acts = sim.openai(600 * MS, speech_started())
    truncs = {t["item_id"]: t["audio_end_ms"] for t in of_type(oa_out(acts), "conversation.item.truncate")}
    assert abs(truncs.get("item_A", -1000) - sim.pb.heard("item_A", 600 * MS) / 8) <= 20, truncs
    assert truncs.get("item_B", 0) == 0, truncs


def test_barge_in_just_after_a_queued_item_starts() -> None:
    sim = Sim()
    a = schedule("item_A", "resp_1", n_deltas=10)  # plays 101..1101 ms
    b = schedule("item_B", "resp_2", t0=400 * MS, n_deltas=1, delta_bytes=8000)  # 1 s in one delta
    T = 1180 * MS
    rest = run_until(sim, sorted(a + b), T)
    assert rest == []
    check_barge_in(sim, T, "item_B")  # heard ≈ 80 ms, estimated ≈ 780 ms


# ============================================================== hypothesis: barge-in at random


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frames_per_delta=st.lists(st.integers(1, 12), min_size=1, max_size=12),
    spacing_ms=st.integers(1, 60),
    to_twilio_ms=st.integers(0, 8),
    echo_ms=st.integers(0, 15),
    T_ms=st.integers(101, 2600),  # the response is created at 100 ms
    interrupt=st.booleans(),
)
def test_barge_in_at_random_moments(frames_per_delta: list[int], spacing_ms: int, to_twilio_ms: int,
                                    echo_ms: int, T_ms: int, interrupt: bool) -> None:
    sim = Sim(SessionParams(interrupt_response=interrupt), to_twilio_ms=to_twilio_ms, echo_ms=echo_ms)
    evs: list[tuple[int, str, str | None]] = [(100 * MS, response_created("resp_1"), None)]
    t = 101 * MS
    for i, f in enumerate(frames_per_delta):
        evs.append((t, audio_delta("item_A", "resp_1", b64(ulaw(f * FRAME, i))), "item_A"))
        t += spacing_ms * MS
    evs.append((t, response_done("resp_1"), None))
    T = T_ms * MS
    rest = run_until(sim, evs, T)
    generating = bool(rest)
    all_echoed = not sim.pb.pending and sim.pb.queued("item_A") == sim.pb.heard("item_A", T)
    info = check_barge_in(sim, T, "item_A", expect_truncate=not all_echoed)
    cancels = of_type(oa_out(info["acts"]), "response.cancel")
    assert len(cancels) == (1 if generating and not interrupt else 0)
    for ev in rest:
        assert not [a for a in sim.openai(ev[0], ev[1], ev[2]) if isinstance(a, ToTwilio)]
    sim.advance(T + 3000 * MS)
    assert sim.mark_actions == []


def _talk_over_after(frames_before_switch: int | None) -> int:
    """The barge-in's talk_over_ms: 50 caller frames (1 s) appended to the current session, then a
    reply playing and the caller's speech at 500 ms on that session's clock (300 ms of padding)."""
    from callsim.bridge.call import Notice

    from tests.bridge.callcore_kit import oa, response_created, speech_started, started_core, ulaw

    core, tw = started_core()
    t = 10 * MS
    if frames_before_switch is not None:
        for _ in range(frames_before_switch):
            core.twilio_message(t, tw.media(b64(ulaw(160))))
            t += 20 * MS
        core.session_switched(t, ready=False)
        core.openai_message(t, oa("session.updated", session={}))
    for _ in range(50):
        core.twilio_message(t, tw.media(b64(ulaw(160))))
        t += 20 * MS
    core.openai_message(t, response_created("resp_1"))
    core.openai_message(t + 1 * MS, audio_delta("item_A", "resp_1", b64(ulaw(800))))
    out = core.openai_message(t + 50 * MS, speech_started(500))
    (notice,) = [a for a in out if isinstance(a, Notice) and a.kind == "barge_in"]
    return notice.data["talk_over_ms"]


def test_talk_over_is_counted_on_the_current_sessions_clock_after_a_renewal() -> None:
    """audio_start_ms is on the current session's input clock, which starts at the switch: the
    old session's frames are no talk-over."""
    assert _talk_over_after(None) == 1000 - 500 - 300
    assert _talk_over_after(15_000) == 1000 - 500 - 300  # five minutes of frames before the switch
